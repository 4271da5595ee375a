//! Parse a request head (httparse) and decide the whole answer: a canned response, or an upgrade.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::response::{asset_response, error_response, health_response, switching_protocols};

/// What the server knows when it answers a request.
#[derive(Debug, Clone, Copy)]
pub struct HttpContext<'a> {
    /// Longest request head accepted (PROTOCOL.md `--max-head-bytes`, 8192).
    pub max_head_bytes: usize,
    /// `/echo` is routed only when `--enable-echo` was given.
    pub echo_enabled: bool,
    /// Shutting down: `/healthz` and upgrades answer 503.
    pub draining: bool,
    /// The connection limit is reached: upgrades answer 503.
    pub at_capacity: bool,
    /// `--allowed-origin` values; empty = any Origin.
    pub allowed_origins: &'a [String],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`, the chat protocol.
    Chat,
    /// `/echo`, echo of every data message.
    Echo,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HttpOutcome {
    /// The head is not complete yet and still under the size limit: read more.
    Incomplete,
    /// A complete non-101 response (with `Content-Length` and `Connection: close`); the server
    /// sends it and closes gracefully.
    Reply(Vec<u8>),
    /// A valid WebSocket upgrade: send `response` (the 101); bytes of `buf` after `head_len`
    /// already belong to the WebSocket stream.
    Upgrade {
        endpoint: Endpoint,
        head_len: usize,
        response: Vec<u8>,
    },
}

/// Header lines parsed per request; a head with more answers `431`.
pub const MAX_HEADERS: usize = 64;

/// Could a request head end within `bytes` (an empty line: `\n\n` or `\n\r\n`, the forms
/// the parser accepts)? A cheap test before parsing a head that arrives in pieces.
pub fn may_end_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n" || w == b"\n\r")
}

/// The values of every header `name` (case-insensitive) of a complete request head, in order;
/// empty when the head does not parse.
pub fn header_values<'a>(buf: &'a [u8], name: &str) -> Vec<&'a [u8]> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect(),
        _ => Vec::new(),
    }
}

/// Decide what to do with the bytes received so far on a new connection.
///
/// Pure and total: any input gives an outcome, never a panic. `Incomplete` is returned only
/// while `buf` is shorter than `ctx.max_head_bytes` and holds no complete head, so a caller
/// may size its head buffer at exactly `max_head_bytes`: a full buffer always gets an answer.
pub fn handle_request(buf: &[u8], ctx: &HttpContext<'_>) -> HttpOutcome {
    // Only the first `max_head_bytes` are parsed: a head that has not ended there is 431
    // whatever follows, and the parse cost stays bounded however much was read.
    let window = buf.get(..ctx.max_head_bytes).unwrap_or(buf);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => decide(&req, head_len, ctx),
        Ok(httparse::Status::Partial) => {
            if buf.len() >= ctx.max_head_bytes && !buf.is_empty() {
                HttpOutcome::Reply(error_response(431, looks_like_head(buf)))
            } else {
                HttpOutcome::Incomplete
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            HttpOutcome::Reply(error_response(431, looks_like_head(buf)))
        }
        Err(_) => HttpOutcome::Reply(error_response(400, looks_like_head(buf))),
    }
}

/// A request we could not parse still gets a body-less answer if it says it is a `HEAD`.
fn looks_like_head(buf: &[u8]) -> bool {
    buf.starts_with(b"HEAD ")
}

/// Route a complete head. Order of checks: 405 (method) → 404 (route) → the route's rules.
fn decide(req: &httparse::Request<'_, '_>, head_len: usize, ctx: &HttpContext<'_>) -> HttpOutcome {
    let headers: &[httparse::Header<'_>] = req.headers;
    let method = req.method.unwrap_or("");
    let head_only = method == "HEAD";
    // PROTOCOL.md: "A method other than GET/HEAD, on any path: 405 with Allow: GET, HEAD".
    // Methods are case-sensitive (RFC 9110 §9.1).
    if method != "GET" && !head_only {
        return HttpOutcome::Reply(error_response(405, false));
    }
    let path = route_path(req.path.unwrap_or(""));
    let endpoint = match path {
        "/ws" => Some(Endpoint::Chat),
        "/echo" if ctx.echo_enabled => Some(Endpoint::Echo),
        _ => None,
    };
    if let Some(endpoint) = endpoint {
        return upgrade(req, headers, endpoint, head_len, head_only, ctx);
    }
    if path == "/healthz" {
        return HttpOutcome::Reply(health_response(ctx.draining, head_only));
    }
    if let Some(asset) = crate::assets::lookup(path) {
        let not_modified = if_none_match(headers, asset.etag);
        return HttpOutcome::Reply(asset_response(
            asset,
            crate::assets::PAGE_HEADERS,
            head_only,
            not_modified,
        ));
    }
    HttpOutcome::Reply(error_response(404, head_only))
}

/// The path a request target routes on: the query (and a stray fragment) removed; an
/// absolute-form target (`http://host/ws`, RFC 9112 §3.2.2) reduced to its path.
pub fn route_path(target: &str) -> &str {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path.starts_with('/') {
        return path;
    }
    if let Some((scheme, rest)) = path.split_once("://") {
        let known = ["http", "https", "ws", "wss"];
        if known.iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
            return match rest.find('/') {
                Some(i) => rest.get(i..).unwrap_or("/"),
                None => "/",
            };
        }
    }
    path
}

