//! PROTOCOL.md "Transport" (HTTP side) and the HTTP rows of "Limits and bad input", against
//! the real binary with hand-written requests.
mod util;

use std::io::Write;
use std::time::{Duration, Instant};
use util::*;

fn raw(server: &Server, req: &str) -> HttpResponse {
    http_exchange(server.addr, req.as_bytes(), false)
}

fn raw_head(server: &Server, req: &str) -> HttpResponse {
    http_exchange(server.addr, req.as_bytes(), true)
}

fn assert_status_body(r: &HttpResponse, status: u16, body: &str) {
    assert_eq!(r.status, status, "status of {:?}", r.head);
    assert_eq!(r.body_str(), body, "body of the {status}");
}

#[test]
fn get_root_serves_the_page_and_its_assets() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    let r = get(server.addr, "/");
    assert_eq!(r.status, 200, "{:?}", r.head);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        r.head
    );
    let etag = r.header("etag").expect("ETag on /").to_string();
    let html = r.body_str();
    assert!(
        html.to_ascii_lowercase().contains("<html"),
        "the page is HTML"
    );
    // Every same-origin asset the page references is served.
    let mut refs = 0;
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let url = &part[..part.find('"').unwrap()];
            if !url.starts_with('/') || url.starts_with("//") {
                continue;
            }
            let a = get(server.addr, url);
            assert_eq!(a.status, 200, "asset {url}: {:?}", a.head);
            assert!(!a.body.is_empty(), "asset {url} is empty");
            assert!(
                a.header("content-type").is_some(),
                "asset {url} has no Content-Type"
            );
            refs += 1;
        }
    }
    assert!(refs > 0, "the page references no assets?");

    // Revalidation: the same ETag gives 304 without a body; another one gives the page.
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n");
    let r304 = raw(&server, &req);
    assert_eq!(r304.status, 304, "{:?}", r304.head);
    assert_eq!(r304.header("etag"), Some(etag.as_str()));
    let r200 = raw(
        &server,
        "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"0000000000000000\"\r\n\r\n",
    );
    assert_eq!(r200.status, 200);
    assert_eq!(r200.body_str(), html);
}

#[test]
fn head_is_answered_like_get_without_a_body() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    for path in ["/", "/healthz", "/no-such-page"] {
        let g = get(server.addr, path);
        let h = raw_head(&server, &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(h.status, g.status, "HEAD {path}");
        assert_eq!(
            h.header("content-length"),
            g.header("content-length"),
            "HEAD {path} Content-Length"
        );
        assert_eq!(
            h.header("content-type"),
            g.header("content-type"),
            "HEAD {path} Content-Type"
        );
        assert!(h.body.is_empty());
    }
}

#[test]
fn healthz_is_ok() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "2"]);
    for _ in 0..3 {
        assert_status_body(&get(server.addr, "/healthz"), 200, "ok\n");
    }
    let h = raw_head(&server, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("3"));
}

#[test]
fn query_string_does_not_change_the_route() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    assert_status_body(&get(server.addr, "/healthz?probe=1"), 200, "ok\n");
    assert_eq!(get(server.addr, "/nope?x=1").status, 404);
}

#[test]
fn unknown_paths_are_404() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    for path in [
        "/nope",
        "/ws/",
        "/wsx",
        "/healthz/x",
        "/metrics",
        "/index.htm",
        "/%2e%2e/Cargo.toml",
    ] {
        assert_status_body(&get(server.addr, path), 404, "not found\n");
    }
    // The client keeps sending (a body the server does not want): it still reads the whole
    // 404 and a clean end, not a reset.
    let mut s = tcp(server.addr);
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
        .unwrap();
    let _ = s.write_all(&vec![b'b'; 300_000]);
    let r = http_read_response(&mut s, false);
    assert_status_body(&r, 404, "not found\n");
}

