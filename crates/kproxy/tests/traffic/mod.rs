//! Real-traffic tests: kproxy's rules loaded into the node namespace of a small routed topology
//! (`kproxy_testkit::topology`), checked with real TCP and UDP connections from pods and
//! external clients. Each test builds its own namespaces, so tests run in parallel.
//!
//! * `clusterip`: spread, IPv6, REJECT without endpoints, hairpin, session affinity,
//!   internalTrafficPolicy, terminating endpoints;
//! * `external`: NodePort masquerade, externalTrafficPolicy Local, load-balancer source ranges,
//!   externalIPs;
//! * `trace_check`: `kproxy trace`'s predictions for 40 packets against what connections
//!   through the kernel experience;
//! * `updates`: re-programming converges, and live traffic sees no failure while it happens.
//! * `daemon`: `kproxy run`, fed by the fake API server, carries traffic and follows changes.
//!
//! Apart from `daemon` (`kproxy run`), rules are programmed by [`program`] only, with
//! `kproxy apply` inside the node namespace.
//! Every test runs once per proxy mode ([`Mode`]): `traffic::<area>::nftables::<test>` and
//! `traffic::<area>::iptables::<test>`, since every behaviour must hold in both
//! (`trace_check` runs in nftables mode only: `kproxy trace` reads that mode's ruleset).

/// Declares, for each named `fn test(mode: Mode)`, one `#[test]` per proxy mode in modules
/// `nftables` and `iptables`.
macro_rules! in_both_modes {
    ($($test:ident),* $(,)?) => {
        mod nftables {
            $(
                #[test]
                fn $test() {
                    super::$test(super::super::Mode::Nftables);
                }
            )*
        }
        mod iptables {
            $(
                #[test]
                fn $test() {
                    super::$test(super::super::Mode::Iptables);
                }
            )*
        }
    };
}
use in_both_modes;

mod clusterip;
mod daemon;
mod external;
mod manifests;
mod trace_check;
mod updates;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use kproxy_testkit::topology::Topology;
use kproxy_testkit::traffic::{Outcome, Tally};
use kproxy_testkit::NetNs;

use manifests::{Service, FLAGS, SERVICE_PORT};

/// How long a test waits before calling a connection dropped. Drops never answer, so this is
/// pure waiting: short, but far above the microseconds a reply takes inside one machine.
const DROP_WAIT: Duration = Duration::from_millis(700);

/// Programs `manifests` into `node` with `kproxy apply` run inside the namespace: the first
/// time the whole ruleset, then only the difference, in one netlink transaction each, followed
/// by the cleanup of stale UDP conntrack entries.
///
/// Every test programs through here, so the suite tests what a node runs. (Before `apply`
/// existed this was `dry-run` into `nft -f`; replacing whole tables that way is not atomic for
/// packets: about one new connection in a few thousand made during back-to-back reloads was
/// refused, even when the ruleset did not change.)
fn program(node: &NetNs, manifests: &str, flags: &[&str]) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name(), env!("CARGO_BIN_EXE_kproxy")])
        .args(["apply", "-f", "-"])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kproxy apply");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(manifests.as_bytes())
        .expect("writing manifests to kproxy");
    let out = child.wait_with_output().expect("waiting for kproxy apply");
    assert!(
        out.status.success(),
        "kproxy apply failed in {}:\n{}\nmanifests:\n{manifests}",
        node.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The proxy mode a test programs its node in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--proxy-mode nftables`.
    Nftables,
    /// `--proxy-mode iptables`.
    Iptables,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Nftables => "nftables",
            Mode::Iptables => "iptables",
        }
    }
}

/// A topology and the mode its node is programmed in.
pub struct Node {
    topology: Topology,
    mode: Mode,
}

impl std::ops::Deref for Node {
    type Target = Topology;

    fn deref(&self) -> &Topology {
        &self.topology
    }
}

/// Programs `services` for the topology's node with the standard flags, in its mode.
fn apply(node: &Node, services: &[Service]) {
    let mut flags = FLAGS.to_vec();
    flags.extend(["--proxy-mode", node.mode.flag()]);
    program(node.node(), &manifests::render(node, services), &flags);
}

/// `ip:SERVICE_PORT` (or another port).
fn at(ip: &str, port: Option<u16>) -> SocketAddr {
    let ip: IpAddr = ip.parse().expect("an IP address");
    SocketAddr::new(ip, port.unwrap_or(SERVICE_PORT))
}

/// Counts outcomes and insists they all succeeded.
fn answered(what: &str, outcomes: &[Outcome]) -> Tally {
    let tally = Tally::of(outcomes);
    assert!(
        tally.failures.is_empty(),
        "{what}: {} of {} connections failed: {:?}",
        tally.failures.len(),
        outcomes.len(),
        tally.failures
    );
    tally
}

/// Skips kernel tests when asked to, else returns a topology with these pods, programmed in
/// `mode`.
fn topology(
    mode: Mode,
    purpose: &str,
    pods: &[(&str, &str)],
    clients: &[(&str, u8)],
) -> Option<Node> {
    if kproxy_testkit::kernel_tests_skipped() {
        return None;
    }
    let mut builder = Topology::builder(purpose);
    for (name, ip) in pods {
        builder = builder.pod(name, ip);
    }
    for (name, subnet) in clients {
        builder = builder.client(name, *subnet);
    }
    Some(Node {
        topology: builder.build(),
        mode,
    })
}
