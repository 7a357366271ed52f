//! `kproxy version`: what is running, for bug reports and rollouts.

use std::process::ExitCode;

/// The git commit, set by `build.rs` (`unknown` outside a git checkout, e.g. in a source
/// tarball).
const COMMIT: &str = env!("KPROXY_GIT_COMMIT");
/// The target triple and profile, set by `build.rs`.
const TARGET: &str = env!("KPROXY_BUILD_TARGET");
const PROFILE: &str = env!("KPROXY_BUILD_PROFILE");

pub fn run() -> anyhow::Result<ExitCode> {
    println!(
        "kproxy {} (commit {COMMIT}, {TARGET}, {PROFILE} build)",
        env!("CARGO_PKG_VERSION")
    );
    Ok(ExitCode::SUCCESS)
}
