//! What the kernel alone charges for one endpoint change, as a function of the table's shape.
//!
//! The suite's incremental measurement reads the kernel's part of an endpoint change on the
//! synthetic cluster, where every dimension grows at once. This program builds a table with
//! only the parts that an element change can touch, each sized on its own:
//!
//! * `CHAINS` regular chains (the commit visits every chain of every table);
//! * `MAPS` endpoint maps of `RANGES` ranges each (a changed interval map is rebuilt whole at
//!   commit; an element message finds its map by name among the table's sets);
//! * `BINDINGS` DNAT rules reading each map (every element added is checked against each).
//!
//! Then, `REPEATS` times, it adds one range to a map (a different map each time, as the suite
//! touches a different Service port each time) and removes it again, each its own
//! `Syncer::sync_change`, and prints the median kernel time (`SyncReport::transaction`) of each.
//! `--gap-ms N` sleeps N ms before each addition, as an idle daemon would between events.
//!
//! ```sh
//! cargo build --release -p kproxy-bench --example endpoint_change_floor
//! target/release/examples/endpoint_change_floor 1300 455 24 2     # the 1k cluster's shape
//! target/release/examples/endpoint_change_floor 3600 512 1070 107 # the 50k cluster's shape
//! ```
//!
//! Root only: it works in a throwaway network namespace. docs/benchmarks.md has the results.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kproxy_compiler::endpoint_maps::MODULUS;
use kproxy_compiler::ir::{
    Action, Chain, CmpOp, Dnat, EndpointMap, EndpointRange, Expr, Family, Match, Rule, Ruleset,
    Table, Value, TABLE_NAME,
};
use kproxy_compiler::RulesetChange;
use kproxy_syncer::Syncer;
use kproxy_testkit::NetNs;

const USAGE: &str =
    "usage: endpoint_change_floor CHAINS MAPS RANGES BINDINGS [--repeats N] [--gap-ms N]";

/// Endpoints per endpoint chain, as in the synthetic cluster: a map of R ranges holds the
/// windows of R / 10 chains.
const ENDPOINTS_PER_CHAIN: u32 = 10;
/// The window the measured range goes into: above every window the table fills.
const PROBE_WINDOW: u32 = 4000;

struct Shape {
    chains: u32,
    maps: u32,
    ranges: u32,
    bindings: u32,
}

fn map_name(map: u32) -> String {
    format!("endpoints-{map:03x}")
}

/// Range `index` of `parts` in window `window` of map `map`, to an address unique to both.
fn range(map: u32, window: u32, index: u32, parts: u32) -> EndpointRange {
    let offset = window << 20;
    let share = MODULUS / parts;
    EndpointRange {
        first: offset + index * share,
        last: offset + (index + 1) * share - 1,
        target: SocketAddr::from((
            Ipv4Addr::new(10, (map >> 8) as u8, map as u8, (window % 250) as u8),
            8080,
        )),
    }
}

fn table(shape: &Shape) -> Table {
    let windows = (shape.ranges / ENDPOINTS_PER_CHAIN).max(1);
    let endpoint_maps = (0..shape.maps)
        .map(|map| EndpointMap {
            name: map_name(map),
            comment: None,
            elements: (1..=windows)
                .flat_map(|window| {
                    (0..ENDPOINTS_PER_CHAIN)
                        .map(move |i| range(map, window, i, ENDPOINTS_PER_CHAIN))
                })
                .collect(),
        })
        .collect();
    let mut chains: Vec<Chain> = (0..shape.chains.max(1))
        .map(|i| Chain {
            name: format!("chain-{i}"),
            hook: None,
            comment: None,
            rules: Vec::new(),
        })
        .collect();
    let mut rule_count = 0usize;
    for map in 0..shape.maps {
        for binding in 0..shape.bindings {
            let [_, b, c, d] = (rule_count as u32).to_be_bytes();
            let rule = Rule {
                matches: vec![Match::Cmp {
                    left: Expr::DestAddr,
                    op: CmpOp::Eq,
                    right: Value::Addr(Ipv4Addr::new(10, 96 + b, c, d).into()),
                }],
                statements: Vec::new(),
                action: Some(Action::Dnat(Dnat::Numgen {
                    map: map_name(map),
                    modulus: MODULUS,
                    offset: (binding % windows + 1) << 20,
                })),
                comment: None,
            };
            let chain = rule_count % chains.len();
            chains[chain].rules.push(rule);
            rule_count += 1;
        }
    }
    Table {
        family: Family::Ip,
        name: TABLE_NAME.to_string(),
        sets: Vec::new(),
        maps: Vec::new(),
        endpoint_maps,
        chains,
    }
}

/// A partial table holding map `map` with `elements`: one side of a [`RulesetChange`].
fn touched(map: u32, elements: Vec<EndpointRange>) -> Ruleset {
    Ruleset {
        tables: vec![Table {
            family: Family::Ip,
            name: TABLE_NAME.to_string(),
            sets: Vec::new(),
            maps: Vec::new(),
            endpoint_maps: vec![EndpointMap {
                name: map_name(map),
                comment: None,
                elements,
            }],
            chains: Vec::new(),
        }],
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn measure(shape: &Shape, repeats: u32, gap: Duration) -> anyhow::Result<()> {
    let namespace = NetNs::new("change-floor");
    namespace.exec(|| -> anyhow::Result<()> {
        let mut syncer = Syncer::default();
        let start = Instant::now();
        syncer
            .sync(Ruleset {
                tables: vec![table(shape)],
            })
            .context("loading the table")?;
        let load = start.elapsed();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for repetition in 0..repeats {
            let map = repetition * 97 % shape.maps;
            let probe = vec![range(map, PROBE_WINDOW, 0, 1)];
            std::thread::sleep(gap);
            let add = RulesetChange {
                before: touched(map, Vec::new()),
                after: touched(map, probe.clone()),
            };
            added.push(syncer.sync_change(&add).context("adding")?.transaction);
            let remove = RulesetChange {
                before: touched(map, probe),
                after: touched(map, Vec::new()),
            };
            removed.push(syncer.sync_change(&remove).context("removing")?.transaction);
        }
        println!(
            "chains {} maps {} ranges/map {} bindings/map {} gap {gap:?}: load {load:.2?}; \
             kernel, median of {repeats}: added {:.1?}, removed {:.1?}",
            shape.chains,
            shape.maps,
            shape.ranges,
            shape.bindings,
            median(added),
            median(removed),
        );
        Ok(())
    })
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let mut numbers = Vec::new();
    let (mut repeats, mut gap_ms) = (30, 0);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u32> {
            let value = args
                .next()
                .with_context(|| format!("{name} needs a value"))?;
            value.parse().with_context(|| format!("{name} {value}"))
        };
        match arg.as_str() {
            "--repeats" => repeats = value("--repeats")?.max(1),
            "--gap-ms" => gap_ms = value("--gap-ms")?,
            number => numbers.push(number.parse::<u32>().with_context(|| number.to_string())?),
        }
    }
    let &[chains, maps, ranges, bindings] = numbers.as_slice() else {
        bail!("{USAGE}");
    };
    if maps == 0 {
        bail!("MAPS must be at least 1");
    }
    let shape = Shape {
        chains,
        maps,
        ranges,
        bindings,
    };
    measure(&shape, repeats, Duration::from_millis(gap_ms.into()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("endpoint_change_floor: {error:#}");
            ExitCode::FAILURE
        }
    }
}
