//! Kubernetes objects → validated specs. The only module that sees k8s-openapi types.
//!
//! Each function takes one object and either returns its spec, says why kproxy ignores the
//! object ([`Skip`]), or lists every invalid field. Validation is strict where a wrong value would
//! produce wrong or unloadable rules (addresses, ports, CIDRs, timeouts, names) and lenient
//! elsewhere, so `kubectl get -o yaml` output from any cluster version is accepted.

mod check;
mod node;
mod service;
mod slice;

use std::fmt;

pub use node::node;
pub use service::service;
pub use slice::endpoint_slice;

#[cfg(test)]
mod tests;

use crate::FieldError;

/// The label that hands a Service (and its slices) to a proxy other than the default one.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label the EndpointSlice controller puts on slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The Node label holding the node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Why a valid object produces no rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// `spec.clusterIP: None`, or an EndpointSlice labelled as headless.
    Headless,
    /// `type: ExternalName`: DNS only.
    ExternalName,
    /// Labelled for another proxy (`service.kubernetes.io/service-proxy-name`).
    OtherProxy(String),
    /// No ClusterIP allocated yet (e.g. a manifest written for `kubectl apply`).
    NoClusterIp,
    /// An EndpointSlice without the `kubernetes.io/service-name` label.
    NoServiceName,
    /// An EndpointSlice of `addressType: FQDN`.
    Fqdn,
}

impl Skip {
    /// True when a person probably did not mean it (logged as a warning, not debug).
    pub fn is_surprising(&self) -> bool {
        matches!(self, Skip::NoClusterIp | Skip::NoServiceName)
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Headless => f.write_str("headless"),
            Skip::ExternalName => f.write_str("type ExternalName"),
            Skip::OtherProxy(proxy) => write!(f, "handled by service proxy {proxy:?}"),
            Skip::NoClusterIp => f.write_str("no spec.clusterIP allocated"),
            Skip::NoServiceName => write!(f, "no {SERVICE_NAME_LABEL} label"),
            Skip::Fqdn => f.write_str("addressType FQDN"),
        }
    }
}

/// The outcome of translating one object.
pub type Translation<T> = Result<Result<T, Skip>, Vec<FieldError>>;
