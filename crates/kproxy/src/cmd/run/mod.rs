//! `kproxy run`: the node daemon.
//!
//! Watches Services, EndpointSlices and this Node ([`kproxy_watcher`]), programs nothing until
//! every cache has completed its initial list, then keeps the kernel equal to the compiled
//! snapshot: one sync per burst of changes, at most one per `--min-sync-period`, a full resync
//! (the kernel read back) at least hourly, a retry `--sync-period` after a failure. Syncs run
//! on a blocking thread; SIGTERM and SIGINT stop the watches, let a sync in flight finish and
//! exit 0, leaving the rules in the kernel.

mod backend;
mod config_file;
mod ffi;
mod health;
mod http;
mod metrics;
mod programmer;
mod service_health;

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kproxy_compiler::Options;
use kproxy_watcher::{ServiceKey, Update, WatcherHandle};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use self::health::Health;
use self::metrics::Metrics;
use self::programmer::{Programmer, Synced, Work};
use self::service_health::ServiceHealthServers;
use super::config;
use crate::cli::RunArgs;
use crate::hostname;

/// The longest time between two full resyncs (kernel read back, drift repaired).
const FULL_RESYNC_INTERVAL: Duration = Duration::from_secs(3600);

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut args = args.clone();
    if let Some(path) = args.config.clone() {
        let file = match config_file::read(&path) {
            Ok(file) => file,
            Err(error) => {
                eprintln!("error: {error:#}");
                return Ok(ExitCode::FAILURE);
            }
        };
        for warning in &file.warnings {
            tracing::warn!(config = %path.display(), "{warning}");
        }
        let given = args.given.clone();
        file.apply(&mut args, &given);
        tracing::info!(config = %path.display(), "read the KubeProxyConfiguration (flags on the command line win)");
    }
    let args = &args;
    let options = match config::options(&args.proxy) {
        Ok(options) => options,
        Err(problems) => {
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let node_name = hostname::for_flags(&args.proxy)?;
    // Before any thread allocates: every thread then shares the one heap.
    ffi::use_one_heap_arena();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    let result = runtime.block_on(daemon(args, options, node_name));
    // The sync in flight has finished; watch tasks and health connections are just dropped.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result.map(|()| ExitCode::SUCCESS)
}

async fn daemon(args: &RunArgs, options: Options, node_name: String) -> anyhow::Result<()> {
    let mut stop = Stop::new()?;
    let health = Arc::new(Health::new(2 * args.sync_period));
    if let Some(addr) = args.healthz_bind_address.0 {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (--healthz-bind-address)"))?;
        tokio::spawn(http::serve(
            listener,
            "healthz",
            health::handler(Arc::clone(&health)),
        ));
        tracing::info!(%addr, "serving /healthz and /livez");
    }
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = args.metrics_bind_address.0 {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (--metrics-bind-address)"))?;
        tokio::spawn(http::serve(
            listener,
            "metrics",
            metrics::handler(Arc::clone(&metrics)),
        ));
        tracing::info!(%addr, "serving /metrics");
    }
    // Adopt what an earlier kproxy left, as `kproxy apply` does: its rules stay in force and
    // the first sync sends only the difference. The other mode's rules go.
    let mode = args.proxy.proxy_mode;
    let kube_proxy = args.cleanup_kube_proxy;
    let backend = tokio::task::spawn_blocking(move || backend::Backend::start(mode, kube_proxy))
        .await
        .context("starting the syncer")??;
    let config = client_config(args).await?;
    tracing::info!(server = %config.cluster_url, node = %node_name, "watching the API server");
    let client = kube::Client::try_from(config).context("creating the API client")?;
    let (watcher, updates) = WatcherHandle::start(client, node_name.as_str())
        .context("starting the watches (is --hostname-override a valid node name?)")?;
    let sync_loop = SyncLoop {
        args,
        service_health: ServiceHealthServers::new(Arc::clone(&health)),
        health,
        metrics,
        programmer: Some(Programmer::new(backend, &node_name, options)),
        in_flight: None,
        changed: BTreeSet::new(),
        service_objects: 0,
        endpoint_slices: 0,
        node_changed: false,
        trigger_times: Vec::new(),
    };
    sync_loop.run(watcher, updates, &mut stop).await
}

/// The API client's configuration: `--kubeconfig` (with `--master` overriding its server),
/// `--master` alone (with the in-cluster service account's credentials when there is one), or
/// inferred (`$KUBECONFIG`, `~/.kube/config`, else the in-cluster service account).
async fn client_config(args: &RunArgs) -> anyhow::Result<kube::Config> {
    let bad_master = |text: &str| format!("--master: {text:?} is not a URL");
    let mut config = match (&args.kubeconfig, &args.master) {
        (Some(path), _) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("loading --kubeconfig {}", path.display()))?
        }
        (None, Some(text)) => {
            let url = text.parse().with_context(|| bad_master(text))?;
            match kube::Config::incluster() {
                // In a pod: the service account's token and CA, but talking to --master
                // directly, e.g. to reach the API server before any proxy has programmed the
                // `kubernetes` Service's ClusterIP.
                Ok(mut config) => {
                    config.cluster_url = url;
                    config
                }
                Err(_) => kube::Config::new(url),
            }
        }
        (None, None) => kube::Config::infer()
            .await
            .context("finding the API server (give --kubeconfig or --master)")?,
    };
    if let (Some(_), Some(text)) = (&args.kubeconfig, &args.master) {
        config.cluster_url = text.parse().with_context(|| bad_master(text))?;
    }
    Ok(config)
}

