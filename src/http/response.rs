//! Canned responses and the WebSocket accept key.
//!
//! Every non-101 response built here follows PROTOCOL.md "Transport": it carries
//! `Content-Length` and `Connection: close`; the server sends it and closes gracefully.
//! Error and health responses are `text/plain; charset=utf-8` with a short body and
//! `Cache-Control: no-store`. A response to `HEAD` has the same headers (including the
//! `Content-Length` a `GET` would get) and no body (RFC 9110 §9.3.2).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::assets::Asset;

/// "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", the GUID of RFC 6455 §1.3.
pub const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Content-Type` of every error and health response.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// `base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID);
    STANDARD.encode(sha.finalize())
}

/// `408 Request Timeout`, sent when the head did not arrive within the handshake timeout.
pub fn timeout_response() -> Vec<u8> {
    error_response(408, false)
}

/// The `101 Switching Protocols` answer to a valid upgrade whose `Sec-WebSocket-Key` is
/// `key` (as sent, surrounding whitespace removed). No extension and no subprotocol is
/// negotiated (RFC 6455 §4.2.2: the server may select none).
pub fn switching_protocols(key: &[u8]) -> Vec<u8> {
    let accept = accept_key(key);
    let mut out = Vec::with_capacity(129);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// Reason phrase of the status codes this server sends (`"Error"` for any other code).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        101 => "Switching Protocols",
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The short plain-text body of a canned error response.
pub fn error_body(code: u16) -> &'static str {
    match code {
        400 => "bad request\n",
        403 => "forbidden\n",
        404 => "not found\n",
        405 => "method not allowed\n",
        408 => "request timeout\n",
        426 => "upgrade required\n",
        429 => "too many requests\n",
        431 => "request header fields too large\n",
        500 => "internal server error\n",
        503 => "service unavailable\n",
        _ => "error\n",
    }
}

/// A canned error response (`400`, `403`, `404`, `405`, `408`, `426`, `431`, `503`, …) with
/// its status-specific headers: `Allow: GET, HEAD` on 405; `Upgrade: websocket` and
/// `Sec-WebSocket-Version: 13` on 426. `head_only`: answer to a `HEAD` request (no body).
pub fn error_response(code: u16, head_only: bool) -> Vec<u8> {
    let extra = match code {
        405 => "Allow: GET, HEAD\r\n",
        // RFC 6455 §4.4: "|Sec-WebSocket-Version| header field indicating the version(s) the
        // server is capable of understanding"; RFC 9110 §15.5.22: a 426 MUST send Upgrade.
        426 => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        _ => "",
    };
    plain(code, error_body(code), extra, head_only)
}

/// `429 Too Many Requests` with `Retry-After` (seconds): a per-address limit refused the
/// connection (RFC 6585 §4).
pub fn too_many_requests(retry_after: u32) -> Vec<u8> {
    plain(
        429,
        error_body(429),
        &format!("Retry-After: {retry_after}\r\n"),
        false,
    )
}

/// `GET /healthz`: `200 ok` while accepting, `503` while draining.
pub fn health_response(draining: bool, head_only: bool) -> Vec<u8> {
    if draining {
        plain(503, "draining\n", "", head_only)
    } else {
        plain(200, "ok\n", "", head_only)
    }
}

/// An embedded asset: `200` with its body, or `304 Not Modified` when `not_modified`
/// (the request's `If-None-Match` matched). `page_headers` are extra header lines, each
/// ending in CRLF (`crate::assets::PAGE_HEADERS`).
///
/// RFC 9110 §8.6: a 304 may carry `Content-Length` only with the value a 200 would have,
/// so a 304 carries the asset's length (and, as every 304, no body: RFC 9112 §6.3).
/// RFC 9110 §15.4.5: a 304 repeats `ETag` and `Cache-Control`.
pub fn asset_response(
    asset: &Asset,
    page_headers: &str,
    head_only: bool,
    not_modified: bool,
) -> Vec<u8> {
    let code = if not_modified { 304 } else { 200 };
    let mut out = Vec::with_capacity(256 + page_headers.len() + asset.body.len());
    status_line(&mut out, code);
    header(&mut out, "Content-Type", asset.content_type);
    header(&mut out, "Content-Length", &asset.body.len().to_string());
    header(&mut out, "ETag", asset.etag);
    header(&mut out, "Cache-Control", asset.cache_control);
    header(&mut out, "X-Content-Type-Options", "nosniff");
    out.extend_from_slice(page_headers.as_bytes());
    header(&mut out, "Connection", "close");
    out.extend_from_slice(b"\r\n");
    if !head_only && !not_modified {
        out.extend_from_slice(asset.body);
    }
    out
}

