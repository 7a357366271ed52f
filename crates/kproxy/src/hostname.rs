//! The default node name: the host name, lower-cased, as kube-proxy does.

use anyhow::Context;

/// Reads the kernel's host name (of this UTS namespace).
pub fn node_name() -> anyhow::Result<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name (give --hostname-override)")?;
    let name = raw.trim().to_lowercase();
    anyhow::ensure!(
        !name.is_empty(),
        "the host name is empty (give --hostname-override)"
    );
    Ok(name)
}

/// The node name the flags give: `--hostname-override` (trimmed, lower-cased) or the host name.
pub fn for_flags(flags: &crate::cli::ProxyFlags) -> anyhow::Result<String> {
    match &flags.hostname_override {
        Some(name) => Ok(name.trim().to_lowercase()),
        None => node_name(),
    }
}
