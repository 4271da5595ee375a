//! Raw HTTP exchanges: exact request bytes out, the response head and body in, checked
//! against the rules PROTOCOL.md gives every non-101 response.

use super::server::SOON;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Comma-separated tokens of a header, lower-cased.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
            .filter(|t| !t.is_empty())
            .collect()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Read up to `\r\n\r\n`; returns the head and whatever was read after it.
pub fn read_head(s: &mut TcpStream, within: Duration) -> Result<(String, Vec<u8>), String> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            return Ok((head, buf[i + 4..].to_vec()));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no complete response head within {within:?}; got {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        s.set_read_timeout(Some(deadline - now)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "EOF before the end of the response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                return Err(format!(
                    "read error before the end of the head: {e}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
    }
}

pub fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    assert!(
        version == "HTTP/1.1" || version == "HTTP/1.0",
        "bad status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let (k, v) = l
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {l:?}"));
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// Read until EOF (the server closes after a non-101 response).
pub fn read_to_eof(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "connection still open after {within:?}; read {} bytes",
                buf.len()
            ));
        }
        s.set_read_timeout(Some(deadline - now)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                return Err(format!(
                    "{e} after {} bytes: {:?}",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
    }
}

/// Send `request` on a new connection and read a complete non-101 response followed by EOF.
/// Checks the PROTOCOL.md rules every non-101 response follows: `Content-Length` (and a body
/// of exactly that length unless `head_only`), `Connection: close`, then a clean close.
pub fn http_exchange(addr: SocketAddr, request: &[u8], head_only: bool) -> HttpResponse {
    let mut s = tcp(addr);
    s.write_all(request).expect("write request");
    http_read_response(&mut s, head_only)
}

pub fn http_read_response(s: &mut TcpStream, head_only: bool) -> HttpResponse {
    let raw = read_to_eof(s, SOON).unwrap_or_else(|e| panic!("reading the response: {e}"));
    let i = find(&raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..i + 4]).into_owned();
    let body = raw[i + 4..].to_vec();
    let (status, headers) = parse_head(&head);
    let resp = HttpResponse {
        status,
        head,
        headers,
        body,
    };
    assert_ne!(status, 101, "unexpected upgrade");
    let cl: usize = resp
        .header("content-length")
        .unwrap_or_else(|| panic!("no Content-Length in {:?}", resp.head))
        .parse()
        .expect("numeric Content-Length");
    if head_only || status == 304 {
        assert!(
            resp.body.is_empty(),
            "no body expected, got {:?}",
            resp.body_str()
        );
    } else {
        assert_eq!(
            resp.body.len(),
            cl,
            "body length differs from Content-Length in {:?}",
            resp.head
        );
    }
    assert!(
        resp.header_tokens("connection")
            .contains(&"close".to_string()),
        "no `Connection: close` in {:?}",
        resp.head
    );
    resp
}

pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    http_exchange(addr, req.as_bytes(), false)
}

/// An upgrade request head with the RFC 6455 sample key, plus `extra` header lines (each
/// ending in `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The accept value for the RFC 6455 sample key (RFC 6455 §1.3).
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub fn check_101(head: &str, accept: &str) {
    let (status, headers) = parse_head(head);
    assert_eq!(status, 101, "expected 101, got {head:?}");
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert!(
        h("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "Upgrade header in {head:?}"
    );
    assert!(
        h("connection").is_some_and(|v| v
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))),
        "Connection header in {head:?}"
    );
    assert_eq!(
        h("sec-websocket-accept").as_deref(),
        Some(accept),
        "Sec-WebSocket-Accept in {head:?}"
    );
}
