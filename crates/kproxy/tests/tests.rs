//! kproxy's integration tests: one binary, one module per area (as ripgrep does).
//!
//! * `golden`: `dry-run` output against reviewed files in `testdata/`, and those rulesets
//!   loaded into a real kernel in a throwaway network namespace.
//! * `apply`: `kproxy apply`/`cleanup` over netlink, against `nft -f` of the same golden files.
//! * `cli`: input forms, output formats and flag errors.
//! * `manifests`: `manifests/` and the `Dockerfile` checked against the binary and the watcher
//!   (typed objects, RBAC, probe ports, flags, runtime libraries).
//! * `run`: the `kproxy run` daemon against the fake API server, in a throwaway namespace.
//! * `trace_golden`: `kproxy trace` against reviewed traces in `testdata/trace`, and
//!   `kproxy dry-run --output dot` against reviewed graphs in `testdata/graph`.
//! * `traffic`: real TCP and UDP connections through rules that `kproxy apply` programmed, in a
//!   throwaway topology of network namespaces (a node, pods, external clients).

mod apply;
mod cli;
mod golden;
mod manifests;
mod run;
mod support;
mod trace_golden;
mod traffic;