#[test]
fn other_methods_are_405_with_allow_on_any_path() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        for path in ["/", "/ws", "/healthz", "/no-such-page", "/echo"] {
            let r = raw(
                &server,
                &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            );
            assert_status_body(&r, 405, "method not allowed\n");
            assert_eq!(
                r.header_tokens("allow"),
                vec!["get", "head"],
                "Allow on {method} {path}: {:?}",
                r.head
            );
        }
    }
    // A POST with a body still gets its 405 (and the body is read and discarded, not a reset).
    let r = raw(
        &server,
        "POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn chat_and_echo_without_upgrade_are_400() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1", "--enable-echo"]);
    for path in ["/ws", "/echo"] {
        assert_status_body(&get(server.addr, path), 400, "bad request\n");
        // Upgrade to something else.
        let r = raw(
            &server,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
            ),
        );
        assert_status_body(&r, 400, "bad request\n");
        // Upgrade header without `Connection: Upgrade` is not an upgrade (RFC 6455 §4.2.1).
        let r = raw(
            &server,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        );
        assert_status_body(&r, 400, "bad request\n");
        // An upgrade without a key is not a valid handshake (RFC 6455 §4.2.1 / §4.2.2).
        let r = raw(
            &server,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        );
        assert_status_body(&r, 400, "bad request\n");
    }
}

#[test]
fn head_upgrade_is_400() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1", "--enable-echo"]);
    for path in ["/ws", "/echo"] {
        let req = upgrade_request(path, "").replacen("GET ", "HEAD ", 1);
        let r = raw_head(&server, &req);
        assert_eq!(r.status, 400, "HEAD {path} upgrade: {:?}", r.head);
    }
}

#[test]
fn bad_or_missing_version_is_426_with_headers() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1", "--enable-echo"]);
    let base = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for path in ["/ws", "/echo"] {
        for version in [
            "Sec-WebSocket-Version: 8\r\n",
            "Sec-WebSocket-Version: 14\r\n",
            "Sec-WebSocket-Version: abc\r\n",
            "",
        ] {
            let r = raw(
                &server,
                &format!("GET {path} HTTP/1.1\r\n{base}{version}\r\n"),
            );
            assert_status_body(&r, 426, "upgrade required\n");
            assert!(
                r.head.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
                "{:?}",
                r.head
            );
            assert_eq!(
                r.header("upgrade").map(str::to_ascii_lowercase).as_deref(),
                Some("websocket"),
                "{:?}",
                r.head
            );
            assert_eq!(
                r.header("sec-websocket-version"),
                Some("13"),
                "{:?}",
                r.head
            );
        }
    }
}

#[test]
fn oversized_head_is_431_and_the_client_reads_it() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    // A head just under 8 KiB is fine.
    let fill = "a".repeat(8192 - 200);
    let r = raw(
        &server,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fill: {fill}\r\n\r\n"),
    );
    assert_status_body(&r, 200, "ok\n");
    // Over 8 KiB: 431, on any path, upgrade or not.
    let fill = "a".repeat(9000);
    for req in [
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fill: {fill}\r\n\r\n"),
        upgrade_request("/ws", &format!("X-Fill: {fill}\r\n")),
        // Many small headers.
        format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n".repeat(200)),
    ] {
        assert_status_body(&raw(&server, &req), 431, "request header fields too large\n");
    }
    // A client that keeps sending far more than the limit (a head that never ends) still
    // reads the whole 431 followed by a clean EOF, not a reset (graceful close).
    let mut s = tcp(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Fill: ")
        .unwrap();
    let junk = vec![b'z'; 64 * 1024];
    for _ in 0..4 {
        if s.write_all(&junk).is_err() {
            break;
        }
    }
    let r = http_read_response(&mut s, false);
    assert_status_body(&r, 431, "request header fields too large\n");
}

#[test]
fn max_head_bytes_flag_sets_the_limit() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1", "--max-head-bytes", "1024"]);
    let r = raw(
        &server,
        &format!(
            "GET /healthz HTTP/1.1\r\nX-Fill: {}\r\n\r\n",
            "a".repeat(800)
        ),
    );
    assert_status_body(&r, 200, "ok\n");
    let r = raw(
        &server,
        &format!(
            "GET /healthz HTTP/1.1\r\nX-Fill: {}\r\n\r\n",
            "a".repeat(1500)
        ),
    );
    assert_status_body(&r, 431, "request header fields too large\n");
}

#[test]
fn malformed_requests_are_400() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    let cases: [&[u8]; 7] = [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / FOO/1.1\r\n\r\n",
        b"\x00\x01\x02\x03\x04\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \x01\x02\r\n\r\n",
    ];
    for req in cases {
        let r = http_exchange(server.addr, req, false);
        assert_eq!(
            r.status,
            400,
            "request {:?} got {:?}",
            String::from_utf8_lossy(req),
            r.head
        );
        assert_eq!(r.body_str(), "bad request\n");
    }
}

