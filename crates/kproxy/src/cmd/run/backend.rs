//! The daemon's two ways of programming the kernel (`--proxy-mode`), behind one interface the
//! [`Programmer`](super::programmer::Programmer) calls: a full sync of a whole state, and a
//! partial sync of changed Service ports.
//!
//! * nftables: the compiler's [`Incremental`] recompiles only the changed ports and the
//!   [`Syncer`] sends only the touched objects over netlink.
//! * iptables: the ports are kept by name; each sync compiles the whole state (cheap beside
//!   the restore) and [`IptablesSyncer`] restores only the chains whose rules changed, and
//!   only in the tables and families that have one.
//!
//! The first full sync then removes the other mode's rules (iptables mode: every full sync,
//! one netlink transaction): after the new ones are in force, so switching modes leaves no gap.

use std::collections::BTreeMap;

use anyhow::Context;
use kproxy_compiler::{Incremental, Options, PortChange};
use kproxy_model::{NodeInfo, ProxyState, ServicePort, ServicePortName};
use kproxy_syncer::iptables::{self, IptablesSyncer, Tools};
use kproxy_syncer::{SyncReport, Syncer};

use crate::cli::ProxyMode;

/// One mode's syncer and what it last compiled.
pub enum Backend {
    /// `--proxy-mode nftables`.
    Nftables {
        syncer: Syncer,
        /// `None` until a full sync succeeded, and after any failure.
        compiled: Option<Incremental>,
        /// iptables mode's leftovers are still to be removed (after the first full sync).
        leftovers: bool,
        /// `--cleanup-kube-proxy`: kube-proxy's rules go with the leftovers.
        kube_proxy: bool,
    },
    /// `--proxy-mode iptables`.
    Iptables {
        syncer: IptablesSyncer,
        /// The node and every Service port; `None` until a full sync succeeded, and after
        /// any failure.
        state: Option<(NodeInfo, BTreeMap<ServicePortName, ServicePort>)>,
        /// `--cleanup-kube-proxy`, until the first full sync removed kube-proxy's tables.
        kube_proxy: bool,
    },
}

impl Backend {
    /// Adopts what an earlier kproxy left in this mode (its rules stay in force until the
    /// first sync replaces them). Blocking (netlink, iptables binaries).
    /// With `kube_proxy` (`--cleanup-kube-proxy`), the first full sync also removes
    /// kube-proxy's rules.
    pub fn start(mode: ProxyMode, kube_proxy: bool) -> anyhow::Result<Backend> {
        match mode {
            ProxyMode::Nftables => {
                let syncer = Syncer::adopt().context("reading kproxy's tables from the kernel")?;
                Ok(Backend::Nftables {
                    syncer,
                    compiled: None,
                    leftovers: true,
                    kube_proxy,
                })
            }
            ProxyMode::Iptables => {
                let tools = Tools::detect();
                tracing::info!(backend = ?tools.variant, "iptables mode");
                Ok(Backend::Iptables {
                    syncer: IptablesSyncer::new(tools),
                    state: None,
                    kube_proxy,
                })
            }
        }
    }

    /// Nothing is compiled yet, or the kernel is not known to hold what the last sync left.
    pub fn needs_full_sync(&self) -> bool {
        match self {
            Backend::Nftables {
                syncer, compiled, ..
            } => compiled.is_none() || !syncer.in_step(),
            Backend::Iptables { state, .. } => state.is_none(),
        }
    }

    /// Chains the last transaction flushed are deleted by the next one (nftables only).
    pub fn has_stale_chains(&self) -> bool {
        match self {
            Backend::Nftables { syncer, .. } => syncer.has_stale_chains(),
            Backend::Iptables { .. } => false,
        }
    }

    /// Drops what only a full sync needs (nftables: the syncer's whole-ruleset mirror; iptables
    /// mode keeps its last restore, which partial syncs diff against).
    pub fn release_mirror(&mut self) {
        if let Backend::Nftables { syncer, .. } = self {
            syncer.release_mirror();
        }
    }

