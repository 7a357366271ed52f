//! Names that thousands of objects repeat, stored once.
//!
//! A cluster has a few dozen namespaces and a handful of port names (`http`, `metrics`, the
//! empty name of a single port) for tens of thousands of Services and their slices, and a
//! daemon keeps every translated object. Each distinct text is kept once, for the life of
//! the process: a few dozen bytes per namespace or port name the cluster ever had.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The shared copy of `text`.
pub fn shared(text: &str) -> Arc<str> {
    static TEXTS: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    intern(&TEXTS, text, |text| Arc::from(text))
}

/// The copy of `value` in `copies`, made with `make` and kept there if it is new: the one
/// interner behind [`shared`], [`crate::NodeName`] and the places of slice endpoints.
pub(crate) fn intern<T, Q>(
    copies: &OnceLock<Mutex<HashSet<T>>>,
    value: &Q,
    make: impl FnOnce(&Q) -> T,
) -> T
where
    T: Borrow<Q> + Clone + Eq + Hash,
    Q: Eq + Hash + ?Sized,
{
    let mut copies = copies
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = copies.get(value) {
        return shared.clone();
    }
    let shared = make(value);
    copies.insert(shared.clone());
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
