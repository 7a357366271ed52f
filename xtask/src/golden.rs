//! `cargo xtask golden [--bless]`: golden files under `testdata/`.
//!
//! Golden files are reviewed output. `--bless` rewrites them from the current code; read
//! `git diff testdata/` before committing, and never bless just to make a test pass.

pub fn run(bless: bool) -> anyhow::Result<()> {
    let env: &[(&str, &str)] = if bless {
        &[("UPDATE_GOLDEN", "1")]
    } else {
        &[]
    };
    crate::run(
        "cargo",
        &["test", "-p", "kproxy", "--test", "integration", "golden::"],
        env,
    )?;
    if bless {
        crate::run("git", &["status", "--short", "testdata/"], &[])?;
        eprintln!("golden files rewritten: review them with `git diff testdata/`");
    }
    Ok(())
}