/// `/ws` or `/echo`: checks in the order 400 → 426 → 403 → 503, then the 101.
fn upgrade(
    req: &httparse::Request<'_, '_>,
    headers: &[httparse::Header<'_>],
    endpoint: Endpoint,
    head_len: usize,
    head_only: bool,
    ctx: &HttpContext<'_>,
) -> HttpOutcome {
    let reply = |code| HttpOutcome::Reply(error_response(code, head_only));
    // RFC 6455 §4.1: "The method of the request MUST be GET, and the HTTP version MUST be at
    // least 1.1." PROTOCOL.md: a request for /ws or /echo that is not an upgrade, or HEAD: 400.
    if head_only || req.version != Some(1) {
        return reply(400);
    }
    // RFC 6455 §4.2.1 items 2-4: a |Host|, an |Upgrade| including "websocket" and a
    // |Connection| including "Upgrade", all case-insensitive. RFC 9112 §3.2: more than one
    // Host is a 400.
    if !has_token(headers, "upgrade", b"websocket")
        || !has_token(headers, "connection", b"upgrade")
        || values(headers, "host").count() != 1
    {
        return reply(400);
    }
    // An upgrade request with a body would make that body the start of the WebSocket stream:
    // refuse it rather than guess where the body ends.
    let has_body = values(headers, "content-length").any(|v| v.trim_ascii() != b"0")
        || values(headers, "transfer-encoding").next().is_some();
    if has_body {
        return reply(400);
    }
    // RFC 6455 §4.2.1 item 5: a |Sec-WebSocket-Key| that, "when decoded, is 16 bytes in length".
    let key = match single(headers, "sec-websocket-key") {
        Some(key) if key_is_valid(key) => key,
        _ => return reply(400),
    };
    // RFC 6455 §4.2.2: if the version is not understood, answer 426 with the version(s) we
    // understand. Only one header line, exactly "13".
    if single(headers, "sec-websocket-version") != Some(b"13") {
        return reply(426);
    }
    // PROTOCOL.md: an Origin not in the allow-list (when one is configured) is 403; a
    // request without Origin is allowed. Every Origin line must be allowed.
    if !ctx.allowed_origins.is_empty() {
        let allowed = |origin: &[u8]| {
            ctx.allowed_origins
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
        };
        if !values(headers, "origin").all(|o| allowed(o.trim_ascii())) {
            return reply(403);
        }
    }
    if ctx.draining || ctx.at_capacity {
        return reply(503);
    }
    HttpOutcome::Upgrade {
        endpoint,
        head_len,
        response: switching_protocols(key),
    }
}

/// A `Sec-WebSocket-Key`: canonical padded base64 of exactly 16 bytes.
fn key_is_valid(key: &[u8]) -> bool {
    key.len() == 24 && matches!(STANDARD.decode(key), Ok(bytes) if bytes.len() == 16)
}

/// The values of every header line named `name` (case-insensitive), in order.
fn values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The value of the header `name` when exactly one line has it, trimmed.
fn single<'h>(headers: &'h [httparse::Header<'_>], name: &'h str) -> Option<&'h [u8]> {
    let mut it = values(headers, name);
    match (it.next(), it.next()) {
        (Some(v), None) => Some(v.trim_ascii()),
        _ => None,
    }
}

