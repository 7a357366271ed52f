//! Turns a parsed YAML value into JSON, the data model Kubernetes uses.
//!
//! Objects are decoded from `serde_json::Value` because that is what the
//! API server itself accepts: YAML-only features are resolved here, the way
//! `kubectl` does before sending a manifest.

use serde_json::{Map, Number, Value as Json};
use serde_yaml::Value as Yaml;

use crate::path::Segment;

/// A YAML value with no JSON equivalent, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unrepresentable {
    /// Path from the converted value to the offending one.
    pub(crate) path: Vec<Segment>,
    /// What cannot be represented.
    pub(crate) message: String,
}

/// Converts `value` to JSON.
///
/// Scalar mapping keys become strings (`80: x` → `"80": x`) as in kubectl;
/// tags are dropped, keeping the tagged value. Merge keys (`<<`) must have
/// been applied already. Mapping or sequence keys and non-finite floats have
/// no JSON form and are errors.
pub(crate) fn to_json(value: Yaml) -> Result<Json, Unrepresentable> {
    convert(value).map_err(|mut error| {
        // Segments were pushed while unwinding, innermost first.
        error.path.reverse();
        error
    })
}

fn convert(value: Yaml) -> Result<Json, Unrepresentable> {
    Ok(match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(b),
        Yaml::Number(n) => Json::Number(number(&n)?),
        Yaml::String(s) => Json::String(s),
        Yaml::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                out.push(convert(item).map_err(|e| e.inside(Segment::Index(index)))?);
            }
            Json::Array(out)
        }
        Yaml::Mapping(mapping) => {
            let mut out = Map::with_capacity(mapping.len());
            for (key, value) in mapping {
                let key = key_string(key)?;
                let value = convert(value).map_err(|e| e.inside(Segment::Key(key.clone())))?;
                out.insert(key, value);
            }
            Json::Object(out)
        }
        Yaml::Tagged(tagged) => convert(tagged.value)?,
    })
}

fn number(n: &serde_yaml::Number) -> Result<Number, Unrepresentable> {
    if let Some(i) = n.as_i64() {
        Ok(Number::from(i))
    } else if let Some(u) = n.as_u64() {
        Ok(Number::from(u))
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        Number::from_f64(f).ok_or_else(|| Unrepresentable {
            path: Vec::new(),
            message: format!("number {n} cannot be represented in JSON"),
        })
    }
}

fn key_string(key: Yaml) -> Result<String, Unrepresentable> {
    match key {
        Yaml::String(s) => Ok(s),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Null => Ok("null".to_owned()),
        Yaml::Tagged(tagged) => key_string(tagged.value),
        Yaml::Sequence(_) | Yaml::Mapping(_) => Err(Unrepresentable {
            path: Vec::new(),
            message: "mapping key is a sequence or mapping, which JSON cannot represent".to_owned(),
        }),
    }
}

impl Unrepresentable {
    fn inside(mut self, segment: Segment) -> Self {
        self.path.push(segment);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::render;

    fn yaml(text: &str) -> Yaml {
        serde_yaml::from_str(text).unwrap_or(Yaml::Null)
    }

    #[test]
    fn converts_nested_values() {
        let json = to_json(yaml("a: [1, -2, 1.5, true, null, x]\nb: {c: d}\n"));
        assert_eq!(
            json,
            Ok(serde_json::json!({"a": [1, -2, 1.5, true, null, "x"], "b": {"c": "d"}}))
        );
    }

    #[test]
    fn scalar_keys_become_strings_and_tags_are_dropped() {
        let json = to_json(yaml("80: http\ntrue: yes\nport: !custom 8080\n"));
        assert_eq!(
            json,
            Ok(serde_json::json!({"80": "http", "true": "yes", "port": 8080}))
        );
    }

    #[test]
    fn large_unsigned_numbers_survive() {
        let json = to_json(yaml("n: 18446744073709551615\n"));
        assert_eq!(json, Ok(serde_json::json!({"n": u64::MAX})));
    }

    #[test]
    fn non_finite_float_is_an_error_with_path() {
        let error = to_json(yaml("spec:\n  ports:\n  - port: .inf\n")).err();
        let error = error.map(|e| (render(&e.path), e.message));
        assert_eq!(
            error,
            Some((
                "spec.ports[0].port".to_owned(),
                "number .inf cannot be represented in JSON".to_owned()
            ))
        );
    }

    #[test]
    fn complex_key_is_an_error() {
        let error = to_json(yaml("a:\n  ? [1, 2]\n  : x\n")).err();
        assert_eq!(error.map(|e| render(&e.path)), Some("a".to_owned()));
    }
}
