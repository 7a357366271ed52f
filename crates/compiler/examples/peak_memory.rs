//! Peak heap memory, time and kernel object counts of compiling and rendering a synthetic cluster.
//!
//! ```text
//! cargo run --release -p kproxy-compiler --example peak_memory -- [SERVICES] [ENDPOINTS]
//! ```
//!
//! SERVICES defaults to 10000 and ENDPOINTS (per Service) to 10. A counting global allocator
//! tracks live and peak heap bytes. The state is built first; the peak is then reset to the
//! bytes live at that point, so the "compile+render" peak is what compiling and rendering
//! add on top of the state the daemon already holds. After the measured run, the same
//! compile+render is repeated a few times for a warm timing, and the marginal cost of one Service
//! port and one endpoint is measured by diffing small rulesets. See `docs/benchmarks.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kproxy_compiler::ir::{Match, Rule, Ruleset, SetRef};
use kproxy_compiler::{compile, render, Incremental, Options, PortChange};
use kproxy_model::{Endpoint, ServicePort};
use kproxy_synthetic::Kind;

/// The system allocator, counting live and peak bytes.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size), which is
        // exactly what `System.alloc` requires.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` was allocated by this allocator (that is, by
        // `System`, which all our methods forward to) with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr` came from this allocator with `layout` and that
        // `new_size` is valid for it; `System.realloc` has the same requirements.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Net change only: large blocks are resized in place (glibc uses mremap for them),
            // so the old and new block rarely coexist; small copies are noise.
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(current(), Ordering::Relaxed);
}

/// Kernel objects a ruleset programs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    tables: usize,
    base_chains: usize,
    chains: usize,
    rules: usize,
    named_sets: usize,
    named_maps: usize,
    set_elements: usize,
    map_elements: usize,
    /// Named endpoint maps (shards) and their ranges.
    endpoint_maps: usize,
    endpoint_ranges: usize,
    /// Elements of anonymous prefix sets inside rules (`ip saddr { … }`).
    anon_set_elements: usize,
}

impl Counts {
    fn of(ruleset: &Ruleset) -> Counts {
        let mut c = Counts::default();
        for table in &ruleset.tables {
            c.tables += 1;
            c.named_sets += table.sets.len();
            c.named_maps += table.maps.len();
            c.set_elements += table.sets.iter().map(|s| s.elements.len()).sum::<usize>();
            c.map_elements += table.maps.iter().map(|m| m.elements.len()).sum::<usize>();
            c.endpoint_maps += table.endpoint_maps.len();
            c.endpoint_ranges += table
                .endpoint_maps
                .iter()
                .map(|m| m.elements.len())
                .sum::<usize>();
            for chain in &table.chains {
                c.chains += 1;
                c.base_chains += usize::from(chain.hook.is_some());
                for rule in &chain.rules {
                    c.rules += 1;
                    for m in &rule.matches {
                        if let Match::Lookup {
                            set: SetRef::Prefixes(nets),
                            ..
                        } = m
                        {
                            c.anon_set_elements += nets.len();
                        }
                    }
                }
            }
        }
        c
    }

    fn fields(&self) -> [(&'static str, i64); 11] {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        [
            ("tables", n(self.tables)),
            ("chains", n(self.chains)),
            ("  of which base chains", n(self.base_chains)),
            ("rules", n(self.rules)),
            ("named sets", n(self.named_sets)),
            ("named maps", n(self.named_maps)),
            ("set elements", n(self.set_elements)),
            ("map elements", n(self.map_elements)),
            ("endpoint maps", n(self.endpoint_maps)),
            ("endpoint ranges", n(self.endpoint_ranges)),
            ("anonymous set elements", n(self.anon_set_elements)),
        ]
    }