/// Whether the comma-separated token lists of the `name` lines contain `token`
/// (case-insensitive, RFC 9110 §5.6.1 lists, which may span several lines).
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &[u8]) -> bool {
    values(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// RFC 9110 §13.1.2: `If-None-Match` is `*` or a list of entity tags, compared weakly
/// (`W/"x"` matches `"x"`). A malformed list stops at the first bad element.
fn if_none_match(headers: &[httparse::Header<'_>], etag: &str) -> bool {
    let ours = opaque_tag(etag.as_bytes());
    values(headers, "if-none-match").any(|value| {
        let mut rest = value;
        loop {
            rest = skip_list_separators(rest);
            if rest.is_empty() {
                return false;
            }
            if rest.starts_with(b"*") {
                return true;
            }
            let tag = rest.strip_prefix(b"W/").unwrap_or(rest);
            let Some(inner) = tag.strip_prefix(b"\"") else {
                return false;
            };
            let Some(end) = inner.iter().position(|&b| b == b'"') else {
                return false;
            };
            if tag.get(..end + 2) == Some(ours) {
                return true;
            }
            rest = inner.get(end + 1..).unwrap_or(&[]);
        }
    })
}

/// An entity tag without its weakness indicator.
fn opaque_tag(tag: &[u8]) -> &[u8] {
    let tag = tag.trim_ascii();
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

fn skip_list_separators(mut s: &[u8]) -> &[u8] {
    while let Some((&first, tail)) = s.split_first() {
        if first == b',' || first == b' ' || first == b'\t' {
            s = tail;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::{accept_key, error_body};
    use proptest::prelude::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn ctx() -> HttpContext<'static> {
        HttpContext {
            max_head_bytes: 8192,
            echo_enabled: true,
            draining: false,
            at_capacity: false,
            allowed_origins: &[],
        }
    }

    /// A parsed reply: status, headers (lower-cased names), body.
    #[derive(Debug)]
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            let name = name.to_ascii_lowercase();
            let mut it = self.headers.iter().filter(|(n, _)| *n == name);
            let first = it.next().map(|(_, v)| v.as_str());
            assert!(it.next().is_none(), "duplicate {name}");
            first
        }
        fn content_length(&self) -> usize {
            self.header("content-length")
                .expect("Content-Length")
                .parse()
                .expect("numeric Content-Length")
        }
    }

    /// Parses a non-101 reply and checks the rules every one of them must follow.
    fn parse_reply(bytes: &[u8]) -> Resp {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(bytes).expect("reply parses") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial reply"),
        };
        assert!(bytes.starts_with(b"HTTP/1.1 "));
        let status = resp.code.expect("code");
        assert_ne!(status, 101);
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).expect("ascii"),
                )
            })
            .collect();
        let r = Resp {
            status,
            headers,
            body: bytes[n..].to_vec(),
        };
        let conn = r.header("connection").expect("Connection");
        assert!(
            conn.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close")),
            "{conn}"
        );
        let _ = r.content_length();
        r
    }

    fn reply(req: &str, ctx: &HttpContext<'_>) -> Resp {
        match handle_request(req.as_bytes(), ctx) {
            HttpOutcome::Reply(bytes) => {
                let r = parse_reply(&bytes);
                if !req.starts_with("HEAD ") && r.status != 304 {
                    assert_eq!(r.body.len(), r.content_length(), "{req:?}");
                } else {
                    assert!(r.body.is_empty(), "{req:?}");
                }
                r
            }
            other => panic!("{req:?} -> {other:?}"),
        }
    }

    fn status(req: &str, ctx: &HttpContext<'_>) -> u16 {
        reply(req, ctx).status
    }

    /// A valid upgrade for `path` with `extra` header lines (each ending in CRLF).
    fn upgrade_req(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
             {extra}\r\n"
        )
    }

    /// A request built from raw header lines.
    fn req_with(request_line: &str, lines: &[&str]) -> String {
        let mut s = format!("{request_line}\r\n");
        for l in lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }

    const HOST: &str = "Host: example.com";
    const UPG: &str = "Upgrade: websocket";
    const CONN: &str = "Connection: Upgrade";
    const KEYH: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    const VER: &str = "Sec-WebSocket-Version: 13";

    fn expect_upgrade(req: &str, ctx: &HttpContext<'_>) -> (Endpoint, usize, Vec<u8>) {
        match handle_request(req.as_bytes(), ctx) {
            HttpOutcome::Upgrade {
                endpoint,
                head_len,
                response,
            } => (endpoint, head_len, response),
            HttpOutcome::Reply(r) => panic!("{req:?} -> {}", String::from_utf8_lossy(&r)),
            HttpOutcome::Incomplete => panic!("{req:?} -> Incomplete"),
        }
    }

    fn expected_101() -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        )
        .into_bytes()
    }

    // ---- upgrades -------------------------------------------------------------------------

    #[test]
    fn rfc6455_sample_handshake_upgrades_chat() {
        // RFC 6455 §1.2/§1.3, with the sample key.
        let req = "GET /ws HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
        let (endpoint, head_len, response) = expect_upgrade(req, &ctx());
        assert_eq!(endpoint, Endpoint::Chat);
        assert_eq!(head_len, req.len());
        assert_eq!(response, expected_101());
        // No subprotocol and no extension is selected.
        let text = String::from_utf8(response).unwrap();
        assert!(!text.contains("Protocol:"));
        assert!(!text.contains("Extensions"));
    }

    #[test]
    fn echo_routes_only_when_enabled() {
        let req = upgrade_req("/echo", "");
        let (endpoint, head_len, response) = expect_upgrade(&req, &ctx());
        assert_eq!(endpoint, Endpoint::Echo);
        assert_eq!(head_len, req.len());
        assert_eq!(response, expected_101());
        let off = HttpContext {
            echo_enabled: false,
            ..ctx()
        };
        let r = reply(&req, &off);
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"not found\n");
        // Chat is unaffected by the echo flag.
        assert_eq!(
            expect_upgrade(&upgrade_req("/ws", ""), &off).0,
            Endpoint::Chat
        );
        // /echo off: a bad upgrade is still 404 (route before upgrade rules).
        assert_eq!(status("GET /echo HTTP/1.1\r\n\r\n", &off), 404);
        assert_eq!(status("HEAD /echo HTTP/1.1\r\n\r\n", &off), 404);
    }

    #[test]
    fn accept_key_follows_the_request_key() {
        let key = "AAECAwQFBgcICQoLDA0ODw=="; // bytes 0..16
        let req = req_with(
            "GET /ws HTTP/1.1",
            &[HOST, UPG, CONN, &format!("Sec-WebSocket-Key: {key}"), VER],
        );
        let (_, _, response) = expect_upgrade(&req, &ctx());
        let text = String::from_utf8(response).unwrap();
        assert!(text.contains(&format!(
            "Sec-WebSocket-Accept: {}\r\n",
            accept_key(key.as_bytes())
        )));
        // Surrounding whitespace of the key is not part of it.
        let req = req_with(
            "GET /ws HTTP/1.1",
            &[
                HOST,
                UPG,
                CONN,
                &format!("Sec-WebSocket-Key:   {KEY}  "),
                VER,
            ],
        );
        assert_eq!(expect_upgrade(&req, &ctx()).2, expected_101());
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let req = req_with(
            "GET /ws HTTP/1.1",
            &[
                "host: x",
                "UPGRADE: WebSocket",
                "connection: UPGRADE",
                "SEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==",
                "sec-websocket-version: 13",
            ],
        );
        assert_eq!(expect_upgrade(&req, &ctx()).2, expected_101());
    }

    #[test]
    fn connection_and_upgrade_token_lists() {
        for lines in [
            vec![HOST, UPG, "Connection: keep-alive, Upgrade", KEYH, VER],
            vec![
                HOST,
                UPG,
                "Connection: keep-alive,Upgrade ,  close",
                KEYH,
                VER,
            ],
            vec![
                HOST,
                UPG,
                "Connection: keep-alive",
                "Connection: Upgrade",
                KEYH,
                VER,
            ],
            vec![HOST, "Upgrade: h2c, websocket", CONN, KEYH, VER],
            vec![HOST, "Upgrade: foo", "Upgrade: websocket", CONN, KEYH, VER],
            // Unknown and extension/protocol headers are ignored.
            vec![
                HOST,
                UPG,
                CONN,
                KEYH,
                VER,
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                "Sec-WebSocket-Protocol: chat",
                "X-Whatever: 1",
                "Content-Length: 0",
            ],
        ] {
            let req = req_with("GET /ws HTTP/1.1", &lines);
            assert_eq!(expect_upgrade(&req, &ctx()).2, expected_101(), "{req:?}");
        }
    }

    #[test]
    fn query_strings_are_ignored_for_routing() {
        assert_eq!(
            expect_upgrade(&upgrade_req("/ws?x=1", ""), &ctx()).0,
            Endpoint::Chat
        );
        assert_eq!(
            expect_upgrade(&upgrade_req("/echo?", ""), &ctx()).0,
            Endpoint::Echo
        );
        assert_eq!(
            status("GET /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n", &ctx()),
            200
        );
        assert_eq!(
            status("GET /?utm=1 HTTP/1.1\r\nHost: x\r\n\r\n", &ctx()),
            200
        );
        assert_eq!(
            status("GET /nope?x HTTP/1.1\r\nHost: x\r\n\r\n", &ctx()),
            404
        );
        // The path is not a prefix match.
        assert_eq!(status("GET /wsx HTTP/1.1\r\nHost: x\r\n\r\n", &ctx()), 404);
        assert_eq!(status("GET /ws/ HTTP/1.1\r\nHost: x\r\n\r\n", &ctx()), 404);
        assert_eq!(status("GET /WS HTTP/1.1\r\nHost: x\r\n\r\n", &ctx()), 404);
    }

    #[test]
    fn absolute_form_targets_route_on_their_path() {
        assert_eq!(
            expect_upgrade(&upgrade_req("http://example.com/ws?a", ""), &ctx()).0,
            Endpoint::Chat
        );
        assert_eq!(
            status("GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n", &ctx()),
            200
        );
        assert_eq!(route_path("HTTPS://h:1/healthz"), "/healthz");
        assert_eq!(route_path("*"), "*");
        assert_eq!(route_path("ftp://h/ws"), "ftp://h/ws");
        assert_eq!(route_path(""), "");
    }

    #[test]
    fn bytes_after_the_head_are_left_for_the_websocket_stream() {
        let req = upgrade_req("/ws", "");
        // A masked text frame "Hello" (RFC 6455 §5.7), pipelined right after the head.
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut buf = req.clone().into_bytes();
        buf.extend_from_slice(&frame);
        match handle_request(&buf, &ctx()) {
            HttpOutcome::Upgrade { head_len, .. } => {
                assert_eq!(head_len, req.len());
                assert_eq!(&buf[head_len..], &frame);
            }
            other => panic!("{other:?}"),
        }
        // Even a lot of pipelined bytes (over the head limit in total) do not matter.
        let mut buf = req.clone().into_bytes();
        buf.resize(buf.len() + 20_000, 0x82);
        match handle_request(&buf, &ctx()) {
            HttpOutcome::Upgrade { head_len, .. } => assert_eq!(head_len, req.len()),
            other => panic!("{other:?}"),
        }
    }

    // ---- 400 ------------------------------------------------------------------------------

    #[test]
    fn not_an_upgrade_is_400() {
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("plain GET", vec![HOST]),
            ("no Upgrade", vec![HOST, CONN, KEYH, VER]),
            ("Upgrade: h2c", vec![HOST, "Upgrade: h2c", CONN, KEYH, VER]),
            (
                "Upgrade: websocket2",
                vec![HOST, "Upgrade: websocket2", CONN, KEYH, VER],
            ),
            ("no Connection", vec![HOST, UPG, KEYH, VER]),
            (
                "Connection: keep-alive",
                vec![HOST, UPG, "Connection: keep-alive", KEYH, VER],
            ),
            (
                "Connection: upgrades",
                vec![HOST, UPG, "Connection: upgrades", KEYH, VER],
            ),
            ("no Host", vec![UPG, CONN, KEYH, VER]),
            ("two Hosts", vec![HOST, "Host: other", UPG, CONN, KEYH, VER]),
            ("no key", vec![HOST, UPG, CONN, VER]),
            (
                "empty key",
                vec![HOST, UPG, CONN, "Sec-WebSocket-Key:", VER],
            ),
            (
                "key not base64",
                vec![
                    HOST,
                    UPG,
                    CONN,
                    "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==",
                    VER,
                ],
            ),
            // 15 and 17 bytes.
            (
                "15-byte key",
                vec![
                    HOST,
                    UPG,
                    CONN,
                    "Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0O",
                    VER,
                ],
            ),
            (
                "17-byte key",
                vec![
                    HOST,
                    UPG,
                    CONN,
                    "Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODxA=",
                    VER,
                ],
            ),
            (
                "unpadded key",
                vec![
                    HOST,
                    UPG,
                    CONN,
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
                    VER,
                ],
            ),
            (
                "non-canonical key",
                vec![
                    HOST,
                    UPG,
                    CONN,
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==",
                    VER,
                ],
            ),
            ("two keys", vec![HOST, UPG, CONN, KEYH, KEYH, VER]),
            (
                "body",
                vec![HOST, UPG, CONN, KEYH, VER, "Content-Length: 5"],
            ),
            (
                "chunked",
                vec![HOST, UPG, CONN, KEYH, VER, "Transfer-Encoding: chunked"],
            ),
        ];
        for (what, lines) in cases {
            let req = req_with("GET /ws HTTP/1.1", &lines);
            let r = reply(&req, &ctx());
            assert_eq!(r.status, 400, "{what}");
            assert_eq!(r.body, b"bad request\n", "{what}");
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
            assert_eq!(r.header("cache-control"), Some("no-store"));
            // Also for /echo.
            let req = req_with("GET /echo HTTP/1.1", &lines);
            assert_eq!(status(&req, &ctx()), 400, "{what} on /echo");
        }
    }

    #[test]
    fn head_and_http10_upgrades_are_400() {
        let head = upgrade_req("/ws", "").replacen("GET", "HEAD", 1);
        let r = reply(&head, &ctx());
        assert_eq!(r.status, 400);
        assert!(r.body.is_empty());
        assert_eq!(r.content_length(), "bad request\n".len());
        let v10 = upgrade_req("/ws", "").replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(status(&v10, &ctx()), 400);
        let v10 = upgrade_req("/echo", "").replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(status(&v10, &ctx()), 400);
    }

    #[test]
    fn malformed_requests_are_400() {
        for req in [
            "garbage\r\n\r\n",
            "GET\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "\0\0\0\0",
        ] {
            let r = reply(req, &ctx());
            assert_eq!(r.status, 400, "{req:?}");
            assert_eq!(r.body, b"bad request\n");
        }
        // A TLS ClientHello sent to the plain-text port.
        let hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        match handle_request(&hello, &ctx()) {
            HttpOutcome::Reply(r) => assert_eq!(parse_reply(&r).status, 400),
            other => panic!("{other:?}"),
        }
        // Unparseable HEAD: same headers, no body.
        let r = reply("HEAD / HTTP/1.1\r\nNo colon\r\n\r\n", &ctx());
        assert_eq!(r.status, 400);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS {
            req.push_str(&format!("X-{i}: y\r\n"));
        }
        req.push_str("\r\n");
        let r = reply(&req, &ctx());
        assert_eq!(r.status, 431);
        assert_eq!(r.body, b"request header fields too large\n");
        // Exactly MAX_HEADERS is fine.
        let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS - 1 {
            req.push_str(&format!("X-{i}: y\r\n"));
        }
        req.push_str("\r\n");
        assert_eq!(status(&req, &ctx()), 200);
    }

    // ---- 426 / 403 / 503 and their order ----------------------------------------------------

    #[test]
    fn bad_version_is_426_with_headers() {
        for lines in [
            vec![HOST, UPG, CONN, KEYH],
            vec![HOST, UPG, CONN, KEYH, "Sec-WebSocket-Version: 8"],
            vec![HOST, UPG, CONN, KEYH, "Sec-WebSocket-Version: 13, 8"],
            vec![HOST, UPG, CONN, KEYH, "Sec-WebSocket-Version: 013"],
            vec![HOST, UPG, CONN, KEYH, "Sec-WebSocket-Version:"],
            vec![HOST, UPG, CONN, KEYH, VER, VER],
        ] {
            let req = req_with("GET /ws HTTP/1.1", &lines);
            let r = reply(&req, &ctx());
            assert_eq!(r.status, 426, "{req:?}");
            assert_eq!(r.body, b"upgrade required\n");
            assert_eq!(r.header("upgrade"), Some("websocket"));
            assert_eq!(r.header("sec-websocket-version"), Some("13"));
        }
        // Whitespace around 13 is not part of the value.
        let req = req_with(
            "GET /ws HTTP/1.1",
            &[HOST, UPG, CONN, KEYH, "Sec-WebSocket-Version:  13 "],
        );
        expect_upgrade(&req, &ctx());
    }

    #[test]
    fn origin_allow_list() {
        let allowed = vec![
            "https://chat.example".to_string(),
            "http://localhost:8080".to_string(),
        ];
        let c = HttpContext {
            allowed_origins: &allowed,
            ..ctx()
        };
        // No Origin (not a browser): allowed.
        expect_upgrade(&upgrade_req("/ws", ""), &c);
        expect_upgrade(&upgrade_req("/ws", "Origin: https://chat.example\r\n"), &c);
        expect_upgrade(&upgrade_req("/ws", "origin: HTTPS://CHAT.EXAMPLE\r\n"), &c);
        expect_upgrade(&upgrade_req("/ws", "Origin: http://localhost:8080\r\n"), &c);
        for bad in [
            "Origin: https://evil.example\r\n",
            "Origin: https://chat.example.evil\r\n",
            "Origin: https://chat.example/\r\n",
            "Origin: null\r\n",
            "Origin:\r\n",
            "Origin: https://chat.example\r\nOrigin: https://evil.example\r\n",
        ] {
            let r = reply(&upgrade_req("/ws", bad), &c);
            assert_eq!(r.status, 403, "{bad:?}");
            assert_eq!(r.body, b"forbidden\n");
        }
        // Non-UTF-8 Origin bytes.
        let mut req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                        Origin: "
            .to_vec();
        req.extend_from_slice(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']);
        match handle_request(&req, &c) {
            HttpOutcome::Reply(r) => assert_eq!(parse_reply(&r).status, 403),
            other => panic!("{other:?}"),
        }
        // Empty allow-list: any Origin.
        expect_upgrade(
            &upgrade_req("/ws", "Origin: https://evil.example\r\n"),
            &ctx(),
        );
    }

    #[test]
    fn draining_or_full_upgrades_are_503() {
        for c in [
            HttpContext {
                draining: true,
                ..ctx()
            },
            HttpContext {
                at_capacity: true,
                ..ctx()
            },
        ] {
            let r = reply(&upgrade_req("/ws", ""), &c);
            assert_eq!(r.status, 503);
            assert_eq!(r.body, b"service unavailable\n");
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert_eq!(status(&upgrade_req("/echo", ""), &c), 503);
            // Pages are still served.
            assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &c), 200);
        }
    }

    #[test]
    fn order_of_checks() {
        let allowed = vec!["https://ok.example".to_string()];
        let all_bad = HttpContext {
            draining: true,
            at_capacity: true,
            allowed_origins: &allowed,
            echo_enabled: false,
            ..ctx()
        };
        let evil = "Origin: https://evil.example";
        // 405 before 404 before anything else.
        assert_eq!(status("POST /nope HTTP/1.1\r\n\r\n", &all_bad), 405);
        assert_eq!(status("POST /ws HTTP/1.0\r\n\r\n", &all_bad), 405);
        assert_eq!(status("GET /echo HTTP/1.1\r\n\r\n", &all_bad), 404);
        // 400 before 426: a missing key with a bad version.
        let req = req_with(
            "GET /ws HTTP/1.1",
            &[HOST, UPG, CONN, "Sec-WebSocket-Version: 8", evil],
        );
        assert_eq!(status(&req, &all_bad), 400);
        // 426 before 403.
        let req = req_with(
            "GET /ws HTTP/1.1",
            &[HOST, UPG, CONN, KEYH, "Sec-WebSocket-Version: 8", evil],
        );
        assert_eq!(status(&req, &all_bad), 426);
        // 403 before 503.
        let req = req_with("GET /ws HTTP/1.1", &[HOST, UPG, CONN, KEYH, VER, evil]);
        assert_eq!(status(&req, &all_bad), 403);
        // Then 503.
        let req = req_with(
            "GET /ws HTTP/1.1",
            &[HOST, UPG, CONN, KEYH, VER, "Origin: https://ok.example"],
        );
        assert_eq!(status(&req, &all_bad), 503);
        let req = req_with("GET /ws HTTP/1.1", &[HOST, UPG, CONN, KEYH, VER]);
        assert_eq!(status(&req, &all_bad), 503);
    }

    // ---- other routes ----------------------------------------------------------------------

    #[test]
    fn healthz_get_head_and_draining() {
        let r = reply("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &ctx());
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ok\n");
        assert_eq!(r.content_length(), 3);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let h = reply("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &ctx());
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        assert_eq!(h.headers, r.headers);
        // HTTP/1.0 and no Host are fine for plain requests.
        assert_eq!(status("GET /healthz HTTP/1.0\r\n\r\n", &ctx()), 200);

        let d = HttpContext {
            draining: true,
            ..ctx()
        };
        let r = reply("GET /healthz HTTP/1.1\r\n\r\n", &d);
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"draining\n");
        let h = reply("HEAD /healthz HTTP/1.1\r\n\r\n", &d);
        assert_eq!(h.status, 503);
        assert_eq!(h.headers, r.headers);
        // Capacity does not affect health.
        assert_eq!(
            status(
                "GET /healthz HTTP/1.1\r\n\r\n",
                &HttpContext {
                    at_capacity: true,
                    ..ctx()
                }
            ),
            200
        );
    }

    #[test]
    fn page_is_served_with_asset_headers() {
        let asset = crate::assets::lookup("/").expect("the page exists");
        let raw = match handle_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &ctx()) {
            HttpOutcome::Reply(raw) => raw,
            other => panic!("{other:?}"),
        };
        let r = parse_reply(&raw);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, asset.body);
        assert_eq!(r.content_length(), asset.body.len());
        assert_eq!(r.header("content-type"), Some(asset.content_type));
        assert_eq!(r.header("etag"), Some(asset.etag));
        assert_eq!(r.header("cache-control"), Some(asset.cache_control));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let head_end = raw.len() - asset.body.len();
        let head = String::from_utf8_lossy(&raw[..head_end]);
        assert!(head.contains(crate::assets::PAGE_HEADERS), "{head}");

        let h = reply("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", &ctx());
        assert_eq!(h.status, 200);
        assert_eq!(h.headers, r.headers);
        assert!(h.body.is_empty());
        // An upgrade request to the page is just a page request.
        assert_eq!(status(&upgrade_req("/", ""), &ctx()), 200);
    }

    #[test]
    fn if_none_match_gives_304() {
        let asset = crate::assets::lookup("/").expect("the page exists");
        let etag = asset.etag;
        let get = |inm: &str| {
            let req = format!("GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: {inm}\r\n\r\n");
            reply(&req, &ctx())
        };
        for inm in [
            etag.to_string(),
            "*".to_string(),
            format!("W/{etag}"),
            format!("\"zzz\", {etag}"),
            format!("\"a,b\",W/\"c\",  {etag} , \"d\""),
        ] {
            let r = get(&inm);
            assert_eq!(r.status, 304, "{inm}");
            assert!(r.body.is_empty());
            assert_eq!(r.header("etag"), Some(etag));
            assert_eq!(r.header("cache-control"), Some(asset.cache_control));
            assert_eq!(r.content_length(), asset.body.len());
        }
        for inm in ["\"zzz\"", "", "garbage", "\"unterminated", "W/", "zzz, *"] {
            assert_eq!(get(inm).status, 200, "{inm}");
        }
        // Several If-None-Match lines, and HEAD.
        let req =
            format!("HEAD / HTTP/1.1\r\nIf-None-Match: \"q\"\r\nif-none-match: {etag}\r\n\r\n");
        let r = reply(&req, &ctx());
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
    }

    #[test]
    fn other_methods_are_405() {
        for req in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "PUT /ws HTTP/1.1\r\n\r\n",
            "DELETE /nope HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "POST /healthz HTTP/1.0\r\n\r\n",
        ] {
            let r = reply(req, &ctx());
            assert_eq!(r.status, 405, "{req:?}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
            assert_eq!(r.body, b"method not allowed\n");
        }
        // A 405 to an upgrade attempt with POST.
        let req = upgrade_req("/ws", "").replacen("GET", "POST", 1);
        assert_eq!(status(&req, &ctx()), 405);
    }

    #[test]
    fn unknown_paths_are_404() {
        for req in [
            "GET /nope HTTP/1.1\r\n\r\n",
            "GET /index.htm HTTP/1.1\r\n\r\n",
            "GET /%77s HTTP/1.1\r\n\r\n",
            "GET /healthz/ HTTP/1.1\r\n\r\n",
        ] {
            let r = reply(req, &ctx());
            assert_eq!(r.status, 404, "{req:?}");
            assert_eq!(r.body, b"not found\n");
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
        let r = reply("HEAD /nope HTTP/1.1\r\n\r\n", &ctx());
        assert_eq!(r.status, 404);
        assert!(r.body.is_empty());
        assert_eq!(r.content_length(), "not found\n".len());
    }

    #[test]
    fn every_reply_body_matches_its_status() {
        for code in [400, 403, 404, 405, 426, 431, 503] {
            assert!(error_body(code).ends_with('\n'));
        }
    }

    // ---- incomplete heads and limits --------------------------------------------------------

    fn sample_requests() -> Vec<String> {
        vec![
            upgrade_req("/ws", ""),
            upgrade_req("/echo?x=1", "Origin: https://a.example\r\n"),
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "HEAD / HTTP/1.1\r\n\r\n".to_string(),
            "POST /x HTTP/1.1\r\n\r\n".to_string(),
            "GET /nope HTTP/1.0\r\n\r\n".to_string(),
            "GET /ws HTTP/1.1\n\n".to_string(),
        ]
    }

    #[test]
    fn incomplete_heads_split_at_every_byte() {
        assert_eq!(handle_request(b"", &ctx()), HttpOutcome::Incomplete);
        for req in sample_requests() {
            let bytes = req.as_bytes();
            let full = handle_request(bytes, &ctx());
            assert_ne!(full, HttpOutcome::Incomplete, "{req:?}");
            for cut in 0..bytes.len() {
                assert_eq!(
                    handle_request(&bytes[..cut], &ctx()),
                    HttpOutcome::Incomplete,
                    "{req:?} cut at {cut}"
                );
            }
        }
    }

    /// A GET /ws upgrade padded with an `X-Pad` header to exactly `len` bytes.
    fn padded_upgrade(len: usize) -> String {
        let base = upgrade_req("/ws", "X-Pad: \r\n");
        assert!(len >= base.len());
        upgrade_req(
            "/ws",
            &format!("X-Pad: {}\r\n", "a".repeat(len - base.len())),
        )
    }

    #[test]
    fn head_exactly_at_the_limit_is_accepted() {
        for max in [200, 1024, 8192] {
            let c = HttpContext {
                max_head_bytes: max,
                ..ctx()
            };
            let req = padded_upgrade(max);
            assert_eq!(req.len(), max);
            let (_, head_len, _) = expect_upgrade(&req, &c);
            assert_eq!(head_len, max);
            // With pipelined frame bytes after it.
            let mut buf = req.clone().into_bytes();
            buf.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
            match handle_request(&buf, &c) {
                HttpOutcome::Upgrade { head_len, .. } => assert_eq!(head_len, max),
                other => panic!("{other:?}"),
            }
            // Every proper prefix is Incomplete.
            for cut in [0, 1, max / 2, max - 1] {
                assert_eq!(
                    handle_request(&req.as_bytes()[..cut], &c),
                    HttpOutcome::Incomplete
                );
            }
        }
    }

    #[test]
    fn head_over_the_limit_is_431() {
        for max in [200, 1024, 8192] {
            let c = HttpContext {
                max_head_bytes: max,
                ..ctx()
            };
            // Complete, one byte too long.
            let req = padded_upgrade(max + 1);
            let r = reply(&req, &c);
            assert_eq!(r.status, 431);
            assert_eq!(r.body, b"request header fields too large\n");
            assert_eq!(r.header("cache-control"), Some("no-store"));
            // Incomplete and already at the limit: no head can fit any more.
            let partial = &req.as_bytes()[..max];
            match handle_request(partial, &c) {
                HttpOutcome::Reply(r) => assert_eq!(parse_reply(&r).status, 431),
                other => panic!("{other:?}"),
            }
            // Incomplete and past it (an endless header line).
            let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(max));
            match handle_request(endless.as_bytes(), &c) {
                HttpOutcome::Reply(r) => assert_eq!(parse_reply(&r).status, 431),
                other => panic!("{other:?}"),
            }
        }
        // The default limit with a big cookie.
        let req = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
            "c".repeat(9000)
        );
        assert_eq!(status(&req, &ctx()), 431);
        // HEAD over the limit: no body.
        let req = format!("HEAD / HTTP/1.1\r\nCookie: {}\r\n\r\n", "c".repeat(9000));
        let r = reply(&req, &ctx());
        assert_eq!(r.status, 431);
    }

    #[test]
    fn zero_limit_never_panics() {
        let c = HttpContext {
            max_head_bytes: 0,
            ..ctx()
        };
        assert_eq!(handle_request(b"", &c), HttpOutcome::Incomplete);
        match handle_request(b"G", &c) {
            HttpOutcome::Reply(r) => assert_eq!(parse_reply(&r).status, 431),
            other => panic!("{other:?}"),
        }
    }

    // ---- properties -------------------------------------------------------------------------

    /// Checks the invariants of any outcome for `buf`.
    fn check_outcome(buf: &[u8], c: &HttpContext<'_>, out: &HttpOutcome) {
        match out {
            HttpOutcome::Incomplete => assert!(buf.is_empty() || buf.len() < c.max_head_bytes),
            HttpOutcome::Reply(r) => {
                let _ = parse_reply(r);
            }
            HttpOutcome::Upgrade {
                head_len, response, ..
            } => {
                assert!(*head_len <= buf.len());
                assert!(*head_len <= c.max_head_bytes);
                assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            }
        }
    }

    fn random_case(s: &str, mask: u64) -> String {
        s.chars()
            .enumerate()
            .map(|(i, ch)| {
                if mask >> (i % 64) & 1 == 1 {
                    ch.to_ascii_uppercase()
                } else {
                    ch.to_ascii_lowercase()
                }
            })
            .collect()
    }

    prop_compose! {
        /// A request head (valid HTTP) with random method, path, headers and header case.
        fn request_head()(
            method in prop::sample::select(vec!["GET", "GET", "GET", "HEAD", "POST", "PUT"]),
            path in prop::sample::select(vec!["/ws", "/echo", "/ws?a=b", "/", "/healthz", "/nope", "/index.html"]),
            version in prop::sample::select(vec!["1.1", "1.1", "1.1", "1.0"]),
            drop_mask in 0u8..,
            case_mask in any::<u64>(),
            extra in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,40}"), 0..5),
            shuffle in any::<u64>(),
            version_value in prop::sample::select(vec!["13", "13", "8", " 13 "]),
            origin in prop::sample::select(vec!["", "https://ok.example", "https://evil.example", "HTTPS://OK.EXAMPLE"]),
        ) -> String {
            let mut lines: Vec<String> = Vec::new();
            let std_headers = [
                ("Host", "example.com".to_string()),
                ("Upgrade", "websocket".to_string()),
                ("Connection", "keep-alive, Upgrade".to_string()),
                ("Sec-WebSocket-Key", KEY.to_string()),
                ("Sec-WebSocket-Version", version_value.to_string()),
            ];
            for (i, (name, value)) in std_headers.iter().enumerate() {
                // Usually keep every standard header; sometimes drop some.
                if drop_mask < 200 || (drop_mask >> i) & 1 == 0 {
                    lines.push(format!("{}: {}", random_case(name, case_mask.rotate_left(i as u32 * 7)), value));
                }
            }
            if !origin.is_empty() {
                lines.push(format!("Origin: {origin}"));
            }
            for (name, value) in extra {
                // Avoid colliding with the headers under test.
                lines.push(format!("X-{name}: {}", value.trim()));
            }
            // A deterministic shuffle.
            let n = lines.len();
            for i in (1..n).rev() {
                let j = (shuffle.rotate_left(i as u32) as usize) % (i + 1);
                lines.swap(i, j);
            }
            let mut s = format!("{method} {path} HTTP/{version}\r\n");
            for l in lines {
                s.push_str(&l);
                s.push_str("\r\n");
            }
            s.push_str("\r\n");
            s
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(
            buf in prop::collection::vec(any::<u8>(), 0..600),
            max in prop::sample::select(vec![0usize, 1, 16, 64, 300, 8192]),
        ) {
            let c = HttpContext { max_head_bytes: max, ..ctx() };
            let out = handle_request(&buf, &c);
            check_outcome(&buf, &c, &out);
        }

        #[test]
        fn mutated_requests_never_panic(
            req in request_head(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
            draining in any::<bool>(),
        ) {
            let allowed = vec!["https://ok.example".to_string()];
            let c = HttpContext { draining, allowed_origins: &allowed, ..ctx() };
            let mut buf = req.into_bytes();
            for (at, byte, op) in edits {
                let i = at.index(buf.len() + 1);
                match op {
                    0 => buf.insert(i, byte),
                    1 if i < buf.len() => { buf[i] = byte; }
                    _ if i < buf.len() => { buf.remove(i); }
                    _ => {}
                }
            }
            let out = handle_request(&buf, &c);
            check_outcome(&buf, &c, &out);
        }

        #[test]
        fn valid_requests_split_anywhere(
            req in request_head(),
            cut in any::<prop::sample::Index>(),
            tail in prop::collection::vec(any::<u8>(), 0..64),
            allow in any::<bool>(),
            max in prop::sample::select(vec![256usize, 8192]),
        ) {
            let allowed = vec!["https://ok.example".to_string()];
            let c = HttpContext {
                max_head_bytes: max,
                allowed_origins: if allow { &allowed } else { &[] },
                ..ctx()
            };
            let bytes = req.as_bytes();
            let full = handle_request(bytes, &c);
            check_outcome(bytes, &c, &full);
            prop_assert_ne!(&full, &HttpOutcome::Incomplete);
            let cut = cut.index(bytes.len());
            // Before the end: Incomplete unless the prefix is already over the limit.
            let prefix = handle_request(&bytes[..cut], &c);
            if cut < max {
                prop_assert_eq!(&prefix, &HttpOutcome::Incomplete);
            } else {
                // A head longer than the limit: 431 already, as at the end.
                prop_assert_eq!(&prefix, &full);
            }
            // Bytes pipelined after the head change nothing.
            let mut with_tail = bytes.to_vec();
            with_tail.extend_from_slice(&tail);
            let out = handle_request(&with_tail, &c);
            prop_assert_eq!(&out, &full);
            if let HttpOutcome::Upgrade { head_len, .. } = out {
                prop_assert_eq!(head_len, bytes.len());
            }
        }

        #[test]
        fn complete_upgrades_succeed_with_any_header_case(
            case_mask in any::<u64>(),
            extra in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[!-~]{0,40}"), 0..5),
        ) {
            let lines = [HOST, UPG, "Connection: keep-alive, Upgrade", KEYH, VER];
            let mut s = String::from("GET /ws?q=1 HTTP/1.1\r\n");
            for (i, l) in lines.iter().enumerate() {
                let (name, value) = l.split_once(':').unwrap();
                s.push_str(&format!("{}:{value}\r\n", random_case(name, case_mask.rotate_left(i as u32 * 11))));
            }
            for (name, value) in extra {
                s.push_str(&format!("X-{name}: {value}\r\n"));
            }
            s.push_str("\r\n");
            let (endpoint, head_len, response) = expect_upgrade(&s, &ctx());
            prop_assert_eq!(endpoint, Endpoint::Chat);
            prop_assert_eq!(head_len, s.len());
            prop_assert_eq!(response, expected_101());
        }
    }
}
