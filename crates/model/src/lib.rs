//! The desired state of Service proxying on one node.
//!
//! kproxy's data flows one way: Kubernetes objects → this model → the rule compiler → the kernel.
//! This crate owns the middle step, and it is pure: no I/O, no async, no global state, so every
//! decision about *which* endpoints a packet may reach is testable without a cluster or a kernel.
//!
//! # Brief overview
//!
//! * [`k8s`] turns one Kubernetes object (`Service`, `EndpointSlice`, `Node`) into a validated
//!   spec ([`ServiceSpec`], [`SliceSpec`], [`NodeInfo`]), or into a [`FieldError`] that names the
//!   object and the field. It is the only module that sees k8s-openapi types.
//! * [`ProxyState::build`] merges the specs for one node: slices are joined to their Service
//!   port by port name and protocol, duplicate endpoints are removed, and [`endpoint::select`]
//!   applies readiness fallback, topology hints and traffic policies.
//! * The result is a sorted list of [`ServicePort`]s, each with one [`FamilyPort`] per IP family,
//!   which is everything the compiler needs and nothing more.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod endpoint;
mod error;
pub mod interned;
pub mod k8s;
mod node;
mod service;
mod state;

pub use endpoint::{
    Endpoint, EndpointConditions, EndpointSets, NodeName, SliceEndpoint, TopologyHints,
};
pub use error::{FieldError, ObjectKind, ObjectRef};
pub use node::NodeInfo;
pub use service::{
    FamilyPort, IpFamily, OutsideAddresses, PortSpec, Protocol, ServicePort, ServicePortName,
    ServiceSpec, SessionAffinity, SlicePort, SliceSpec, TrafficPolicy,
};
pub use state::ProxyState;
