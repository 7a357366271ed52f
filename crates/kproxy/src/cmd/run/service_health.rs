//! healthCheckNodePort servers: for each LoadBalancer Service with `externalTrafficPolicy:
//! Local`, an HTTP server on `0.0.0.0:<healthCheckNodePort>` that tells the cloud load balancer
//! whether this node should get the Service's traffic, as kube-proxy's does: 200 when the node
//! has a local ready endpoint and the proxy is healthy, else 503.
//!
//! The servers follow the Services: [`ServiceHealthServers::reconcile`] runs after each
//! successful sync and opens, moves and closes them.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use kproxy_model::ProxyState;
use kproxy_watcher::Snapshot;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::health::Health;
use super::http::{self, Request, Response};

/// One Service's health check, as the last sync left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCheck {
    pub port: u16,
    pub namespace: String,
    pub name: String,
    /// Ready endpoints on this node (distinct addresses, every slice and port of the Service).
    pub local_endpoints: usize,
}

/// The health checks `state` asks for (the model sets a port's `health_check_node_port` only
/// for LoadBalancer Services with `externalTrafficPolicy: Local`), one per Service, with the
/// local ready endpoints counted from `snapshot`'s EndpointSlices.
pub fn wanted(state: &ProxyState, snapshot: &Snapshot, node_name: &str) -> Vec<ServiceCheck> {
    let mut seen = BTreeSet::new();
    let mut checks = Vec::new();
    for port in &state.ports {
        let Some(check_port) = port.health_check_node_port else {
            continue;
        };
        let name = &port.name;
        if !seen.insert((&*name.namespace, &*name.service)) {
            continue;
        }
        checks.push(ServiceCheck {
            port: check_port,
            namespace: name.namespace.to_string(),
            name: name.service.to_string(),
            local_endpoints: 0,
        });
    }
    if checks.is_empty() {
        return checks;
    }
    let mut local: HashMap<(&str, &str), BTreeSet<IpAddr>> = HashMap::new();
    for slice in &snapshot.endpoint_slices {
        let spec = &slice.spec;
        let ready_here = spec
            .endpoints
            .iter()
            .filter(|e| e.node_name() == Some(node_name) && e.conditions.ready)
            .map(|e| e.addr);
        local
            .entry((&spec.namespace, &spec.service))
            .or_default()
            .extend(ready_here);
    }
    for check in &mut checks {
        check.local_endpoints = local
            .get(&(check.namespace.as_str(), check.name.as_str()))
            .map_or(0, BTreeSet::len);
    }
    checks
}

/// What a server answers from.
#[derive(Debug)]
struct Served {
    namespace: String,
    name: String,
    local_endpoints: usize,
}

struct Server {
    served: Arc<Mutex<Served>>,
    task: JoinHandle<()>,
}

/// The open servers, by port.
pub struct ServiceHealthServers {
    health: Arc<Health>,
    address: IpAddr,
    servers: HashMap<u16, Server>,
}

impl ServiceHealthServers {
    /// No servers yet; they will listen on every IPv4 address.
    pub fn new(health: Arc<Health>) -> ServiceHealthServers {
        ServiceHealthServers {
            health,
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            servers: HashMap::new(),
        }
    }

    /// Makes the open servers those of `checks`: closes servers whose port no Service uses
    /// any more, updates the others, opens new ones. A port that cannot be bound is logged
    /// and tried again at the next reconcile.
    pub async fn reconcile(&mut self, checks: Vec<ServiceCheck>) {
        let mut wanted: HashMap<u16, ServiceCheck> = HashMap::new();
        for check in checks {
            if let Some(first) = wanted.get(&check.port) {
                tracing::warn!(
                    port = check.port,
                    "healthCheckNodePort of {}/{} is also {}/{}'s: serving the latter",
                    check.namespace,
                    check.name,
                    first.namespace,
                    first.name
                );
                continue;
            }
            wanted.insert(check.port, check);
        }
        let gone: Vec<u16> = self
            .servers
            .keys()
            .filter(|port| !wanted.contains_key(port))
            .copied()
            .collect();
        for port in gone {
            let server = self.servers.remove(&port).expect("listed");
            server.task.abort();
            // The listener closes when the aborted task is dropped: wait, so that the port is
            // free if another Service takes it now.
            let _ = server.task.await;
            tracing::info!(port, "healthCheckNodePort server closed");
        }
        for (port, check) in wanted {
            if let Some(server) = self.servers.get(&port) {
                let mut served = server.served.lock().unwrap_or_else(PoisonError::into_inner);
                served.namespace = check.namespace;
                served.name = check.name;
                served.local_endpoints = check.local_endpoints;
                continue;
            }
            let addr = SocketAddr::new(self.address, port);
            let listener = match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(
                        %addr,
                        %error,
                        "cannot serve the healthCheckNodePort of {}/{}",
                        check.namespace,
                        check.name
                    );
                    continue;
                }
            };
            tracing::info!(
                %addr,
                service = %format!("{}/{}", check.namespace, check.name),
                "healthCheckNodePort server opened"
            );
            let served = Arc::new(Mutex::new(Served {
                namespace: check.namespace,
                name: check.name,
                local_endpoints: check.local_endpoints,
            }));
            let handler = handler(Arc::clone(&served), Arc::clone(&self.health));
            let task = tokio::spawn(http::serve(listener, "healthCheckNodePort", handler));
            self.servers.insert(port, Server { served, task });
        }
    }
}

impl Drop for ServiceHealthServers {
    fn drop(&mut self) {
        for server in self.servers.values() {
            server.task.abort();
        }
    }
}

/// kube-proxy's answer, on every path.
fn handler(served: Arc<Mutex<Served>>, health: Arc<Health>) -> http::Handler {
    Arc::new(move |_: &Request| {
        let healthy = health.healthy();
        let served = served.lock().unwrap_or_else(PoisonError::into_inner);
        answer(&served, healthy)
    })
}

fn answer(served: &Served, healthy: bool) -> Response {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    // Built by hand to keep kube-proxy's field order.
    let body = format!(
        r#"{{"service":{{"namespace":{},"name":{}}},"localEndpoints":{},"serviceProxyHealthy":{}}}"#,
        quote(&served.namespace),
        quote(&served.name),
        served.local_endpoints,
        healthy
    );
    let mut response = Response::json(healthy && served.local_endpoints > 0, body);
    response.headers.push((
        "X-Load-Balancing-Endpoint-Weight",
        served.local_endpoints.to_string(),
    ));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_kube_proxy() {
        let served = Served {
            namespace: "default".into(),
            name: "lb".into(),
            local_endpoints: 2,
        };
        let ok = answer(&served, true);
        assert_eq!(ok.status, "200 OK");
        assert_eq!(
            ok.body,
            r#"{"service":{"namespace":"default","name":"lb"},"localEndpoints":2,"serviceProxyHealthy":true}"#
        );
        assert_eq!(
            ok.headers,
            vec![("X-Load-Balancing-Endpoint-Weight", "2".to_string())]
        );
        assert_eq!(answer(&served, false).status, "503 Service Unavailable");
        let none = Served {
            local_endpoints: 0,
            ..served
        };
        let unavailable = answer(&none, true);
        assert_eq!(unavailable.status, "503 Service Unavailable");
        assert!(unavailable.body.contains(r#""localEndpoints":0"#));
    }
}
