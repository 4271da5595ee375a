//! PROTOCOL.md shutdown row: on SIGTERM/SIGINT the server drains — `/healthz` and new
//! upgrades get 503, every client gets close 1001 — and exits 0 once all are closed or when
//! the grace period ends.
mod util;

use std::time::{Duration, Instant};
use util::*;

/// Wait until `/healthz` answers 503 (the signal is handled asynchronously).
fn wait_draining(server: &Server) -> HttpResponse {
    let deadline = Instant::now() + SOON;
    loop {
        let r = get(server.addr, "/healthz");
        if r.status == 503 {
            return r;
        }
        assert_eq!(r.status, 200, "{:?}", r.head);
        assert!(
            Instant::now() < deadline,
            "/healthz still 200 after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_closes_every_client_1001_and_exits_0_when_all_are_closed() {
    let _w = watchdog(120);
    // A grace period far longer than the clients need to answer, even on a loaded machine: the
    // test shows the server leaving because every client closed, so the grace period must not
    // be what ends it.
    let mut server = Server::start(&["--shards", "2", "--enable-echo", "--grace-period", "60"]);
    let mut clients = Vec::new();
    for i in 0..200 {
        let path = if i % 2 == 0 { "/ws" } else { "/echo" };
        let mut c = ws_connect(server.addr, path);
        if path == "/ws" {
            c.hello();
        }
        clients.push(c);
    }
    // Some chat clients are chatting, some waiting, the rest idle.
    for i in 0..21 {
        clients[2 * i].send_text(r#"{"type":"find"}"#);
        let v = clients[2 * i].next_json(SOON);
        assert!(v["type"] == "waiting" || v["type"] == "paired", "{v}");
    }
    clients[1].send_text("echo before shutdown");
    assert!(matches!(
        clients[1].recv(SOON),
        Recv::Msg(tungstenite::Message::Text(_))
    ));

    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let r = wait_draining(&server);
    assert_eq!(r.body_str(), "draining\n");
    for path in ["/ws", "/echo"] {
        let r = http_exchange(server.addr, upgrade_request(path, "").as_bytes(), false);
        assert_eq!(
            r.status, 503,
            "new upgrade to {path} while draining: {:?}",
            r.head
        );
        assert_eq!(r.body_str(), "service unavailable\n");
    }
    let h = http_exchange(
        server.addr,
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        true,
    );
    assert_eq!(h.status, 503);
    // Every client gets 1001 Going Away; each answers and sees the connection end.
    for (i, c) in clients.iter_mut().enumerate() {
        eprintln!("client {i}");
        c.expect_close(1001);
    }
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server did not exit");
    eprintln!("exited {:?} after SIGTERM", t0.elapsed());
    assert!(status.success(), "exit status {status}");
    assert!(server.log_contains("draining"), "the drain is logged");
    // It left because every client had closed, not because the grace period ran out.
    assert!(
        server.log_contains("drained: every connection closed"),
        "log:\n{}",
        server.log_text()
    );
    assert!(!server.log_contains("grace period over"));
}

#[test]
fn clients_that_never_answer_the_close_do_not_delay_exit_past_the_grace_period() {
    let _w = watchdog(60);
    let mut server = Server::start(&["--shards", "2", "--enable-echo", "--grace-period", "1.5"]);
    let mut raws: Vec<RawWs> = (0..20)
        .map(|i| RawWs::connect(server.addr, if i % 2 == 0 { "/ws" } else { "/echo" }))
        .collect();
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("the server did not exit after the grace period");
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(1400),
        "exited after {took:?}, before the grace period, with clients still open"
    );
    assert!(
        took <= Duration::from_millis(4000),
        "exited only after {took:?}"
    );
    // Each got its close 1001 before the end.
    for ws in &mut raws {
        assert_eq!(ws.read_close(SOON), Some(1001));
        ws.expect_tcp_closed(SOON);
    }
}

#[test]
fn sigint_drains_too() {
    let _w = watchdog(30);
    let mut server = Server::start(&["--shards", "1", "--grace-period", "5"]);
    let mut c = chat(server.addr);
    let t0 = Instant::now();
    server.signal(libc::SIGINT);
    c.expect_close(1001);
    let status = server
        .wait_exit(Duration::from_secs(4))
        .expect("exit after SIGINT");
    assert!(status.success(), "exit status {status}");
    eprintln!("exited {:?} after SIGINT", t0.elapsed());
    assert!(
        server.log_contains("drained: every connection closed"),
        "it left because every client had closed, not at the end of the grace period"
    );
}

#[test]
fn idle_server_exits_at_once() {
    let _w = watchdog(30);
    let mut server = Server::start(&["--shards", "2", "--grace-period", "10"]);
    assert_eq!(get(server.addr, "/healthz").status, 200);
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(status.success(), "exit status {status}");
    eprintln!("exited {:?} after SIGTERM with no client", t0.elapsed());
    assert!(
        server.log_contains("drained: every connection closed"),
        "with no client it does not wait for the grace period"
    );
}

#[test]
fn chat_partners_during_shutdown_get_1001_not_an_error() {
    let _w = watchdog(30);
    let mut server = Server::start(&[
        "--shards",
        "2",
        "--grace-period",
        "5",
        "--rate-limit-per-sec",
        "0",
    ]);
    let (mut a, mut b) = pair(server.addr);
    a.send_text(&msg("before"));
    b.expect_json(r#"{"type":"message","text":"before"}"#);
    server.signal(libc::SIGTERM);
    // Whatever chat messages arrive first (partner_left is allowed), the close is 1001.
    a.expect_close(1001);
    b.expect_close(1001);
    let status = server.wait_exit(Duration::from_secs(4)).expect("exit");
    assert!(status.success());
}
