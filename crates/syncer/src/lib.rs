//! Brings the kernel's kproxy tables to the desired ruleset with the fewest changes.
//!
//! # Brief overview
//!
//! * [`plan()`] compares the ruleset last applied (the syncer's mirror of the kernel) with the
//!   desired one and returns a [`Plan`]: an ordered list of [`Operation`]s that turns one into
//!   the other in a single transaction. Unchanged objects are not touched, so an endpoint change
//!   is a chain flush and one rule, whatever the number of Services.
//! * A plan is a value: tests inspect and count its operations, and its [`Display`] is the
//!   equivalent `nft -f` script (for people; the kernel never sees text).
//! * [`netlink`] sends a plan as one nf_tables batch (rules and set elements are written
//!   directly, tables, chains and sets by libnftnl, one `sendmsg` sends them; all `unsafe`
//!   code is in `netlink/ffi.rs`) and reads kproxy's
//!   tables back into the IR, so a restarted kproxy adopts its rules and a full resync repairs
//!   drift.
//! * [`plan_change()`] does the same for a partial sync from the compiler's
//!   [`RulesetChange`](kproxy_compiler::RulesetChange): only the objects the change touches
//!   are compared, so the plan costs what the change costs.
//! * [`Syncer`] ties them together: a mirror of what was applied, one transaction per sync,
//!   a read-back after any failure. [`conntrack`] clears UDP/SCTP flows to endpoints that no
//!   longer serve.
//!
//! [`Display`]: std::fmt::Display
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod conntrack;
pub mod iptables;
pub mod netlink;
mod nlmsg;
mod plan;
mod sync;

pub use plan::{plan, plan_change, Object, Operation, Plan};
pub use sync::{
    cleanup, cleanup_kube_proxy_tables, SyncError, SyncReport, Syncer, KUBE_PROXY_TABLE,
};
