//! Brings the kernel's kproxy tables to the desired ruleset with the fewest changes.
//!
//! # Brief overview
//!
//! * [`plan()`] compares the ruleset last applied (the syncer's mirror of the kernel) with the
//!   desired one and returns a [`Plan`]: an ordered list of [`Operation`]s that turns one into
//!   the other in a single transaction. Unchanged objects are not touched, so an endpoint change
//!   is a chain flush and one rule, whatever the number of Services.
//! * A plan is a value: tests inspect and count its operations, and its [`Display`] is the
//!   equivalent `nft -f` script, which is how the kernel tests apply it today.
//!
//! The netlink encoder that sends a plan as one batch (nftnl/mnl, no `nft` binary at runtime) is
//! the next step of this crate; it will consume the same [`Operation`]s.
//!
//! [`Display`]: std::fmt::Display
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod conntrack;
pub mod netlink;
mod plan;
mod sync;

pub use plan::{plan, Object, Operation, Plan};
pub use sync::{cleanup, SyncError, SyncReport, Syncer};
