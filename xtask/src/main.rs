//! Project automation, run as `cargo xtask <task>` (see matklad/cargo-xtask).
//!
//! Every task is a module; `main` only dispatches. Tasks shell out to cargo and the system
//! tools the tests need; they add no dependencies beyond anyhow.

mod bench;
mod ci;
mod golden;
mod readme;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci                 everything CI checks: tidy, fmt, clippy, all tests (kernel tests need root),
                     README.md's command 1 in a fresh clone of HEAD
  golden [--bless]   run the golden tests; --bless rewrites testdata/ (review with git diff)
  bench [ARGS]       kproxy at scale (root): compile, cold and partial apply, dataplane and
                     daemon at 1k/10k/50k Services; results and plots to docs/bench/.
                     --smoke: ~500 Services in under a minute (CI); --help: every option
  readme             README.md's quick-start command 1 in a fresh clone of HEAD (part of ci)
  tidy               source hygiene checks, and .ci/run against README.md's test command";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    std::env::set_current_dir(project_root()).context("entering the project root")?;
    match args.as_slice() {
        ["ci"] => ci::run(),
        ["golden"] => golden::run(false),
        ["golden", "--bless"] => golden::run(true),
        ["bench", rest @ ..] => bench::run(rest),
        ["tidy"] => tidy::run(),
        ["readme"] => readme::run_in_a_fresh_clone(&project_root()),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown task {args:?}\n\n{USAGE}"),
    }
}

/// The workspace root, from this crate's manifest directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Runs a command, echoing it, and fails if it fails.
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
