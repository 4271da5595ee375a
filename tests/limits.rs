//! PROTOCOL.md "Limits and bad input": the rate limit (token bucket, rate_limited errors at
//! most 3 per second, pings free), sustained abuse (close 1008), the slow consumer (close
//! 1008, partner_left, others unaffected), and flags read from the environment.
mod util;

use serde_json::Value;
use std::time::{Duration, Instant};
use tungstenite::Message;
use util::*;

/// Read `b` until the relayed `marker`; returns the texts before it.
fn texts_until(b: &mut Client, marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let v = b.next_json(SOON);
        assert_eq!(v["type"], "message", "only messages expected, got {v}");
        let t = v["text"].as_str().unwrap().to_string();
        if t == marker {
            return out;
        }
        out.push(t);
    }
}

/// Read `a` until the error answering a probe; returns the error codes before it.
fn errors_until_probe(a: &mut Client) -> Vec<String> {
    a.send_text(r#"{"type":"probe-unknown"}"#);
    let mut codes = Vec::new();
    loop {
        let v = a.next_json(SOON);
        assert_eq!(v["type"], "error", "only errors expected, got {v}");
        let code = v["code"].as_str().unwrap().to_string();
        if code == "unknown_type" {
            return codes;
        }
        codes.push(code);
    }
}

fn numbers(texts: &[String], prefix: &str) -> Vec<u32> {
    texts
        .iter()
        .map(|t| {
            t.strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected text {t:?}"))
        })
        .collect()
}

#[test]
fn rate_limit_drops_a_burst_and_says_so_at_most_3_times_a_second() {
    let _w = watchdog(60);
    for_each_shards(&[], |server| {
        let (mut a, mut b) = pair(server.addr);
        // 60 messages at once: about the 40-token burst gets through (find cost one).
        for i in 0..60 {
            a.ws.write(Message::text(
                serde_json::json!({"type":"message","text":format!("m{i}")}).to_string(),
            ))
            .unwrap();
        }
        a.ws.flush().unwrap();
        let burst_at = Instant::now();
        // Errors for dropped messages arrive within that second: at least one, at most 3.
        let mut limited = 0;
        while burst_at.elapsed() < Duration::from_millis(950) {
            match a.recv(
                Duration::from_millis(950)
                    .saturating_sub(burst_at.elapsed())
                    .max(Duration::from_millis(1)),
            ) {
                Recv::Msg(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["type"], "error", "{v}");
                    assert_eq!(v["code"], "rate_limited", "{v}");
                    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
                    limited += 1;
                }
                Recv::Timeout => break,
                Recv::Msg(m) => panic!("unexpected {m:?}"),
                Recv::Closed(e) => panic!("closed: {e}"),
            }
        }
        assert!(
            (1..=3).contains(&limited),
            "{limited} rate_limited errors in the first second"
        );
        // The bucket refills at 20/s: a second later a message goes through again.
        std::thread::sleep(Duration::from_millis(1100).saturating_sub(burst_at.elapsed()));
        a.send_text(&msg("marker"));
        let got = numbers(&texts_until(&mut b, "marker"), "m");
        assert!(
            got.len() >= 35 && got.len() <= 55,
            "{} of 60 got through: {got:?}",
            got.len()
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
        assert_eq!(got[0], 0);
        let extra = errors_until_probe(&mut a);
        assert!(extra.iter().all(|c| c == "rate_limited"), "{extra:?}");
        assert!(
            limited + extra.len() <= 3,
            "{} rate_limited errors for one burst",
            limited + extra.len()
        );
        b.expect_no_reply();

        // Dropped typing messages get no reply.
        std::thread::sleep(Duration::from_millis(2100));
        for i in 0..60 {
            a.ws.write(Message::text(format!(
                r#"{{"type":"typing","active":{}}}"#,
                i % 2 == 0
            )))
            .unwrap();
        }
        a.ws.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        a.send_text(&msg("marker2"));
        let mut typing = 0;
        loop {
            let v = b.next_json(SOON);
            if v["type"] == "typing" {
                typing += 1;
                continue;
            }
            assert_eq!(v, serde_json::from_str::<Value>(&msg("marker2")).unwrap());
            break;
        }
        assert!(
            (35..=55).contains(&typing),
            "{typing} of 60 typing messages got through"
        );
        assert!(
            errors_until_probe(&mut a).is_empty(),
            "dropped typing messages must get no reply"
        );

        // Pings cost nothing: 100 pings, then a full burst of messages all get through.
        std::thread::sleep(Duration::from_millis(2100));
        for i in 0..100u32 {
            a.ws.write(Message::Ping(i.to_be_bytes().to_vec().into()))
                .unwrap();
        }
        for i in 0..36 {
            a.ws.write(Message::text(msg(&format!("p{i}")))).unwrap();
        }
        a.ws.flush().unwrap();
        for i in 0..36 {
            b.expect_json(&msg(&format!("p{i}")));
        }
        let mut pongs = 0;
        while pongs < 100 {
            match a.recv(SOON) {
                Recv::Msg(Message::Pong(_)) => pongs += 1,
                Recv::Msg(m) => panic!("expected only pongs, got {m:?}"),
                _ => panic!("only {pongs} pongs"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(errors_until_probe(&mut a).is_empty());
    });
}

#[test]
fn rate_limit_flags() {
    let _w = watchdog(30);
    // A small bucket.
    let server = Server::start(&[
        "--shards",
        "2",
        "--rate-limit-per-sec",
        "1",
        "--rate-limit-burst",
        "5",
    ]);
    let (mut a, mut b) = pair(server.addr);
    for i in 0..10 {
        a.ws.write(Message::text(msg(&format!("m{i}")))).unwrap();
    }
    a.ws.flush().unwrap();
    a.expect_error("rate_limited");
    std::thread::sleep(Duration::from_millis(1100));
    a.send_text(&msg("marker"));
    let got = numbers(&texts_until(&mut b, "marker"), "m");
    assert!(
        got == [0, 1, 2, 3] || got == [0, 1, 2, 3, 4],
        "with a burst of 5 (one spent on find): {got:?}"
    );
    // No limit at all, set through the environment.
    let server =
        Server::start_with_env(&["--shards", "2"], &[("ROULETTE_RATE_LIMIT_PER_SEC", "0")]);
    let (mut a, mut b) = pair(server.addr);
    for i in 0..500 {
        a.ws.write(Message::text(msg(&format!("m{i}")))).unwrap();
    }
    a.ws.flush().unwrap();
    for i in 0..500 {
        b.expect_json(&msg(&format!("m{i}")));
    }
    a.expect_no_reply();
}

#[test]
fn sustained_abuse_closes_1008_and_the_partner_gets_partner_left() {
    let _w = watchdog(30);
    for_each_shards(&[], |server| {
        let (mut a, mut b) = pair(server.addr);
        let mut sent = 0u32;
        let mut limited = 0;
        let close_code = 'flood: loop {
            assert!(sent < 2000, "still open after {sent} messages");
            let mut write_failed = false;
            for _ in 0..10 {
                if a.ws.write(Message::text(msg(&format!("f{sent}")))).is_err() {
                    write_failed = true;
                    break;
                }
                sent += 1;
            }
            if a.ws.flush().is_err() {
                write_failed = true;
            }
            loop {
                let wait = if write_failed {
                    SOON
                } else {
                    Duration::from_millis(2)
                };
                match a.recv(wait) {
                    Recv::Msg(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        assert_eq!(v["code"], "rate_limited", "{v}");
                        limited += 1;
                    }
                    Recv::Msg(Message::Close(Some(f))) => break 'flood u16::from(f.code),
                    Recv::Msg(Message::Close(None)) => panic!("close without a code"),
                    Recv::Msg(_) => {}
                    Recv::Timeout if write_failed => {
                        panic!("writes failed but no close frame arrived")
                    }
                    Recv::Timeout => break,
                    Recv::Closed(e) => {
                        panic!("connection ended without a close frame after {sent} messages: {e}")
                    }
                }
            }
        };
        assert_eq!(close_code, 1008, "close code for sustained abuse");
        assert!(
            sent >= 130,
            "closed after only {sent} messages (burst 40 + more than 100 drops)"
        );
        assert!(limited >= 1);
        a.expect_end();
        // b got an in-order prefix of the flood, then partner_left.
        let mut last: Option<u32> = None;
        loop {
            let v = b.next_json(SOON);
            if v["type"] == "partner_left" {
                break;
            }
            assert_eq!(v["type"], "message", "{v}");
            let n: u32 = v["text"].as_str().unwrap()[1..].parse().unwrap();
            assert!(
                last.is_none_or(|l| n > l),
                "out of order: {n} after {last:?}"
            );
            last = Some(n);
        }
        b.expect_no_reply();
    });
}

#[test]
fn abuse_drops_flag() {
    let _w = watchdog(30);
    let server = Server::start(&[
        "--shards",
        "1",
        "--abuse-drops",
        "5",
        "--rate-limit-burst",
        "3",
        "--rate-limit-per-sec",
        "1",
    ]);
    let (mut a, mut b) = pair(server.addr);
    // 2 tokens left (find spent one): x0 and x1 pass, x2..x6 are 5 drops: not more than 5.
    for i in 0..7 {
        a.ws.write(Message::text(msg(&format!("x{i}")))).unwrap();
    }
    a.ws.flush().unwrap();
    // One token a second later: the probe passes and shows the connection is still open.
    std::thread::sleep(Duration::from_millis(1100));
    let errors = errors_until_probe(&mut a);
    assert!(
        !errors.is_empty() && errors.len() <= 3 && errors.iter().all(|c| c == "rate_limited"),
        "{errors:?}"
    );
    // The 6th drop within 10 s closes it.
    a.ws.write(Message::text(msg("x7"))).unwrap();
    a.ws.flush().unwrap();
    a.expect_close(1008);
    b.expect_json(&msg("x0"));
    b.expect_json(&msg("x1"));
    b.expect_json(PARTNER_LEFT);
}

#[test]
fn a_client_that_does_not_read_is_closed_1008_and_others_go_on() {
    let _w = watchdog(60);
    for_each_shards(&["--rate-limit-per-sec", "0"], |server| {
        let (mut a, mut b) = pair(server.addr);
        let (mut c, mut d) = pair(server.addr);
        // b never reads; a writes until the server gives up on b.
        let text = "y".repeat(1900);
        let mut sent = 0u32;
        'flood: loop {
            assert!(
                sent < 40_000,
                "b was not closed after {} MB",
                (sent as usize * 1900) >> 20
            );
            for _ in 0..50 {
                a.ws.write(Message::text(msg(&format!("{sent} {text}"))))
                    .unwrap();
                sent += 1;
            }
            a.ws.flush().unwrap_or_else(|e| {
                panic!("the server stopped reading a (its partner is slow): {e}")
            });
            match a.recv(Duration::from_millis(1)) {
                Recv::Msg(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(
                        v["type"], "partner_left",
                        "a expects nothing but partner_left, got {v}"
                    );
                    break 'flood;
                }
                Recv::Msg(m) => panic!("a: unexpected {m:?}"),
                Recv::Timeout => {}
                Recv::Closed(e) => panic!("a was closed: {e}"),
            }
        }
        // a's messages sent after that get not_chatting; a is idle and fine.
        let late = errors_until_probe(&mut a);
        assert!(late.iter().all(|c| c == "not_chatting"), "{late:?}");
        // Other clients are unaffected.
        c.send_text(&msg("unaffected"));
        d.expect_json(&msg("unaffected"));
        d.send_text(&msg("yes"));
        c.expect_json(&msg("yes"));
        // b finally reads: an in-order prefix of a's messages, then close 1008 or, if the
        // server already dropped it, the end of the connection.
        let mut expect = 0u32;
        loop {
            match b.recv(SOON) {
                Recv::Msg(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["type"], "message", "{v}");
                    let n: u32 = v["text"]
                        .as_str()
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert_eq!(n, expect, "b's messages are a gap-free prefix");
                    expect += 1;
                }
                Recv::Msg(Message::Close(Some(f))) => {
                    assert_eq!(u16::from(f.code), 1008);
                    break;
                }
                Recv::Msg(m) => panic!("b: unexpected {m:?}"),
                Recv::Timeout => panic!("b: neither close nor end of connection"),
                Recv::Closed(_) => break,
            }
        }
        assert!(expect < sent, "b cannot have received everything");
    });
}

/// The server's side of a connection from `client_port` on `server_port`: the kernel's
/// receive and send buffer sizes (`skmem` rb and tb, from `ss -tm`).
fn server_socket_buffers(server_port: u16, client_port: u16) -> (u64, u64) {
    let filter = format!("( sport = :{server_port} and dport = :{client_port} )");
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established", &filter])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let inner = text
        .split("skmem:(")
        .nth(1)
        .and_then(|p| p.split(')').next())
        .unwrap_or_else(|| panic!("no skmem in {text:?}"));
    let field = |k: &str| -> u64 {
        inner
            .split(',')
            .find_map(|f| f.strip_prefix(k).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no {k} in {inner}"))
    };
    (field("rb"), field("tb"))
}

/// A client cannot make the kernel hold more than the configured buffers for it: what it
/// sends while the server holds off reading, and what it does not read, stop there
/// (Linux books twice the value set, and autotuning would otherwise grow both to
/// megabytes).
#[test]
fn each_clients_kernel_buffers_are_clamped_by_the_flags() {
    let _w = watchdog(30);
    let server = Server::start(&[
        "--recv-buffer-bytes",
        "16384",
        "--send-buffer-bytes",
        "32768",
        "--rate-limit-per-sec",
        "0",
    ]);
    let (mut a, mut b) = pair(server.addr);
    // Some traffic, so that autotuning would have had its chance.
    for i in 0..200 {
        a.send_text(&msg(&format!("{i:0>900}")));
    }
    for _ in 0..200 {
        assert_eq!(b.next_json(SOON)["type"], "message");
    }
    let port = a.ws.get_ref().local_addr().unwrap().port();
    let (rb, tb) = server_socket_buffers(server.addr.port(), port);
    assert_eq!(rb, 2 * 16384, "receive buffer of the server's socket");
    assert_eq!(tb, 2 * 32768, "send buffer of the server's socket");
}
