//! Names that thousands of objects repeat, stored once.
//!
//! A cluster has a few dozen namespaces and a handful of port names (`http`, `metrics`, the
//! empty name of a single port) for tens of thousands of Services and their slices, and a
//! daemon keeps every translated object. Each distinct text is kept once, for the life of
//! the process: a few dozen bytes per namespace or port name the cluster ever had.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The shared copy of `text`.
pub fn shared(text: &str) -> Arc<str> {
    static TEXTS: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = texts.get(text) {
        return Arc::clone(shared);
    }
    let shared: Arc<str> = Arc::from(text);
    texts.insert(Arc::clone(&shared));
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_text() {
        let first = shared("kube-system");
        assert!(Arc::ptr_eq(&first, &shared(&String::from("kube-system"))));
        assert!(!Arc::ptr_eq(&first, &shared("default")));
        assert_eq!(&*shared(""), "");
    }
}
