//! README.md's quick start, as CI runs it: the commands in the first `sh` block under
//! "## Quick start", numbered by their `# N.` comments.
//!
//! `cargo xtask ci` runs command 1 in a fresh clone of HEAD ([`run_in_a_fresh_clone`]), and
//! tidy checks that `.ci/run` runs exactly command 2, so the README's commands cannot drift
//! from what CI proves.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};

/// The quick start's commands, in order: the lines of the first `sh` block under
/// "## Quick start" that are not comments (a trailing `\` continues a line). Each must follow
/// a `# N.` comment with its number.
pub fn quick_start(readme: &str) -> anyhow::Result<Vec<String>> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|line| line.trim() == "## Quick start")
        .context("README.md has no `## Quick start` section")?;
    lines
        .by_ref()
        .take_while(|line| !line.starts_with("## "))
        .find(|line| line.trim() == "```sh")
        .context("README.md's quick start has no ```sh block")?;
    let mut commands = Vec::new();
    let mut numbered = 0;
    let mut current = String::new();
    for line in lines.take_while(|line| line.trim() != "```") {
        let line = line.trim();
        if current.is_empty() {
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let number = comment.trim_start().split('.').next().unwrap_or_default();
                if number == (commands.len() + 1).to_string() {
                    numbered += 1;
                }
                continue;
            }
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
                ensure!(
                    numbered == commands.len(),
                    "README.md's quick start: `{}` has no `# {}.` comment before it",
                    commands.last().unwrap(),
                    commands.len()
                );
            }
        }
    }
    ensure!(
        current.is_empty(),
        "README.md's quick start ends inside a command"
    );
    ensure!(
        !commands.is_empty(),
        "README.md's quick start block has no commands"
    );
    Ok(commands)
}

/// The commands a shell script runs: its lines that are neither comments nor blank, with
/// `\` continuations joined and a trailing ` >/dev/null` kept.
pub fn script_commands(script: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// What `.ci/run` gets wrong about README.md's quick start: it must run command 2 (the test
/// command) exactly, as its last command, and no other cargo command.
pub fn check_ci_script(readme: &str, script: &str) -> Vec<String> {
    let test_command = match quick_start(readme) {
        Ok(commands) if commands.len() == 2 => commands[1].clone(),
        Ok(commands) => {
            return vec![format!(
                "README.md's quick start should have two commands (build and run, test), has {commands:?}"
            )]
        }
        Err(error) => return vec![format!("{error:#}")],
    };
    let commands = script_commands(script);
    let cargo: Vec<&String> = commands
        .iter()
        .filter(|c| c.split_whitespace().next() == Some("cargo"))
        .collect();
    let mut problems = Vec::new();
    if cargo != [&test_command] {
        problems.push(format!(
            ".ci/run should run README.md's test command `{test_command}` and no other cargo \
             command; it runs {cargo:?}"
        ));
    }
    if commands.last() != Some(&test_command) {
        problems.push(format!(
            ".ci/run should end with README.md's test command `{test_command}`"
        ));
    }
    problems
}

/// Clones HEAD into a new directory and runs README.md's command 1 there, as written, with the
/// current target directory (so dependencies are not built again). Checks that it prints a
/// ruleset.
///
/// The clone is `<target dir>/readme-clone`, removed before and after: a fixed path keeps the
/// workspace crates' artifact names (they hash the path) the same from run to run, so the
/// target directory does not grow by a set per run. Incremental compilation is off for the
/// same reason: a fresh checkout rebuilds the workspace crates anyway.
pub fn run_in_a_fresh_clone(root: &Path) -> anyhow::Result<()> {
    let head = output(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(root),
    )?;
    let head = head.trim();
    let dirty = output(
        Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(root),
    )?;
    if !dirty.trim().is_empty() {
        eprintln!("ci: the clone tests HEAD ({head}); uncommitted changes are not in it");
    }
    let target = target_dir(root);
    let clone = target.join("readme-clone");
    if clone.exists() {
        std::fs::remove_dir_all(&clone).context("removing an old clone")?;
    }
    let result = clone_and_run(root, head, &clone, &target);
    std::fs::remove_dir_all(&clone).ok();
    result
}

fn clone_and_run(root: &Path, head: &str, clone: &Path, target: &Path) -> anyhow::Result<()> {
    let root_text = root.to_str().context("the project root is not UTF-8")?;
    let clone_text = clone
        .to_str()
        .context("the temporary directory is not UTF-8")?;
    // --shared borrows the objects (no copy); the checkout is a fresh work tree of HEAD.
    crate::run(
        "git",
        &[
            "clone",
            "--quiet",
            "--shared",
            "--no-checkout",
            root_text,
            clone_text,
        ],
        &[],
    )?;
    crate::run(
        "git",
        &["-C", clone_text, "checkout", "--quiet", "--detach", head],
        &[],
    )?;
    let readme =
        std::fs::read_to_string(clone.join("README.md")).context("the clone's README.md")?;
    let commands = quick_start(&readme)?;
    let command = &commands[0];
    eprintln!("$ (in a clone of {head}) {command}");
    let out = Command::new("sh")
        .args(["-c", command])
        .current_dir(clone)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .with_context(|| format!("starting sh -c {command:?}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "README.md's command 1 failed in a fresh clone ({}):\n{stderr}",
            out.status
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.contains("table ip kproxy"),
        "README.md's command 1 printed no `table ip kproxy` ruleset:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "ci: README.md's command 1 works in a fresh clone ({} lines of ruleset)",
        stdout.lines().count()
    );
    Ok(())
}

/// The target directory cargo uses here: `$CARGO_TARGET_DIR`, else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        None => root.join("target"),
    }
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    ensure!(out.status.success(), "{command:?} failed: {out:?}");
    String::from_utf8(out.stdout).context("output is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# x\n\n## Quick start\n\nText.\n\n```sh\n# 1. Build\ncargo run -- a \\\n    b\n\n# 2. Test\ncargo xtask ci\n```\n\n```sh\nnot this\n```\n";

    #[test]
    fn the_quick_start_commands_in_order() {
        assert_eq!(
            quick_start(README).unwrap(),
            ["cargo run -- a b", "cargo xtask ci"]
        );
        let unnumbered = README.replace("# 2. Test", "# Test");
        assert!(quick_start(&unnumbered).is_err());
        assert!(quick_start("# x\n```sh\ncargo x\n```\n").is_err());
    }

    #[test]
    fn the_ci_script_must_run_exactly_the_test_command() {
        let good = "#!/bin/sh\n# comment\napt-get install \\\n  a b\n\ncargo xtask ci\n";
        assert_eq!(check_ci_script(README, good), Vec::<String>::new());
        for bad in [
            "cargo xtask ci --fast\n",
            "cargo xtask ci\necho done\n",
            "cargo build\ncargo xtask ci\n",
            "apt-get install a\n",
        ] {
            assert!(!check_ci_script(README, bad).is_empty(), "{bad:?}");
        }
    }
}