/// SIGTERM or SIGINT.
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> anyhow::Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
        })
    }

    /// Waits for either signal; returns its name.
    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// What a sync job hands back: the programmer (moved to the blocking thread and back) and how
/// it went.
type JobResult = (Programmer, anyhow::Result<Synced>);

struct SyncLoop<'a> {
    args: &'a RunArgs,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    service_health: ServiceHealthServers,
    /// `None` while a sync job owns it.
    programmer: Option<Programmer>,
    in_flight: Option<JoinHandle<JobResult>>,
    /// Services changed since the previous sync started.
    changed: BTreeSet<ServiceKey>,
    /// Of those, how many had their Service object changed, and how many a slice (coalesced:
    /// counted once per sync, as kube-proxy does).
    service_objects: u64,
    endpoint_slices: u64,
    /// The node's topology or addresses changed: the next sync is full.
    node_changed: bool,
    /// The EndpointSlice trigger times that arrived since the previous sync started: the
    /// next sync reports how long after each one it programmed the change.
    trigger_times: Vec<String>,
}

impl SyncLoop<'_> {
    async fn run(
        mut self,
        watcher: WatcherHandle,
        mut updates: kproxy_watcher::Updates,
        stop: &mut Stop,
    ) -> anyhow::Result<()> {
        let mut synced = false;
        // Changes (or the initial sync, or a failed sync) not yet programmed.
        let mut dirty = false;
        let mut last_start: Option<Instant> = None;
        // The adopt just read the kernel: that counts as the first full read.
        let mut last_full = Instant::now();
        let mut first = true;
        let mut retry_at: Option<Instant> = None;
        loop {
            let next_sync = if synced && self.in_flight.is_none() {
                let earliest = [last_start.map(|t| t + self.args.min_sync_period), retry_at]
                    .into_iter()
                    .flatten()
                    .max();
                let due = if dirty {
                    earliest.unwrap_or_else(Instant::now)
                } else {
                    earliest.map_or(last_full + FULL_RESYNC_INTERVAL, |e| {
                        e.max(last_full + FULL_RESYNC_INTERVAL)
                    })
                };
                Some(due)
            } else {
                None
            };
            tokio::select! {
                biased;
                signal = stop.wait() => {
                    tracing::info!(signal, "stopping: the rules stay in the kernel");
                    break;
                }
                result = maybe(&mut self.in_flight) => {
                    self.in_flight = None;
                    let (programmer, outcome) = result.context("the sync thread panicked")?;
                    self.programmer = Some(programmer);
                    match outcome {
                        Ok(synced) => {
                            self.health.sync_succeeded();
                            retry_at = None;
                            dirty |= synced.follow_up;
                            self.service_health.reconcile(synced.service_checks).await;
                        }
                        Err(error) => {
                            self.health.sync_failed();
                            self.metrics.sync_failed();
                            dirty = true;
                            retry_at = Some(Instant::now() + self.args.sync_period);
                            tracing::error!(
                                "sync failed (retrying in {:?}): {error:#}",
                                self.args.sync_period
                            );
                        }
                    }
                }
                update = updates.next() => match update {
                    Some(Update::Synced) => {
                        tracing::info!("caches synced: programming the kernel");
                        synced = true;
                        dirty = true;
                    }
                    Some(Update::Changed(changes)) => {
                        tracing::debug!(
                            services = changes.services.len(),
                            node = changes.node,
                            "changes queued"
                        );
                        dirty = true;
                        self.health.queued();
                        self.metrics.queued();
                        self.service_objects += changes.service_objects.len() as u64;
                        self.endpoint_slices += changes.endpoint_slices.len() as u64;
                        self.node_changed |= changes.node;
                        self.changed.extend(changes.services);
                        self.trigger_times.extend(changes.trigger_times);
                    }
                    None => anyhow::bail!("the watches ended"),
                },
                () = sleep_until(next_sync) => {
                    let now = Instant::now();
                    let due = first || now >= last_full + FULL_RESYNC_INTERVAL;
                    if self.start(&watcher, due, first) {
                        last_full = now;
                    }
                    first = false;
                    dirty = false;
                    last_start = Some(now);
                }
            }
        }
        // Stop watching, then let the sync in flight finish.
        drop(watcher);
        if let Some(job) = self.in_flight.take() {
            tracing::info!("waiting for the sync in flight");
            let (_, outcome) = job.await.context("the sync thread panicked")?;
            if let Err(error) = outcome {
                tracing::error!("the last sync failed: {error:#}");
            }
        }
        Ok(())
    }

    /// Starts a sync on a blocking thread: full when `due` (start, hourly), after a node
    /// change or when the last sync failed; otherwise partial, of the changed Services.
    /// Returns whether it is full.
    fn start(&mut self, watcher: &WatcherHandle, due: bool, adopted: bool) -> bool {
        let mut programmer = self.programmer.take().expect("no sync in flight");
        let metrics = Arc::clone(&self.metrics);
        self.health.sync_started();
        self.health.set_node_eligible(
            watcher
                .node()
                .is_none_or(|node| health::node_eligible(&node)),
        );
        let changed = std::mem::take(&mut self.changed);
        let trigger_times = std::mem::take(&mut self.trigger_times);
        self.metrics.changes(
            std::mem::take(&mut self.service_objects),
            std::mem::take(&mut self.endpoint_slices),
        );
        let full = due || std::mem::take(&mut self.node_changed) || programmer.needs_full_sync();
        let work = if full {
            Work::Full {
                snapshot: watcher.snapshot(),
                adopted,
            }
        } else {
            Work::Partial(
                changed
                    .into_iter()
                    .map(|key| {
                        let objects = watcher.service_snapshot(&key);
                        (key, objects)
                    })
                    .collect(),
            )
        };
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let outcome = programmer.sync(work, &trigger_times, &metrics);
            metrics.sync_ended(full, start.elapsed());
            (programmer, outcome)
        }));
        full
    }
}

/// Awaits the job if there is one; otherwise never completes.
async fn maybe<T>(job: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match job {
        Some(job) => job.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
