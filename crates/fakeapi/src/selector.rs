//! Label and field selectors, parsed from query parameters as the API server reads them.
//!
//! Label selectors: comma-separated requirements `key`, `!key`, `key=value`, `key==value`,
//! `key!=value`, `key in (a,b)` and `key notin (a,b)`. Field selectors: `metadata.name` and
//! `metadata.namespace` with `=`, `==` or `!=` (the fields every resource supports); any other
//! field is refused, as the real server refuses fields a resource does not index.

use serde_json::Value;

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    /// Selects everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Exists(String),
    DoesNotExist(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    /// Parses a `labelSelector` value; the message says what is wrong.
    pub(crate) fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(LabelRequirement::parse(part)?);
        }
        Ok(LabelSelector(requirements))
    }

    /// True when the object's `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::DoesNotExist(key) => label(key).is_none(),
            LabelRequirement::Equals(key, value) => label(key) == Some(value.as_str()),
            LabelRequirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            LabelRequirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            LabelRequirement::NotIn(key, values) => {
                !label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
        })
    }
}

impl LabelRequirement {
    fn parse(part: &str) -> Result<LabelRequirement, String> {
        if let Some(key) = part.strip_prefix('!') {
            return Ok(LabelRequirement::DoesNotExist(label_key(key)?));
        }
        if let Some((key, value)) = part.split_once("!=") {
            return Ok(LabelRequirement::NotEquals(
                label_key(key)?,
                label_value(value)?,
            ));
        }
        if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            return Ok(LabelRequirement::Equals(
                label_key(key)?,
                label_value(value)?,
            ));
        }
        if let Some((key, set)) = split_set_operator(part, " notin ") {
            return Ok(LabelRequirement::NotIn(label_key(key)?, value_set(set)?));
        }
        if let Some((key, set)) = split_set_operator(part, " in ") {
            return Ok(LabelRequirement::In(label_key(key)?, value_set(set)?));
        }
        Ok(LabelRequirement::Exists(label_key(part)?))
    }
}

fn split_set_operator<'a>(part: &'a str, operator: &str) -> Option<(&'a str, &'a str)> {
    part.split_once(operator)
}

/// Splits on commas that are not inside `( … )`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn label_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn label_value(value: &str) -> Result<String, String> {
    let value = value.trim();
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

fn value_set(set: &str) -> Result<Vec<String>, String> {
    let inner = set
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised value set, got {set:?}"))?;
    inner.split(',').map(label_value).collect()
}

/// A parsed `fieldSelector` on `metadata.name` / `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<FieldRequirement>);

impl FieldSelector {
    /// Selects everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: Field,
    value: String,
    negated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    /// Parses a `fieldSelector` value; the message says what is wrong.
    pub(crate) fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, false)
            } else {
                return Err(format!("invalid field selector requirement {part:?}"));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(format!("field label not supported: {other}")),
            };
            requirements.push(FieldRequirement {
                field,
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(FieldSelector(requirements))
    }

    /// True when the object's fields satisfy every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|requirement| {
            let pointer = match requirement.field {
                Field::Name => "/metadata/name",
                Field::Namespace => "/metadata/namespace",
            };
            let actual = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == requirement.value) != requirement.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn kproxy_selector_excludes_headless_and_other_proxies() {
        let selector = LabelSelector::parse(
            "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name",
        )
        .expect("valid selector");
        assert!(selector.matches(&labelled(json!({"app": "web"}))));
        assert!(selector.matches(&json!({"metadata": {"name": "no-labels"}})));
        assert!(!selector.matches(&labelled(json!({"service.kubernetes.io/headless": ""}))));
        assert!(!selector.matches(&labelled(
            json!({"service.kubernetes.io/service-proxy-name": "other"})
        )));
    }

    #[test]
    fn equality_set_and_existence_requirements() {
        let object = labelled(json!({"app": "web", "tier": "front"}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("app", true),
            ("missing", false),
            ("tier in (front,back)", true),
            ("tier notin (front,back)", false),
            ("app=web,tier in (back)", false),
            ("", true),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).expect(text);
            assert_eq!(selector.matches(&object), expected, "{text}");
        }
        assert!(LabelSelector::parse("app=(x").is_err());
    }

    #[test]
    fn field_selectors_on_name_and_namespace() {
        let object = labelled(json!({}));
        let yes = FieldSelector::parse("metadata.name=a,metadata.namespace==ns").expect("valid");
        assert!(yes.matches(&object));
        let no = FieldSelector::parse("metadata.name!=a").expect("valid");
        assert!(!no.matches(&object));
        let err = FieldSelector::parse("spec.nodeName=x").expect_err("unsupported field");
        assert_eq!(err, "field label not supported: spec.nodeName");
    }
}
