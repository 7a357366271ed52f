//! kproxy's integration tests: one binary, one module per area (as ripgrep does).
//!
//! * `golden`: `dry-run` output against reviewed files in `testdata/`, and those rulesets
//!   loaded into a real kernel in a throwaway network namespace.
//! * `apply`: `kproxy apply`/`cleanup` over netlink, against `nft -f` of the same golden files.
//! * `cli`: input forms, output formats and flag errors.

mod apply;
mod cli;
mod golden;
mod support;