    /// Objects the kernel holds: tables, chains, rules, named sets and maps, and their
    /// elements (anonymous set and map elements belong to their rule).
    fn kernel_objects(&self) -> usize {
        self.tables
            + self.chains
            + self.rules
            + self.named_sets
            + self.named_maps
            + self.set_elements
            + self.map_elements
            + self.endpoint_maps
            + self.endpoint_ranges
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn options() -> Options {
    Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    }
}

/// `VmHWM` (peak resident set size) and `VmRSS` from `/proc/self/status`.
fn proc_status() -> Vec<String> {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default()
}

fn arg(args: &[String], i: usize, default: usize, what: &str) -> Result<usize, String> {
    match args.get(i) {
        None => Ok(default),
        Some(a) => a
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{what} must be a number, not {a:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed =
        arg(&args, 0, 10_000, "SERVICES").and_then(|s| Ok((s, arg(&args, 1, 10, "ENDPOINTS")?)));
    let (services, endpoints) = match parsed {
        Ok(p) if args.len() <= 2 => p,
        Ok(_) => {
            eprintln!("usage: peak_memory [SERVICES] [ENDPOINTS]");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{e}\nusage: peak_memory [SERVICES] [ENDPOINTS]");
            return ExitCode::FAILURE;
        }
    };
    let options = options();

    let start = Instant::now();
    let state = kproxy_synthetic::cluster(services, endpoints);
    let build_time = start.elapsed();
    let state_bytes = current();
    let build_peak = peak();

    reset_peak();
    let baseline = current();
    let start = Instant::now();
    let ruleset = compile(&state, &options);
    let compile_time = start.elapsed();
    let ir_bytes = current() - baseline;
    let start = Instant::now();
    let text = render::nft::ruleset(&ruleset);
    let render_time = start.elapsed();
    let run_peak = peak();
    let counts = Counts::of(&ruleset);
    let text_len = text.len();
    let text_lines = text.lines().count();
    drop(text);
    let start = Instant::now();
    drop(ruleset);
    let drop_time = start.elapsed();

    // Warm timings: the same work again, best of a few runs.
    let runs = if services > 20_000 { 3 } else { 5 };
    let (mut best_compile, mut best_render, mut best_drop) =
        (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        let start = Instant::now();
        let ruleset = compile(&state, &options);
        best_compile = best_compile.min(start.elapsed());
        let start = Instant::now();
        let text = render::nft::ruleset(&ruleset);
        best_render = best_render.min(start.elapsed());
        std::hint::black_box(text);
        let start = Instant::now();
        drop(ruleset);
        best_drop = best_drop.min(start.elapsed());
    }

    // The daemon's form: one fragment per Service port, updated per change.
    let baseline = current();
    let start = Instant::now();
    let mut incremental = Incremental::new(&state, &options);
    let incremental_time = start.elapsed();
    let incremental_bytes = current() - baseline;
    let mut changed = state.ports[state.ports.len() / 2].clone();
    let mut best_update = Duration::MAX;
    for _ in 0..20 {
        if let Some(family) = changed.families.first_mut() {
            match family.endpoints.cluster.pop() {
                Some(_) => {}
                None => family.endpoints.cluster.push(Endpoint {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 127, 0, 1)),
                    port: 8080,
                    local: false,
                }),
            }
        }
        let start = Instant::now();
        let change = incremental.update([PortChange::Set(changed.clone())]);
        best_update = best_update.min(start.elapsed());
        std::hint::black_box(change);
    }
    let start = Instant::now();
    let whole = incremental.ruleset();
    let materialize_time = start.elapsed();
    drop(whole);
    drop(incremental);

    let ports = state.ports.len();
    let families: usize = state.ports.iter().map(|p| p.families.len()).sum();
    println!(
        "kproxy compile+render: {services} Services x {endpoints} endpoints \
         ({ports} Service ports, {families} port-families)"
    );
    let mut rows: Vec<(String, String)> = vec![
        ("build state (not measured below)".into(), ms(build_time)),
        ("  state heap, live".into(), mib(state_bytes)),
        ("  state heap, peak while building".into(), mib(build_peak)),
        ("compile, first run".into(), ms(compile_time)),
        ("render, first run".into(), ms(render_time)),
        (
            "compile+render, first run".into(),
            ms(compile_time + render_time),
        ),
        ("free the IR, first run".into(), ms(drop_time)),
        (format!("compile, best of {runs}"), ms(best_compile)),
        (format!("render, best of {runs}"), ms(best_render)),
        (
            format!("compile+render, best of {runs}"),
            ms(best_compile + best_render),
        ),
        (format!("free the IR, best of {runs}"), ms(best_drop)),
        ("incremental: build".into(), ms(incremental_time)),
        ("incremental: heap, live".into(), mib(incremental_bytes)),
        (
            "incremental: one port's endpoints, best of 20".into(),
            format!("{:.1} µs", best_update.as_secs_f64() * 1e6),
        ),
        (
            "incremental: whole ruleset out".into(),
            ms(materialize_time),
        ),
        (
            "rendered text".into(),
            format!("{text_len} bytes, {text_lines} lines"),
        ),
        ("IR heap, live".into(), mib(ir_bytes)),
        (
            "peak heap during compile+render (above state)".into(),
            mib(run_peak - baseline),
        ),
        ("peak heap, total (incl. state)".into(), mib(run_peak)),
    ];
    for (name, value) in counts.fields() {
        rows.push((name.into(), value.to_string()));
    }
    rows.push((
        "kernel objects (tables+chains+rules+sets+maps+elements)".into(),
        counts.kernel_objects().to_string(),
    ));
    for line in proc_status() {
        let (k, v) = line.split_once(' ').unwrap_or((&line, ""));
        rows.push((format!("process {k}"), v.into()));
    }
    print_table(&rows);

    println!();
    marginal_costs(endpoints.max(2), &options);
    ExitCode::SUCCESS
}

fn print_table(rows: &[(String, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v:>value_width$}");
    }
}

/// The cost of one more Service port of each kind, and what one more endpoint changes.
fn marginal_costs(endpoints: usize, options: &Options) {
    println!("Objects added by one more Service ({endpoints} endpoints, single-stack):");
    let kinds = [
        Kind::ClusterIp,
        Kind::MultiPort,
        Kind::NodePort,
        Kind::LoadBalancer,
        Kind::ExternalLocal,
        Kind::InternalLocal,
        Kind::Affinity,
        Kind::NoEndpoints,
    ];
    let header = [
        "kind", "tables", "chains", "base", "rules", "sets", "maps", "set el.", "map el.",
        "DNAT el.", "anon el.",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for kind in kinds {
        let Some(i) =
            (0..1000).find(|&i| Kind::of(i) == kind && !kproxy_synthetic::is_dual_stack(i))
        else {
            continue;
        };
        let before = Counts::of(&compile(&kproxy_synthetic::cluster(i, endpoints), options));
        let after = Counts::of(&compile(
            &kproxy_synthetic::cluster(i + 1, endpoints),
            options,
        ));
        let row = std::iter::once(format!("{kind:?}"))
            .chain(
                after
                    .fields()
                    .iter()
                    .zip(before.fields())
                    .map(|((_, a), (_, b))| format!("{:+}", a - b)),
            )
            .collect();
        table.push(row);
    }
    print_grid(&table);

    println!();
    println!("What one more endpoint changes (diff of the two rulesets):");
    let base = kproxy_synthetic::cluster(100, endpoints);
    let cases: [(&str, Kind, bool); 5] = [
        ("remote endpoint, ClusterIP", Kind::ClusterIp, false),
        ("local endpoint, ClusterIP", Kind::ClusterIp, true),
        ("remote endpoint, NodePort", Kind::NodePort, false),
        (
            "local endpoint, LoadBalancer ETP Local",
            Kind::ExternalLocal,
            true,
        ),
        ("remote endpoint, ClientIP affinity", Kind::Affinity, false),
    ];
    let before = compile(&base, options);
    for (what, kind, local) in cases {
        let mut state = base.clone();
        let Some(port) = state
            .ports
            .iter_mut()
            .find(|p| kind_of(p) == Some(kind) && p.families.len() == 1 && p.name.port.is_empty())
        else {
            continue;
        };
        add_endpoint(port, local);
        let after = compile(&state, options);
        let diff = diff(&before, &after);
        println!("  {what}: {} object(s) changed", diff.len());
        for line in diff {
            println!("    {line}");
        }
    }
}

fn kind_of(port: &ServicePort) -> Option<Kind> {
    let i: usize = port.name.service.strip_prefix("svc-")?.parse().ok()?;
    Some(Kind::of(i))
}

fn add_endpoint(port: &mut ServicePort, local: bool) {
    let family = &mut port.families[0];
    let target = family.endpoints.cluster.first().map_or(8080, |e| e.port);
    let endpoint = Endpoint {
        addr: IpAddr::V4(Ipv4Addr::new(10, 63, 255, 254)),
        port: target,
        local,
    };
    family.endpoints.cluster.push(endpoint);
    family.endpoints.cluster.sort();
    if local {
        family.endpoints.local.push(endpoint);
        family.endpoints.local.sort();
    }
}

/// The objects that differ between two rulesets: rules (by chain and position), chains, named
/// sets and maps (by element).
fn diff(before: &Ruleset, after: &Ruleset) -> Vec<String> {
    let mut out = Vec::new();
    for (b, a) in before.tables.iter().zip(&after.tables) {
        let chains = |t: &kproxy_compiler::ir::Table| -> BTreeMap<String, Vec<Rule>> {
            t.chains
                .iter()
                .map(|c| (c.name.clone(), c.rules.clone()))
                .collect()
        };
        let (bc, ac) = (chains(b), chains(a));
        for (name, rules) in &ac {
            match bc.get(name) {
                None => out.push(format!("chain {name} added ({} rules)", rules.len())),
                Some(old) if old != rules => {
                    let changed = old.iter().zip(rules).filter(|(o, n)| o != n).count();
                    let mut line = format!("chain {name}: {changed} rule(s) replaced");
                    if rules.len() != old.len() {
                        let _ = write!(
                            line,
                            ", {:+} rule(s)",
                            rules.len() as i64 - old.len() as i64
                        );
                    }
                    out.push(line);
                }
                Some(_) => {}
            }
        }
        for name in bc.keys().filter(|n| !ac.contains_key(*n)) {
            out.push(format!("chain {name} removed"));
        }
        let sets = |t: &kproxy_compiler::ir::Table| -> BTreeMap<String, BTreeSet<String>> {
            t.sets
                .iter()
                .map(|s| {
                    let elements = s.elements.iter().map(|e| format!("{e:?}")).collect();
                    (format!("set {}", s.name), elements)
                })
                .chain(t.maps.iter().map(|m| {
                    let elements = m.elements.iter().map(|e| format!("{e:?}")).collect();
                    (format!("map {}", m.name), elements)
                }))
                .chain(t.endpoint_maps.iter().map(|m| {
                    let elements = m.elements.iter().map(|e| format!("{e:?}")).collect();
                    (format!("map {}", m.name), elements)
                }))
                .collect()
        };
        let (bs, as_) = (sets(b), sets(a));
        for (name, elements) in &as_ {
            match bs.get(name) {
                None => out.push(format!("{name} added ({} elements)", elements.len())),
                Some(old) if old != elements => out.push(format!(
                    "{name}: +{} -{} element(s)",
                    elements.difference(old).count(),
                    old.difference(elements).count()
                )),
                Some(_) => {}
            }
        }
        for name in bs.keys().filter(|n| !as_.contains_key(*n)) {
            out.push(format!("{name} removed"));
        }
    }
    out
}

fn print_grid(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                let _ = write!(line, " {cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(line, " {cell:>w$}", w = widths[c]);
            }
        }
        println!("{line}");
    }
}
