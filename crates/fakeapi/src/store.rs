//! The object store: current objects, the change history, and one global resourceVersion.
//!
//! Like etcd behind a real API server, every write of any kind takes the next number of one
//! counter, and the history of changes is kept until it is compacted. A watch or paginated list
//! from a resourceVersion older than the compaction point gets `410 Gone` ("Expired").

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::{ApplyError, Resource};

/// Where an object lives: resource, namespace (empty for cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) resource: Resource,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl Key {
    /// The key of `namespace/name`; cluster-scoped resources ignore the namespace.
    pub(crate) fn of(resource: Resource, namespace: &str, name: &str) -> Key {
        Key {
            resource,
            namespace: if resource.namespaced() {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }
}

/// One write: the object before and after it (`None`: absent).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) key: Key,
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<Value>,
}

/// More history than this is compacted automatically, so long benchmarks stay bounded.
const HISTORY_LIMIT: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct Store {
    /// The last resourceVersion handed out (0: nothing written yet).
    pub(crate) rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Changes with `rv > compacted`, oldest first.
    history: VecDeque<Change>,
    /// Watches and lists from a resourceVersion below this are expired.
    pub(crate) compacted: u64,
    uids: u64,
}

impl Store {
    /// Creates or updates an object; returns it as stored. An update that changes nothing
    /// (ignoring `metadata.resourceVersion`) is a no-op, as on the real server.
    pub(crate) fn apply(&mut self, object: Value) -> Result<Value, ApplyError> {
        let Value::Object(mut object) = object else {
            return Err(ApplyError::NotAnObject);
        };
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let resource =
            Resource::from_kind(kind, api_version).ok_or_else(|| ApplyError::UnknownKind {
                kind: kind.to_string(),
                api_version: api_version.to_string(),
            })?;
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(metadata) = metadata else {
            return Err(ApplyError::MissingName);
        };
        let name = match metadata.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => return Err(ApplyError::MissingName),
        };
        let namespace = if resource.namespaced() {
            let namespace = metadata
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
                .unwrap_or("default")
                .to_string();
            metadata.insert("namespace".into(), Value::String(namespace.clone()));
            namespace
        } else {
            metadata.remove("namespace");
            String::new()
        };
        let key = Key {
            resource,
            namespace,
            name,
        };
        let before = self.objects.get(&key).cloned();
        let existing_meta = before.as_ref().and_then(|b| b.get("metadata"));
        for field in ["uid", "creationTimestamp"] {
            if metadata.get(field).is_none_or(Value::is_null) {
                let value = match existing_meta.and_then(|m| m.get(field)) {
                    Some(value) => value.clone(),
                    None if field == "uid" => {
                        self.uids += 1;
                        Value::String(format!("00000000-0000-4000-8000-{:012x}", self.uids))
                    }
                    None => Value::String(rfc3339_now()),
                };
                metadata.insert(field.into(), value);
            }
        }
        if let Some(before) = &before {
            let mut unchanged = Value::Object(object.clone());
            set_resource_version(&mut unchanged, resource_version_of(before));
            if &unchanged == before {
                return Ok(unchanged);
            }
        }
        self.rv += 1;
        let mut after = Value::Object(object);
        set_resource_version(&mut after, self.rv);
        self.objects.insert(key.clone(), after.clone());
        self.record(key, before, Some(after.clone()));
        Ok(after)
    }

    /// Deletes an object; returns its last state (with the deletion's resourceVersion).
    pub(crate) fn delete(&mut self, key: &Key) -> Option<Value> {
        let before = self.objects.remove(key)?;
        self.rv += 1;
        let mut gone = before.clone();
        set_resource_version(&mut gone, self.rv);
        self.record(key.clone(), Some(before), None);
        Some(gone)
    }

    fn record(&mut self, key: Key, before: Option<Value>, after: Option<Value>) {
        self.history.push_back(Change {
            rv: self.rv,
            key,
            before,
            after,
        });
        if self.history.len() > HISTORY_LIMIT {
            if let Some(oldest) = self.history.pop_front() {
                self.compacted = oldest.rv;
            }
        }
    }

    /// Forgets all history: only the current state remains readable.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// The current object at `key`.
    pub(crate) fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// All objects of one resource as they were at `rv`, in key order; `None` when `rv` is
    /// older than the retained history.
    pub(crate) fn objects_at(&self, resource: Resource, rv: u64) -> Option<BTreeMap<&Key, &Value>> {
        if rv < self.compacted {
            return None;
        }
        // Borrowed, not cloned: a paginated list asks for this once per page, and deep copies
        // of every object per page made listing 10,000 objects take seconds.
        let mut objects: BTreeMap<&Key, &Value> = self.current(resource).collect();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if change.key.resource != resource {
                continue;
            }
            match &change.before {
                Some(before) => objects.insert(&change.key, before),
                None => objects.remove(&change.key),
            };
        }
        Some(objects)
    }

    /// Changes with `rv > after`, oldest first; `None` when some of them were compacted away.
    pub(crate) fn changes_since(&self, after: u64) -> Option<impl Iterator<Item = &Change>> {
        if after < self.compacted {
            return None;
        }
        let start = self.history.partition_point(|c| c.rv <= after);
        Some(self.history.range(start..))
    }

    /// The objects of one resource at `rv` whose `(namespace, name)` sorts after `after`, in
    /// key order; `None` when `rv` is older than the retained history. A list at the current
    /// resourceVersion (nearly every page) walks the store from the continue key on, instead of
    /// rebuilding the whole list for every page.
    pub(crate) fn objects_after<'a>(
        &'a self,
        resource: Resource,
        rv: u64,
        after: Option<&(String, String)>,
    ) -> Option<Box<dyn Iterator<Item = (&'a Key, &'a Value)> + 'a>> {
        if rv != self.rv {
            let after = after.cloned();
            let objects = self.objects_at(resource, rv)?;
            return Some(Box::new(objects.into_iter().filter(move |(key, _)| {
                after
                    .as_ref()
                    .is_none_or(|(ns, name)| (&key.namespace, &key.name) > (ns, name))
            })));
        }
        let start = match after {
            Some((namespace, name)) => Bound::Excluded(Key {
                resource,
                namespace: namespace.clone(),
                name: name.clone(),
            }),
            None => Bound::Included(Key {
                resource,
                namespace: String::new(),
                name: String::new(),
            }),
        };
        Some(Box::new(
            self.objects
                .range((start, Bound::Unbounded))
                .take_while(move |(key, _)| key.resource == resource),
        ))
    }

    /// Every current object of one resource, in key order.
    pub(crate) fn current(&self, resource: Resource) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects
            .iter()
            .filter(move |(key, _)| key.resource == resource)
    }
}

