//! Field validation helpers that collect every problem of one object.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::{FieldError, ObjectKind, ObjectRef, Protocol};

/// Collects the field errors of one object.
pub(super) struct Check {
    object: ObjectRef,
    errors: Vec<FieldError>,
}

impl Check {
    /// Starts checking an object; validates its name and namespace.
    pub(super) fn new(
        kind: ObjectKind,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> Check {
        let namespaced = kind != ObjectKind::Node;
        let namespace = if namespaced {
            meta.namespace
                .clone()
                .unwrap_or_else(|| "default".to_string())
        } else {
            String::new()
        };
        let name = meta.name.clone().unwrap_or_default();
        let mut check = Check {
            object: ObjectRef {
                kind,
                namespace,
                name,
            },
            errors: Vec::new(),
        };
        if check.object.name.is_empty() {
            check.fail("metadata.name", "missing");
        } else if !is_dns_subdomain(&check.object.name) {
            let msg = format!("{:?} is not a valid DNS subdomain name", check.object.name);
            check.fail("metadata.name", msg);
        }
        if namespaced && !is_dns_label(&check.object.namespace) {
            let msg = format!("{:?} is not a valid DNS label", check.object.namespace);
            check.fail("metadata.namespace", msg);
        }
        check
    }

    pub(super) fn object(&self) -> &ObjectRef {
        &self.object
    }

    pub(super) fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        });
    }

    /// Returns `value` if no field failed, else every failure.
    pub(super) fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }

    pub(super) fn ip(&mut self, field: impl Into<String>, text: &str) -> Option<IpAddr> {
        match text.trim().parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.fail(field, format!("{text:?} is not an IP address"));
                None
            }
        }
    }

    pub(super) fn cidr(&mut self, field: impl Into<String>, text: &str) -> Option<IpNet> {
        match text.trim().parse::<IpNet>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                self.fail(field, format!("{text:?} is not a CIDR"));
                None
            }
        }
    }

    /// A port number in 1..=65535.
    pub(super) fn port(&mut self, field: impl Into<String>, value: i32) -> Option<u16> {
        match u16::try_from(value) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                self.fail(field, format!("{value} is out of range 1..=65535"));
                None
            }
        }
    }

    /// A node port: 0 or absent means none.
    pub(super) fn optional_port(
        &mut self,
        field: impl Into<String>,
        value: Option<i32>,
    ) -> Option<u16> {
        match value {
            None | Some(0) => None,
            Some(value) => self.port(field, value),
        }
    }

    pub(super) fn protocol(
        &mut self,
        field: impl Into<String>,
        value: Option<&str>,
    ) -> Option<Protocol> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            other => {
                self.fail(
                    field,
                    format!("unsupported protocol {other:?} (TCP, UDP or SCTP)"),
                );
                None
            }
        }
    }

    /// A port name: empty, or an IANA service name (what the API server enforces).
    pub(super) fn port_name(&mut self, field: impl Into<String>, name: Option<&str>) -> Arc<str> {
        let name = name.unwrap_or_default();
        let valid = name.is_empty()
            || (name.len() <= 15
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && name.bytes().any(|b| b.is_ascii_lowercase())
                && !name.starts_with('-')
                && !name.ends_with('-')
                && !name.contains("--"));
        if !valid {
            self.fail(
                field,
                format!("{name:?} is not a valid port name (IANA service name)"),
            );
        }
        crate::interned::shared(name)
    }
}

/// RFC 1123 label: what namespaces must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: the loosest name rule of the kinds kproxy reads.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_server_rules() {
        assert!(is_dns_label("kube-system"));
        assert!(!is_dns_label("Kube"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("node-1.example.com"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain("with space"));
    }
}
