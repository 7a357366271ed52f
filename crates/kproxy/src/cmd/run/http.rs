//! A tiny HTTP/1.1 responder: one request per connection, answered from a handler and closed.
//! Enough for probes and scrapers (`/healthz`, `/metrics`, healthCheckNodePort servers), with
//! no HTTP library: each answer is computed from in-memory state.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the handler sees of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The target without its query string.
    pub path: String,
}

/// The handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status line after the version, e.g. `200 OK`.
    pub status: &'static str,
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    /// A response with no extra headers.
    pub fn new(status: &'static str, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    /// 200 or 503 with a JSON body.
    pub fn json(ok: bool, body: String) -> Response {
        let status = if ok {
            "200 OK"
        } else {
            "503 Service Unavailable"
        };
        Response::new(status, "application/json", body)
    }

    /// Go's net/http answer to an unknown path.
    pub fn not_found() -> Response {
        Response::new(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "404 page not found\n".to_string(),
        )
    }

    /// Anything but GET and HEAD.
    pub fn method_not_allowed() -> Response {
        Response::new(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            String::new(),
        )
    }
}

/// Computes the answer to a request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves `listener` until the task is aborted (or the runtime stops); `what` names the server
/// in logs.
pub async fn serve(listener: TcpListener, what: &'static str, handler: Handler) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(respond(stream, Arc::clone(&handler)));
            }
            Err(error) => {
                tracing::warn!(%error, server = what, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers one request and closes the connection.
async fn respond(mut stream: TcpStream, handler: Handler) {
    let Ok(Some(head)) = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream)).await
    else {
        return;
    };
    let request = parse_head(&head);
    let response = if matches!(request.method.as_str(), "GET" | "HEAD") {
        handler(&request)
    } else {
        Response::method_not_allowed()
    };
    let _ = stream
        .write_all(&encode(&response, request.method == "HEAD"))
        .await;
    let _ = stream.shutdown().await;
}

/// The request line's method and path.
fn parse_head(head: &str) -> Request {
    let mut request_line = head.lines().next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("").to_string();
    let target = request_line.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("").to_string();
    Request { method, path }
}

/// The bytes on the wire.
fn encode(response: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nX-Content-Type-Options: nosniff\r\n",
        response.status, response.content_type
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    if !head_only {
        out.push_str(&response.body);
    }
    out.into_bytes()
}

/// Reads up to the end of the request head (at most 8 KiB); `None` if the client gave up.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 8192 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            // Some probes send only the request line; answer what we have.
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_answers() {
        let request = parse_head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/metrics");
        let mut response = Response::json(false, "{}".to_string());
        response
            .headers
            .push(("X-Load-Balancing-Endpoint-Weight", "0".to_string()));
        let wire = String::from_utf8(encode(&response, false)).unwrap();
        assert!(
            wire.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{wire}"
        );
        assert!(
            wire.contains("\r\nX-Load-Balancing-Endpoint-Weight: 0\r\n"),
            "{wire}"
        );
        assert!(wire.contains("\r\nContent-Length: 2\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n{}"), "{wire}");
        let head = String::from_utf8(encode(&response, true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }
}