    /// The names of Service `namespace/service`'s ports as last compiled (none before a full
    /// sync).
    pub fn service_ports(&self, namespace: &str, service: &str) -> Vec<ServicePortName> {
        match self {
            Backend::Nftables { compiled, .. } => compiled
                .as_ref()
                .map(|c| c.service_ports(namespace, service))
                .unwrap_or_default(),
            Backend::Iptables { state, .. } => state
                .as_ref()
                .map(|(_, ports)| {
                    ServicePortName::of_service(ports, namespace, service)
                        .map(|(name, _)| name.clone())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Forgets what was compiled (after a failure): the next sync is full.
    pub fn forget(&mut self) {
        match self {
            Backend::Nftables { compiled, .. } => *compiled = None,
            Backend::Iptables { state, .. } => *state = None,
        }
    }

    /// Makes the kernel equal to `state`; `adopted` when the kernel was just read back.
    pub fn full(
        &mut self,
        state: ProxyState,
        options: &Options,
        adopted: bool,
    ) -> anyhow::Result<Option<SyncReport>> {
        self.forget();
        match self {
            Backend::Nftables {
                syncer,
                compiled,
                leftovers,
                kube_proxy,
            } => {
                let incremental = Incremental::from_state(state, options);
                if !adopted {
                    syncer.resync();
                }
                let report = syncer.sync(incremental.ruleset())?;
                *compiled = Some(incremental);
                if std::mem::take(leftovers) {
                    // A dozen iptables processes: on a thread of its own, so the sync (and the
                    // health it reports) does not wait for them; they touch no nftables rule.
                    let kube_proxy = *kube_proxy;
                    std::thread::spawn(move || remove_leftovers(kube_proxy));
                }
                Ok(Some(report))
            }
            Backend::Iptables {
                syncer,
                state: kept,
                kube_proxy,
            } => {
                // Every full sync restores every chain and checks the built-in chain jumps.
                syncer.resync();
                let report = syncer.sync(&kproxy_compiler::iptables::compile(&state, options))?;
                log_iptables(&report);
                let ports = state
                    .ports
                    .into_iter()
                    .map(|p| (p.name.clone(), p))
                    .collect();
                *kept = Some((state.node, ports));
                kproxy_syncer::cleanup().context("removing nftables mode's tables")?;
                // kube-proxy's iptables chains are ours by name, rewritten or deleted by the
                // full restore; its nftables tables go once.
                if std::mem::take(kube_proxy) {
                    kproxy_syncer::cleanup_kube_proxy_tables()
                        .context("removing kube-proxy's nftables tables")?;
                    tracing::info!("removed kube-proxy's nftables tables");
                }
                Ok(None)
            }
        }
    }

    /// Applies the changed ports; `None` when nothing had to be sent.
    pub fn partial(
        &mut self,
        changes: Vec<PortChange>,
        options: &Options,
    ) -> anyhow::Result<Option<SyncReport>> {
        match self {
            Backend::Nftables {
                syncer, compiled, ..
            } => {
                let Some(compiled) = compiled.as_mut() else {
                    anyhow::bail!("a partial sync before any full one");
                };
                Ok(match compiled.update(changes) {
                    // An edit that changes no rule (a label, an annotation): nothing to send,
                    // unless chains flushed by the last sync are still to be deleted.
                    Some(change) if change.is_empty() && !syncer.has_stale_chains() => None,
                    Some(change) => Some(syncer.sync_change(&change)?),
                    // An IP family's first or last port: its table appears or goes.
                    None => Some(syncer.sync(compiled.ruleset())?),
                })
            }
            Backend::Iptables { syncer, state, .. } => {
                let Some((node, ports)) = state.as_mut() else {
                    anyhow::bail!("a partial sync before any full one");
                };
                for change in changes {
                    match change {
                        PortChange::Set(port) => {
                            ports.insert(port.name.clone(), port);
                        }
                        PortChange::Remove(name) => {
                            ports.remove(&name);
                        }
                    }
                }
                // The whole state is compiled (iptables mode has no incremental compiler), from
                // the kept ports as they are: no copy of every port per sync.
                let ports: Vec<&ServicePort> = ports.values().collect();
                let rules = kproxy_compiler::iptables::compile_ports(node, &ports, options);
                let report = syncer.sync(&rules)?;
                log_iptables(&report);
                Ok(None)
            }
        }
    }
}

/// After the first full sync in nftables mode: iptables mode's rules go, so a node switched
/// from that mode keeps no second set of rules. Only after the sync, so switching leaves no gap.
/// Removes iptables mode's leftovers and, with `kube_proxy`, kube-proxy's rules: its iptables
/// chains and its nftables tables.
fn remove_leftovers(kube_proxy: bool) {
    if kube_proxy {
        match kproxy_syncer::cleanup_kube_proxy_tables() {
            Ok(()) => tracing::info!("removed kube-proxy's nftables tables"),
            Err(error) => tracing::warn!("could not remove kube-proxy's nftables tables: {error}"),
        }
    }
    if !iptables::may_hold_rules() {
        tracing::debug!("no iptables tables in this namespace: no leftovers to remove");
        return;
    }
    match iptables::cleanup(Tools::detect(), kube_proxy) {
        Ok(report) if report.hooks_deleted + report.chains_deleted > 0 => {
            tracing::info!(
                jumps = report.hooks_deleted,
                chains = report.chains_deleted,
                "removed iptables mode's leftovers"
            );
        }
        Ok(_) => {}
        // nftables mode does not need iptables; say so and go on.
        Err(error) => tracing::warn!("could not remove iptables mode's leftovers: {error}"),
    }
}

fn log_iptables(report: &iptables::IptablesReport) {
    for family in &report.families {
        tracing::debug!(
            family = %family.family,
            full = family.full,
            chains_written = family.written.len(),
            chains_deleted = family.deleted.len(),
            restore = ?family.restore,
            "iptables-restore"
        );
    }
}
