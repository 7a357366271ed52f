//! The watcher's one error type.
//!
//! Watch failures are not errors of this type: they are retried with backoff and logged, and
//! the caches keep their last content meanwhile. Only starting can fail.

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node name is not a valid Kubernetes object name, so no Node could match it (and it
    /// would not be safe inside a field selector).
    #[error("invalid node name {name:?}: {reason}")]
    InvalidNodeName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`crate::WatcherHandle::start`] was called outside a Tokio runtime.
    #[error("the watcher must be started inside a Tokio runtime")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks a node name as the API server checks object names (an RFC 1123 subdomain).
pub(crate) fn check_node_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 253 {
        Some("longer than 253 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        Some("only lowercase letters, digits, '-' and '.' are allowed")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("must start and end with a letter or digit")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidNodeName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for good in ["node-a", "ip-10-0-0-1.ec2.internal", "n1"] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Node-A",
            "node,a",
            "node=a",
            "-node",
            "node.",
            &"a".repeat(254),
        ] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }
}