/// A `text/plain` response with `Cache-Control: no-store` and `Connection: close`.
fn plain(code: u16, body: &str, extra: &str, head_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(192 + extra.len() + body.len());
    status_line(&mut out, code);
    header(&mut out, "Content-Type", TEXT_PLAIN);
    header(&mut out, "Content-Length", &body.len().to_string());
    header(&mut out, "Cache-Control", "no-store");
    header(&mut out, "X-Content-Type-Options", "nosniff");
    out.extend_from_slice(extra.as_bytes());
    // RFC 9110 §7.8: "A server that sends an Upgrade header field MUST also send an
    // "upgrade" connection option" — only the 426 sends Upgrade.
    let connection = if code == 426 {
        "Upgrade, close"
    } else {
        "close"
    };
    header(&mut out, "Connection", connection);
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn status_line(out: &mut Vec<u8>, code: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(code).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a response into (status line, header lines, body); panics on a malformed one.
    fn split(resp: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
        let text = resp;
        let end = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head terminator");
        let head = std::str::from_utf8(&text[..end]).expect("ascii head");
        let body = text[end + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("status line").to_string();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").expect("header line");
                (n.to_string(), v.to_string())
            })
            .collect();
        (status, headers, body)
    }

    fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn rfc6455_sample_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn switching_protocols_is_exact() {
        assert_eq!(
            switching_protocols(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .to_vec()
        );
    }

    #[test]
    fn timeout_is_408_with_length_and_close() {
        let (status, headers, body) = split(&timeout_response());
        assert_eq!(status, "HTTP/1.1 408 Request Timeout");
        assert_eq!(body, b"request timeout\n");
        assert_eq!(get(&headers, "Content-Length"), Some("16"));
        assert_eq!(get(&headers, "Connection"), Some("close"));
        assert_eq!(get(&headers, "Cache-Control"), Some("no-store"));
        assert_eq!(get(&headers, "Content-Type"), Some(TEXT_PLAIN));
    }

    #[test]
    fn every_error_response_is_well_formed() {
        for code in [400, 403, 404, 405, 408, 426, 431, 500, 503, 999, 0] {
            for head_only in [false, true] {
                let resp = error_response(code, head_only);
                let (status, headers, body) = split(&resp);
                assert_eq!(
                    status,
                    format!("HTTP/1.1 {code} {}", reason_phrase(code)),
                    "{code}"
                );
                let len: usize = get(&headers, "Content-Length")
                    .expect("Content-Length")
                    .parse()
                    .expect("number");
                assert_eq!(len, error_body(code).len());
                if head_only {
                    assert!(body.is_empty());
                } else {
                    assert_eq!(body, error_body(code).as_bytes());
                }
                let conn = get(&headers, "Connection").expect("Connection");
                assert!(conn.split(',').any(|t| t.trim() == "close"), "{conn}");
                assert_eq!(get(&headers, "Cache-Control"), Some("no-store"));
            }
        }
    }

    #[test]
    fn status_specific_headers() {
        let (_, h, _) = split(&error_response(405, false));
        assert_eq!(get(&h, "Allow"), Some("GET, HEAD"));
        let (_, h, _) = split(&error_response(426, false));
        assert_eq!(get(&h, "Upgrade"), Some("websocket"));
        assert_eq!(get(&h, "Sec-WebSocket-Version"), Some("13"));
        assert_eq!(get(&h, "Connection"), Some("Upgrade, close"));
        let (_, h, _) = split(&error_response(404, false));
        assert_eq!(get(&h, "Allow"), None);
        assert_eq!(get(&h, "Upgrade"), None);
    }

    #[test]
    fn health_bodies() {
        let (s, h, b) = split(&health_response(false, false));
        assert_eq!(s, "HTTP/1.1 200 OK");
        assert_eq!(b, b"ok\n");
        assert_eq!(get(&h, "Content-Length"), Some("3"));
        let (s, h, b) = split(&health_response(true, true));
        assert_eq!(s, "HTTP/1.1 503 Service Unavailable");
        assert!(b.is_empty());
        assert_eq!(get(&h, "Content-Length"), Some("9"));
    }

    #[test]
    fn asset_200_304_and_head() {
        static A: Asset = Asset {
            body: b"hello",
            content_type: "text/css",
            etag: "\"e1\"",
            cache_control: "max-age=60",
        };
        let extra = "Content-Security-Policy: default-src 'self'\r\n";
        let (s, h, b) = split(&asset_response(&A, extra, false, false));
        assert_eq!(s, "HTTP/1.1 200 OK");
        assert_eq!(b, b"hello");
        assert_eq!(get(&h, "Content-Type"), Some("text/css"));
        assert_eq!(get(&h, "Content-Length"), Some("5"));
        assert_eq!(get(&h, "ETag"), Some("\"e1\""));
        assert_eq!(get(&h, "Cache-Control"), Some("max-age=60"));
        assert_eq!(get(&h, "X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(
            get(&h, "Content-Security-Policy"),
            Some("default-src 'self'")
        );
        assert_eq!(get(&h, "Connection"), Some("close"));

        let (s, h2, b) = split(&asset_response(&A, extra, true, false));
        assert_eq!(s, "HTTP/1.1 200 OK");
        assert!(b.is_empty());
        assert_eq!(h2, h);

        for head_only in [false, true] {
            let (s, h, b) = split(&asset_response(&A, extra, head_only, true));
            assert_eq!(s, "HTTP/1.1 304 Not Modified");
            assert!(b.is_empty());
            assert_eq!(get(&h, "ETag"), Some("\"e1\""));
            assert_eq!(get(&h, "Cache-Control"), Some("max-age=60"));
            assert_eq!(get(&h, "Content-Length"), Some("5"));
        }
    }
}
