//! HTTP/1.1 framing: reading requests, writing JSON responses and chunked watch streams.
//!
//! Only what Kubernetes clients send is understood: a request line, headers, an optional
//! `Content-Length` body (read and ignored), keep-alive unless `Connection: close`.

use std::io::{self, BufRead, Read, Write};

use serde_json::{json, Value};

/// Requests with a larger head are refused (the connection is closed).
const MAX_HEAD: usize = 64 * 1024;

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Decoded query parameters, in order.
    pub(crate) query: Vec<(String, String)>,
    /// The client asked to close the connection after this request.
    pub(crate) close: bool,
}

impl Request {
    /// The last value of a query parameter.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads one request; `Ok(None)` when the client closed the connection between requests.
pub(crate) fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let read = Read::take(&mut *reader, MAX_HEAD as u64).read_until(b'\n', &mut line)?;
        if read == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated request",
                ))
            };
        }
        if line == b"\r\n" || line == b"\n" {
            if head.is_empty() {
                continue; // tolerate stray blank lines between requests
            }
            break;
        }
        head.push(String::from_utf8_lossy(&line).trim_end().to_string());
        if head.iter().map(String::len).sum::<usize>() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
    let mut request_line = head[0].split_whitespace();
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut close = request_line.next() == Some("HTTP/1.0");
    let mut body_length = 0usize;
    for header in &head[1..] {
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_length = value
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunked request bodies are not supported",
            ));
        }
    }
    io::copy(
        &mut Read::take(&mut *reader, body_length as u64),
        &mut io::sink(),
    )?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method: method.to_string(),
        path: percent_decode(path, false),
        query: parse_query(query),
        close,
    }))
}

/// `application/x-www-form-urlencoded` pairs, as `form_urlencoded` (kube-rs) writes them.
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A complete JSON response with `Content-Length`.
pub(crate) fn write_json(
    out: &mut impl Write,
    status: u16,
    body: &str,
    close: bool,
) -> io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        reason_phrase(status),
        body.len()
    );
    out.write_all(response.as_bytes())?;
    out.flush()
}

/// The head of a chunked watch response; the connection closes when the stream ends.
pub(crate) fn write_stream_head(out: &mut impl Write) -> io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    out.flush()
}

/// One chunk per line: `{json}\n`.
pub(crate) fn write_chunks(out: &mut impl Write, lines: &[String]) -> io::Result<()> {
    let mut buffer = Vec::new();
    for line in lines {
        buffer.extend_from_slice(format!("{:x}\r\n", line.len() + 1).as_bytes());
        buffer.extend_from_slice(line.as_bytes());
        buffer.extend_from_slice(b"\n\r\n");
    }
    out.write_all(&buffer)?;
    out.flush()
}

/// The terminating chunk: a clean end of the watch.
pub(crate) fn write_last_chunk(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// A `metav1.Status` failure, as the API server sends it.
pub(crate) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kube_rs_sends() {
        let raw = "GET /api/v1/services?&labelSelector=%21a%2C%21b&limit=500 HTTP/1.1\r\n\
                   host: 127.0.0.1\r\naccept: application/json\r\n\r\n\
                   GET /api/v1/nodes?fieldSelector=metadata.name%3Dnode-a+x HTTP/1.1\r\nconnection: close\r\n\r\n";
        let mut reader = io::BufReader::new(raw.as_bytes());
        let first = read_request(&mut reader)
            .expect("reads")
            .expect("a request");
        assert_eq!(first.method, "GET");
        assert_eq!(first.path, "/api/v1/services");
        assert_eq!(first.param("labelSelector"), Some("!a,!b"));
        assert_eq!(first.param("limit"), Some("500"));
        assert!(!first.close);
        let second = read_request(&mut reader)
            .expect("reads")
            .expect("a request");
        assert_eq!(
            second.param("fieldSelector"),
            Some("metadata.name=node-a x")
        );
        assert!(second.close);
        assert!(read_request(&mut reader).expect("clean end").is_none());
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2", true), "a%2");
        assert_eq!(percent_decode("%zz%41", true), "%zzA");
        assert_eq!(percent_decode("100%", true), "100%");
    }

    #[test]
    fn chunks_are_one_line_each() {
        let mut out = Vec::new();
        write_chunks(&mut out, &["{}".to_string(), "{\"a\":1}".to_string()]).expect("writes");
        write_last_chunk(&mut out).expect("writes");
        assert_eq!(out, b"3\r\n{}\n\r\n8\r\n{\"a\":1}\n\r\n0\r\n\r\n");
    }
}