/// `metadata.resourceVersion` as a number (0 when absent or not a number).
pub(crate) fn resource_version_of(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// The current time as `2006-01-02T15:04:05Z`.
fn rfc3339_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, port: u16) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "ns"},
               "spec": {"ports": [{"port": port}]}})
    }

    #[test]
    fn one_counter_for_every_write_and_noop_updates_keep_it() {
        let mut store = Store::default();
        let a = store.apply(service("a", 80)).expect("stored");
        assert_eq!(resource_version_of(&a), 1);
        assert!(a.pointer("/metadata/uid").is_some());
        assert!(a.pointer("/metadata/creationTimestamp").is_some());
        let node = store
            .apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}))
            .expect("stored");
        assert_eq!(resource_version_of(&node), 2);
        let same = store.apply(service("a", 80)).expect("stored");
        assert_eq!(resource_version_of(&same), 1, "no-op update");
        let changed = store.apply(service("a", 81)).expect("stored");
        assert_eq!(resource_version_of(&changed), 3);
        assert_eq!(changed.pointer("/metadata/uid"), a.pointer("/metadata/uid"));
        assert_eq!(store.rv, 3);
    }

    #[test]
    fn past_states_are_rebuilt_from_history_until_compacted() {
        let mut store = Store::default();
        store.apply(service("a", 80)).expect("stored");
        store.apply(service("b", 80)).expect("stored");
        let key = |name: &str| Key {
            resource: Resource::Services,
            namespace: "ns".into(),
            name: name.into(),
        };
        store.delete(&key("a")).expect("existed");
        store.apply(service("b", 90)).expect("stored");
        let at2 = store.objects_at(Resource::Services, 2).expect("retained");
        assert_eq!(at2.len(), 2);
        assert_eq!(
            at2[&key("b")].pointer("/spec/ports/0/port"),
            Some(&json!(80))
        );
        let now = store.objects_at(Resource::Services, 4).expect("retained");
        assert_eq!(
            now.keys().copied().cloned().collect::<Vec<_>>(),
            vec![key("b")]
        );
        store.compact();
        assert!(store.objects_at(Resource::Services, 2).is_none());
        assert!(store.changes_since(3).is_none());
        assert_eq!(store.changes_since(4).map(Iterator::count), Some(0));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