#[test]
fn echo_is_404_when_off() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    assert_status_body(&get(server.addr, "/echo"), 404, "not found\n");
    assert_status_body(
        &raw(&server, &upgrade_request("/echo", "")),
        404,
        "not found\n",
    );
    // And on when asked, also through the environment variable.
    let on = Server::start_with_env(&["--shards", "1"], &[("ROULETTE_ENABLE_ECHO", "true")]);
    let mut ws = RawWs::connect(on.addr, "/echo");
    ws.send(&ctext("env"));
    assert_eq!(ws.read_message(SOON).unwrap(), (OP_TEXT, b"env".to_vec()));
}

#[test]
fn origin_allow_list_is_403_for_others() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1", "--allowed-origin", "http://good.example"]);
    for origin in [
        "http://evil.example",
        "http://good.example.evil",
        "https://good.example",
        "null",
    ] {
        let r = raw(
            &server,
            &upgrade_request("/ws", &format!("Origin: {origin}\r\n")),
        );
        assert_status_body(&r, 403, "forbidden\n");
    }
    // Allowed origin and no origin (not a browser): upgraded.
    let mut a = RawWs::connect_pipelined(server.addr, "/ws", &[]);
    let (op, hello) = a.read_message(SOON).unwrap();
    assert_eq!(op, OP_TEXT);
    assert!(String::from_utf8(hello).unwrap().contains("\"hello\""));
    let mut b = RawWs::upgrade_with(
        server.addr,
        upgrade_request("/ws", "Origin: http://good.example\r\n").as_bytes(),
    );
    let (op, _) = b.read_message(SOON).unwrap();
    assert_eq!(op, OP_TEXT);
    // Repeatable flag, and the environment variable (comma-separated).
    let by_flag = Server::start(&[
        "--shards",
        "1",
        "--allowed-origin",
        "http://a.example",
        "--allowed-origin",
        "http://b.example",
    ]);
    let by_env = Server::start_with_env(
        &["--shards", "1"],
        &[(
            "ROULETTE_ALLOWED_ORIGIN",
            "http://a.example,http://b.example",
        )],
    );
    for server in [&by_flag, &by_env] {
        for ok in ["http://a.example", "http://b.example"] {
            let _c = RawWs::upgrade_with(
                server.addr,
                upgrade_request("/ws", &format!("Origin: {ok}\r\n")).as_bytes(),
            );
        }
        let r = http_exchange(
            server.addr,
            upgrade_request("/ws", "Origin: http://c.example\r\n").as_bytes(),
            false,
        );
        assert_eq!(r.status, 403);
    }
}

#[test]
fn connection_limit_gives_503_before_the_upgrade() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "2", "--max-connections", "2", "--enable-echo"]);
    let mut a = ws_connect(server.addr, "/ws");
    a.hello();
    let _b = ws_connect(server.addr, "/echo");
    for path in ["/ws", "/echo"] {
        let r = raw(&server, &upgrade_request(path, ""));
        assert_status_body(&r, 503, "service unavailable\n");
    }
    // Plain HTTP is not a WebSocket connection.
    assert_status_body(&get(server.addr, "/healthz"), 200, "ok\n");
    // Once one closes, a new upgrade is accepted again.
    a.close_and_end();
    let deadline = Instant::now() + SOON;
    loop {
        match try_ws_connect(server.addr, "/ws") {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("still refused: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("a slot was freed but upgrades are still refused: {e}"),
        }
    }
}

#[test]
fn handshake_timeout_closes_slow_clients() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1", "--handshake-timeout", "0.5"]);
    let check = |what: &str, s: &mut std::net::TcpStream, start: Instant| {
        let got = read_to_eof(s, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(400),
            "{what}: closed after {took:?}, before the timeout"
        );
        assert!(
            took <= Duration::from_secs(3),
            "{what}: closed only after {took:?}"
        );
        if !got.is_empty() {
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.starts_with("HTTP/1.1 408"),
                "{what}: only a 408 may be sent, got {text:?}"
            );
            assert!(text.ends_with("request timeout\n"), "{what}: {text:?}");
        }
    };
    // Nothing at all.
    let start = Instant::now();
    let mut s = tcp(server.addr);
    check("silent client", &mut s, start);
    // Half a head.
    let start = Instant::now();
    let mut s = tcp(server.addr);
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    check("half a head", &mut s, start);
    // Slowloris: a byte every 50 ms keeps the socket busy but the head never completes.
    let start = Instant::now();
    let mut s = tcp(server.addr);
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(b"GET / HTTP/1.1\r\n");
            for _ in 0..60 {
                if w.write_all(b"X").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    check("slowloris", &mut s, start);
    drop(writer);
    // A complete head in time is served normally.
    assert_status_body(&get(server.addr, "/healthz"), 200, "ok\n");
}

#[test]
fn header_names_and_tokens_are_case_insensitive() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    let req =
        "GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, Upgrade\r\n\
               sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n";
    let mut ws = RawWs::upgrade_with(server.addr, req.as_bytes());
    let (op, hello) = ws.read_message(SOON).unwrap();
    assert_eq!(op, OP_TEXT);
    let v: serde_json::Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(v["type"], "hello");
    // `Connection: Upgrade, keep-alive` in another order and spacing.
    let req =
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade,keep-alive\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let _ws = RawWs::upgrade_with(server.addr, req.as_bytes());
}

#[test]
fn frames_pipelined_after_the_head_are_processed() {
    let _w = watchdog(30);
    for_each_shards(&["--enable-echo"], |server| {
        let mut frames = ctext("hello");
        frames.extend(cframe(true, OP_BINARY, &[1, 2, 3]));
        let mut ws = RawWs::connect_pipelined(server.addr, "/echo", &frames);
        assert_eq!(ws.read_message(SOON).unwrap(), (OP_TEXT, b"hello".to_vec()));
        assert_eq!(ws.read_message(SOON).unwrap(), (OP_BINARY, vec![1, 2, 3]));
        // On /ws: hello first, then the answer to the pipelined find.
        let mut ws = RawWs::connect_pipelined(server.addr, "/ws", &ctext(r#"{"type":"find"}"#));
        let (_, hello) = ws.read_message(SOON).unwrap();
        let hello: serde_json::Value = serde_json::from_slice(&hello).unwrap();
        assert_eq!(hello["type"], "hello");
        let (_, waiting) = ws.read_message(SOON).unwrap();
        let waiting: serde_json::Value = serde_json::from_slice(&waiting).unwrap();
        assert_eq!(waiting, serde_json::json!({"type":"waiting"}));
    });
}

#[test]
fn upgrade_response_is_rfc_6455() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    let mut s = tcp(server.addr);
    s.write_all(upgrade_request("/ws", "").as_bytes()).unwrap();
    let (head, _) = read_head(&mut s, SOON).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    check_101(&head, SAMPLE_ACCEPT);
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "2"]);
    let r = get(server.metrics_addr, "/metrics");
    assert_eq!(r.status, 200, "{:?}", r.head);
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain; version=0.0.4"),
        "Content-Type {ct:?}"
    );
    let body = r.body_str();
    assert!(body.contains("roulette_online_clients"), "{body}");
    // Every sample line is `name{labels} value`.
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad sample line {line:?}"
        );
    }
    // The gauge follows the connected chat clients.
    let _a = chat(server.addr);
    let _b = chat(server.addr);
    let deadline = Instant::now() + SOON;
    loop {
        let body = get(server.metrics_addr, "/metrics").body_str();
        let v = body
            .lines()
            .find(|l| {
                l.starts_with("roulette_online_clients ")
                    || l.starts_with("roulette_online_clients{")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if v == Some(2.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "roulette_online_clients is {v:?}, expected 2"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The chat gauges follow the sessions (counted by the shards, summed over them).
    server.wait_metric("roulette_paired_clients", 0.0, SOON);
    let (mut a, _b) = pair(server.addr);
    server.wait_metric("roulette_paired_clients", 2.0, SOON);
    server.wait_metric("roulette_chat_pairs", 1.0, SOON);
    a.send_text(r#"{"type":"leave"}"#);
    server.wait_metric("roulette_paired_clients", 0.0, SOON);
    server.wait_metric("roulette_chat_pairs", 0.0, SOON);
}

#[test]
fn request_heads_split_into_single_bytes_are_served() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1"]);
    let mut s = tcp(server.addr);
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let r = http_read_response(&mut s, false);
    assert_status_body(&r, 200, "ok\n");
    let mut s = tcp(server.addr);
    for b in upgrade_request("/ws", "").as_bytes() {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let (head, _) = read_head(&mut s, SOON).unwrap();
    check_101(&head, SAMPLE_ACCEPT);
}
