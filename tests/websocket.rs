//! The WebSocket layer (RFC 6455) through `/echo` and `/ws`: echo of every size, fragments,
//! control frames, the close handshake, every protocol violation listed in PROTOCOL.md
//! "Limits and bad input", message size limits and the idle ping. Each scenario runs with
//! `--shards 1` and `--shards 2`.
mod util;

use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;
use util::*;

const ECHO: &[&str] = &["--enable-echo"];

fn text_of_len(n: usize) -> String {
    // Mixed widths so that frame boundaries fall inside multi-byte characters; exactly n bytes.
    let pattern = "aé€😀"; // 1 + 2 + 3 + 4 bytes
    let mut s = String::with_capacity(n);
    while s.len() + pattern.len() <= n {
        s.push_str(pattern);
    }
    while s.len() < n {
        s.push('x');
    }
    s
}

#[test]
fn echo_text_and_binary_of_every_size() {
    let _w = watchdog(60);
    for_each_shards(ECHO, |server| {
        let mut c = ws_connect(server.addr, "/echo");
        for &n in &[0usize, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20] {
            let text = text_of_len(n);
            c.send(Message::text(text.clone()));
            match c.recv(SOON) {
                Recv::Msg(Message::Text(t)) => {
                    assert!(t.as_str() == text, "text echo of {n} bytes differs")
                }
                Recv::Msg(m) => panic!(
                    "text of {n} bytes: got {} bytes of {:?}",
                    m.len(),
                    std::mem::discriminant(&m)
                ),
                Recv::Timeout => panic!("no echo of a {n}-byte text"),
                Recv::Closed(e) => panic!("closed on a {n}-byte text: {e}"),
            }
            let bin: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            c.send(Message::binary(bin.clone()));
            match c.recv(SOON) {
                Recv::Msg(Message::Binary(b)) => {
                    assert!(b[..] == bin[..], "binary echo of {n} bytes differs")
                }
                Recv::Msg(m) => panic!("binary of {n} bytes: got {m:?}"),
                Recv::Timeout => panic!("no echo of a {n}-byte binary"),
                Recv::Closed(e) => panic!("closed on a {n}-byte binary: {e}"),
            }
        }
        // Many messages back to back come back in order.
        for i in 0..200 {
            c.ws.write(Message::text(format!("m{i}"))).unwrap();
        }
        c.ws.flush().unwrap();
        for i in 0..200 {
            match c.recv(SOON) {
                Recv::Msg(Message::Text(t)) => assert_eq!(t.as_str(), format!("m{i}")),
                _ => panic!("message {i} missing"),
            }
        }
        c.close_and_end();
    });
}

#[test]
fn echo_over_16_mib_closes_1009() {
    let _w = watchdog(60);
    for_each_shards(ECHO, |server| {
        // Over the limit: refused at header time (no need to send the payload).
        let mut ws = RawWs::connect(server.addr, "/echo");
        let mut hdr = vec![0x82, 0x80 | 127];
        hdr.extend_from_slice(&(16u64 * 1024 * 1024 + 1).to_be_bytes());
        hdr.extend_from_slice(&MASK);
        ws.send(&hdr);
        ws.expect_close(1009);
        // Fragments add up: 10 MiB + 7 MiB > 16 MiB.
        let mut ws = RawWs::connect(server.addr, "/echo");
        ws.send(&cframe(false, OP_BINARY, &vec![0u8; 10 << 20]));
        let mut hdr = vec![0x80, 0x80 | 127];
        hdr.extend_from_slice(&(7u64 << 20).to_be_bytes());
        hdr.extend_from_slice(&MASK);
        let _ = ws.try_send(&hdr);
        ws.expect_close(1009);
    });
}

#[test]
fn echo_flag_sets_its_own_limit() {
    let _w = watchdog(30);
    let server = Server::start(&[
        "--shards",
        "1",
        "--enable-echo",
        "--echo-max-message-bytes",
        "1000",
    ]);
    let mut ws = RawWs::connect(server.addr, "/echo");
    ws.send(&cframe(true, OP_BINARY, &[5u8; 1000]));
    assert_eq!(ws.read_message(SOON).unwrap(), (OP_BINARY, vec![5u8; 1000]));
    ws.send(&cframe(true, OP_BINARY, &[5u8; 1001]));
    ws.expect_close(1009);
}

#[test]
fn fragmented_message_with_a_ping_between_fragments() {
    let _w = watchdog(30);
    for_each_shards(ECHO, |server| {
        let mut ws = RawWs::connect(server.addr, "/echo");
        // "Hello, wörld": the ö is split across the fragments.
        let whole = "Hello, wörld".as_bytes();
        let split = whole.iter().position(|&b| b == 0xc3).unwrap() + 1;
        let mut bytes = cframe(false, OP_TEXT, &whole[..split]);
        bytes.extend(cframe(true, OP_PING, b"between"));
        bytes.extend(cframe(false, OP_CONT, b""));
        bytes.extend(cframe(true, OP_CONT, &whole[split..]));
        ws.send(&bytes);
        assert_eq!(
            ws.read_message(SOON).unwrap(),
            (OP_PONG, b"between".to_vec()),
            "pong first"
        );
        assert_eq!(
            ws.read_message(SOON).unwrap(),
            (OP_TEXT, whole.to_vec()),
            "message echoed whole"
        );
        // Same, binary, sent one frame per write.
        ws.send(&cframe(false, OP_BINARY, &[1, 2]));
        ws.send(&cframe(true, OP_PING, b""));
        ws.send(&cframe(true, OP_CONT, &[3]));
        assert_eq!(ws.read_message(SOON).unwrap(), (OP_PONG, vec![]));
        assert_eq!(ws.read_message(SOON).unwrap(), (OP_BINARY, vec![1, 2, 3]));
    });
}

#[test]
fn frames_split_at_every_byte_are_reassembled() {
    let _w = watchdog(30);
    for_each_shards(ECHO, |server| {
        let mut ws = RawWs::connect(server.addr, "/echo");
        let payload = text_of_len(300);
        let frame = ctext(&payload);
        for b in &frame {
            ws.send(std::slice::from_ref(b));
        }
        assert_eq!(
            ws.read_message(SOON).unwrap(),
            (OP_TEXT, payload.into_bytes())
        );
    });
}

#[test]
fn ten_pings_get_ten_pongs_in_order() {
    let _w = watchdog(30);
    for_each_shards(ECHO, |server| {
        for path in ["/echo", "/ws"] {
            let mut ws = RawWs::connect(server.addr, path);
            let mut bytes = Vec::new();
            for i in 0..10 {
                bytes.extend(cframe(true, OP_PING, format!("ping-{i}").as_bytes()));
            }
            ws.send(&bytes);
            let mut i = 0;
            while i < 10 {
                let (op, payload) = ws.read_message(SOON).unwrap();
                if op == OP_TEXT && path == "/ws" {
                    continue; // hello
                }
                assert_eq!(
                    (op, payload),
                    (OP_PONG, format!("ping-{i}").into_bytes()),
                    "{path}: pong {i}"
                );
                i += 1;
            }
            // A ping with the largest control payload.
            ws.send(&cframe(true, OP_PING, &[0xab; 125]));
            assert_eq!(ws.read_message(SOON).unwrap(), (OP_PONG, vec![0xab; 125]));
            // Unsolicited pongs are ignored.
            ws.send(&cframe(true, OP_PONG, b"unsolicited"));
            ws.send(&cframe(true, OP_PING, b"after"));
            assert_eq!(ws.read_message(SOON).unwrap(), (OP_PONG, b"after".to_vec()));
        }
    });
}

#[test]
fn close_handshake_echoes_the_code() {
    let _w = watchdog(30);
    for_each_shards(ECHO, |server| {
        for path in ["/echo", "/ws"] {
            for (code, reason) in [
                (1000u16, "bye"),
                (1001, ""),
                (3000, "app"),
                (4999, "private"),
            ] {
                let mut ws = RawWs::connect(server.addr, path);
                ws.send(&cclose(code, reason));
                assert_eq!(
                    ws.read_close(SOON),
                    Some(code),
                    "{path}: close {code} echoed"
                );
                ws.expect_tcp_closed(SOON);
            }
            // An empty close: the reply has no code or 1000.
            let mut ws = RawWs::connect(server.addr, path);
            ws.send(&cframe(true, OP_CLOSE, b""));
            let got = ws.read_close(SOON);
            assert!(
                got.is_none() || got == Some(1000),
                "{path}: reply to an empty close: {got:?}"
            );
            ws.expect_tcp_closed(SOON);
        }
        // With tungstenite as the client.
        let mut c = ws_connect(server.addr, "/echo");
        c.ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
        match c.recv(SOON) {
            Recv::Msg(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Normal),
            Recv::Closed(e) => panic!("no close reply: {e}"),
            _ => panic!("no close reply"),
        }
        c.expect_end();
    });
}

/// Each violation listed in PROTOCOL.md closes with the RFC's code.
#[test]
fn protocol_violations_close_1002() {
    let _w = watchdog(60);
    let mut big_len = vec![0x81, 0x80 | 127];
    big_len.extend_from_slice(&(1u64 << 63).to_be_bytes());
    big_len.extend_from_slice(&MASK);
    let mut long_ping = vec![0x89, 0x80 | 126];
    long_ping.extend_from_slice(&126u16.to_be_bytes());
    long_ping.extend_from_slice(&MASK);
    long_ping.extend_from_slice(&[0u8; 126]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unmasked text frame",
            encode_frame(true, 0, OP_TEXT, b"hi", None),
        ),
        ("unmasked ping", encode_frame(true, 0, OP_PING, b"", None)),
        ("RSV1", encode_frame(true, 4, OP_TEXT, b"hi", Some(MASK))),
        ("RSV2", encode_frame(true, 2, OP_TEXT, b"hi", Some(MASK))),
        ("RSV3", encode_frame(true, 1, OP_BINARY, b"hi", Some(MASK))),
        (
            "RSV on a ping",
            encode_frame(true, 4, OP_PING, b"", Some(MASK)),
        ),
        ("opcode 3", cframe(true, 3, b"")),
        ("opcode 7", cframe(true, 7, b"")),
        ("opcode 11", cframe(true, 11, b"")),
        ("opcode 15", cframe(true, 15, b"")),
        ("fragmented ping", cframe(false, OP_PING, b"x")),
        (
            "fragmented close",
            cframe(false, OP_CLOSE, &1000u16.to_be_bytes()),
        ),
        ("ping over 125 bytes", long_ping),
        ("pong over 125 bytes", cframe(true, OP_PONG, &[0u8; 126])),
        (
            "close over 125 bytes",
            cframe(
                true,
                OP_CLOSE,
                &[0x03, 0xe8]
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(b'a', 124))
                    .collect::<Vec<u8>>(),
            ),
        ),
        ("continuation without a start", cframe(true, OP_CONT, b"x")),
        (
            "text while a message is open",
            [cframe(false, OP_TEXT, b"a"), cframe(true, OP_TEXT, b"b")].concat(),
        ),
        (
            "binary while a message is open",
            [
                cframe(false, OP_BINARY, b"a"),
                cframe(true, OP_BINARY, b"b"),
            ]
            .concat(),
        ),
        ("64-bit length with the top bit set", big_len),
        (
            "close with a one-byte payload",
            cframe(true, OP_CLOSE, &[3]),
        ),
        ("close code 1005", cclose(1005, "")),
        ("close code 1006", cclose(1006, "")),
        ("close code 1015", cclose(1015, "")),
        ("close code 0", cclose(0, "")),
        ("close code 999", cclose(999, "")),
        ("close code 1004", cclose(1004, "")),
        ("close code 1016", cclose(1016, "")),
        ("close code 2999", cclose(2999, "")),
        ("close code 5000", cclose(5000, "")),
        ("close code 65535", cclose(65535, "")),
    ];
    for_each_shards(ECHO, |server| {
        for path in ["/echo", "/ws"] {
            for (what, bytes) in &cases {
                if path == "/ws" && what.starts_with("binary") {
                    // On /ws the binary start frame is already a 1003 (tested elsewhere).
                    continue;
                }
                let mut ws = RawWs::connect(server.addr, path);
                let _ = ws.try_send(bytes);
                let got = ws.read_close(SOON);
                assert_eq!(got, Some(1002), "{path}: {what}");
                let _ = ws.try_send(&cclose(1002, ""));
                ws.expect_tcp_closed(SOON);
            }
        }
    });
}

#[test]
fn invalid_utf8_closes_1007() {
    let _w = watchdog(30);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("0xff in a text frame", ctext_bytes(b"ab\xffcd")),
        ("overlong encoding", ctext_bytes(b"\xc0\xaf")),
        ("surrogate encoded in UTF-8", ctext_bytes(b"\xed\xa0\x80")),
        (
            "code point above U+10FFFF",
            ctext_bytes(b"\xf4\x90\x80\x80"),
        ),
        ("truncated sequence at the end", ctext_bytes(b"ok\xe2\x82")),
        (
            "invalid in the second fragment",
            [
                cframe(false, OP_TEXT, "héllo".as_bytes()),
                cframe(true, OP_CONT, b"\xff"),
            ]
            .concat(),
        ),
        (
            "sequence truncated by the final fragment",
            [
                cframe(false, OP_TEXT, b"ok\xe2"),
                cframe(true, OP_CONT, b"\x82"),
            ]
            .concat(),
        ),
        (
            "invalid UTF-8 in a close reason",
            cframe(true, OP_CLOSE, b"\x03\xe8\xff\xfe"),
        ),
    ];
    for_each_shards(ECHO, |server| {
        for path in ["/echo", "/ws"] {
            for (what, bytes) in &cases {
                let mut ws = RawWs::connect(server.addr, path);
                ws.send(bytes);
                assert_eq!(ws.read_close(SOON), Some(1007), "{path}: {what}");
                let _ = ws.try_send(&cclose(1007, ""));
                ws.expect_tcp_closed(SOON);
            }
        }
        // An invalid first fragment is refused without waiting for the rest (fail fast).
        let mut ws = RawWs::connect(server.addr, "/echo");
        ws.send(&cframe(false, OP_TEXT, b"\xff"));
        assert_eq!(
            ws.read_close(SOON),
            Some(1007),
            "fail fast on the first fragment"
        );
    });
}

fn ctext_bytes(b: &[u8]) -> Vec<u8> {
    cframe(true, OP_TEXT, b)
}

#[test]
fn chat_message_over_64_kib_closes_1009() {
    let _w = watchdog(30);
    for_each_shards(&[], |server| {
        // 64 KiB exactly is accepted (and answered at the chat level).
        let mut c = chat(server.addr);
        let big = format!(
            r#"{{"type":"typing","active":true,"pad":"{}"}}"#,
            "x".repeat(65536 - 40)
        );
        let big = format!("{big}{}", " ".repeat(65536 - big.len()));
        assert_eq!(big.len(), 65536);
        c.send_text(&big);
        c.expect_no_reply();
        // One byte more: 1009.
        let mut ws = RawWs::connect(server.addr, "/ws");
        ws.send(&ctext(&"x".repeat(65537)));
        ws.expect_close(1009);
        // After reassembly of fragments.
        let mut ws = RawWs::connect(server.addr, "/ws");
        ws.send(&cframe(false, OP_TEXT, &[b' '; 40000]));
        let _ = ws.try_send(&cframe(true, OP_CONT, &[b' '; 30000]));
        ws.expect_close(1009);
        // Refused from the header alone.
        let mut ws = RawWs::connect(server.addr, "/ws");
        let mut hdr = vec![0x81, 0x80 | 127];
        hdr.extend_from_slice(&(1u64 << 32).to_be_bytes());
        hdr.extend_from_slice(&MASK);
        ws.send(&hdr);
        ws.expect_close(1009);
    });
}

#[test]
fn max_message_bytes_flag_sets_the_chat_limit() {
    let _w = watchdog(30);
    let server = Server::start(&["--shards", "1", "--max-message-bytes", "1000"]);
    let mut c = chat(server.addr);
    c.send_text(&format!("{{\"type\":\"leave\"}}{}", " ".repeat(1000 - 16)));
    c.expect_no_reply();
    let mut ws = RawWs::connect(server.addr, "/ws");
    ws.send(&ctext(&format!(
        "{{\"type\":\"leave\"}}{}",
        " ".repeat(1001 - 16)
    )));
    ws.expect_close(1009);
}

#[test]
fn binary_on_chat_closes_1003() {
    let _w = watchdog(30);
    for_each_shards(&[], |server| {
        let mut c = chat(server.addr);
        c.send(Message::binary(br#"{"type":"find"}"#.to_vec()));
        c.expect_close(1003);
        // A binary message from a chatting client ends the chat for its partner too.
        let (mut a, mut b) = pair(server.addr);
        a.send(Message::binary(vec![1, 2, 3]));
        a.expect_close(1003);
        b.expect_json(r#"{"type":"partner_left"}"#);
    });
}

#[test]
fn idle_client_is_pinged_then_closed_1001() {
    let _w = watchdog(30);
    for_each_shards(
        &[
            "--enable-echo",
            "--idle-ping",
            "0.5",
            "--pong-timeout",
            "0.5",
        ],
        |server| {
            for path in ["/echo", "/ws"] {
                let mut ws = RawWs::connect(server.addr, path);
                let start = Instant::now();
                // The server's ping arrives after about 0.5 s of silence (hello on /ws skipped).
                let ping_at = loop {
                    let f = ws
                        .read_frame(Duration::from_secs(3))
                        .unwrap_or_else(|e| panic!("{path}: no ping: {e:?}"));
                    match f.opcode {
                        OP_PING => break start.elapsed(),
                        OP_TEXT if path == "/ws" => {}
                        op => panic!("{path}: unexpected opcode {op} before the ping"),
                    }
                };
                assert!(
                    ping_at >= Duration::from_millis(400),
                    "{path}: ping after only {ping_at:?}"
                );
                assert!(
                    ping_at <= Duration::from_millis(2500),
                    "{path}: ping only after {ping_at:?}"
                );
                // We do not answer: close 1001 about 0.5 s later, then the connection is dropped
                // (without waiting for our close frame).
                let f = ws
                    .read_frame(Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("{path}: no close: {e:?}"));
                let close_at = start.elapsed();
                assert_eq!(f.opcode, OP_CLOSE, "{path}");
                assert_eq!(f.close_code(), Some(1001), "{path}");
                assert!(
                    close_at >= ping_at + Duration::from_millis(400),
                    "{path}: closed {:?} after the ping",
                    close_at - ping_at
                );
                ws.expect_tcp_closed(Duration::from_secs(3));
            }
        },
    );
}

#[test]
fn answering_pings_keeps_an_idle_connection() {
    let _w = watchdog(30);
    for_each_shards(
        &[
            "--enable-echo",
            "--idle-ping",
            "0.5",
            "--pong-timeout",
            "0.5",
        ],
        |server| {
            // tungstenite answers pings by itself.
            let mut c = ws_connect(server.addr, "/echo");
            let mut d = ws_connect(server.addr, "/ws");
            d.hello();
            let until = Instant::now() + Duration::from_millis(2500);
            let mut pings = 0;
            while Instant::now() < until {
                for client in [&mut c, &mut d] {
                    match client.recv(Duration::from_millis(50)) {
                        Recv::Msg(Message::Ping(_)) => pings += 1,
                        Recv::Timeout => {}
                        Recv::Msg(m) => panic!("unexpected {m:?}"),
                        Recv::Closed(e) => panic!("closed although we answer pings: {e}"),
                    }
                }
            }
            assert!(pings >= 2, "expected pings while idle, got {pings}");
            c.send_text("still here");
            loop {
                match c.recv(SOON) {
                    Recv::Msg(Message::Text(t)) => {
                        assert_eq!(t.as_str(), "still here");
                        break;
                    }
                    Recv::Msg(Message::Ping(_)) => {}
                    Recv::Msg(m) => panic!("echo after idling: got {m:?}"),
                    Recv::Timeout => panic!("echo after idling: nothing"),
                    Recv::Closed(e) => panic!("echo after idling: closed: {e}"),
                }
            }
            d.expect_no_reply();
            // Any frame counts as activity: sending data frames (no pong) also keeps it open.
            let mut ws = RawWs::connect(server.addr, "/echo");
            let until = Instant::now() + Duration::from_millis(2000);
            while Instant::now() < until {
                ws.send(&ctext("tick"));
                loop {
                    let f = ws.read_frame(SOON).expect("echo");
                    if f.opcode == OP_TEXT {
                        break;
                    }
                    assert_eq!(f.opcode, OP_PING, "only echoes and pings expected");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        },
    );
}

#[test]
fn server_frames_are_well_formed_after_upgrade() {
    let _w = watchdog(30);
    for_each_shards(&[], |server| {
        let mut ws = RawWs::connect(server.addr, "/ws");
        let f = ws.read_frame(SOON).expect("hello frame");
        assert!(
            f.fin && f.opcode == OP_TEXT,
            "hello is one final text frame"
        );
        let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
        assert_eq!(v["type"], "hello");
        ws.expect_no_frame(Duration::from_millis(200));
    });
}

#[test]
fn echo_has_no_chat_rules_and_no_rate_limit() {
    let _w = watchdog(30);
    // Default rate limit (20/s, burst 40) is on; /echo is exempt and knows nothing of JSON.
    let server = Server::start(&["--shards", "2", "--enable-echo"]);
    let mut c = ws_connect(server.addr, "/echo");
    for i in 0..300 {
        c.ws.write(Message::text(format!("not json {i}"))).unwrap();
    }
    c.ws.flush().unwrap();
    for i in 0..300 {
        match c.recv(SOON) {
            Recv::Msg(Message::Text(t)) => assert_eq!(t.as_str(), format!("not json {i}")),
            _ => panic!("echo {i} missing"),
        }
    }
}

#[test]
fn echo_of_16_mib_to_a_client_that_reads_late() {
    let _w = watchdog(60);
    // 16 MiB is the echo limit, and /echo's outbound cap is at least twice that, so a client
    // that sends 16 MiB + 4 MiB before reading anything gets both back, not a 1008.
    let server = Server::start(&["--shards", "1", "--enable-echo"]);
    let mut ws = RawWs::connect(server.addr, "/echo");
    let big: Vec<u8> = (0..16usize << 20).map(|i| (i % 251) as u8).collect();
    let small: Vec<u8> = (0..4usize << 20).map(|i| (i % 7) as u8).collect();
    let mut frames = cframe(true, OP_BINARY, &big);
    frames.extend(cframe(true, OP_BINARY, &small));
    let mut w = ws.s.try_clone().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut w, &frames));
    // Read only once everything is written (or after 2 s if the server applies backpressure
    // to our writes, which is fine too).
    let t0 = Instant::now();
    while !writer.is_finished() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (op, got) = ws
        .read_message(Duration::from_secs(20))
        .expect("16 MiB echo");
    assert_eq!(op, OP_BINARY);
    assert!(got == big, "16 MiB echo differs (len {})", got.len());
    let (op, got) = ws
        .read_message(Duration::from_secs(20))
        .expect("4 MiB echo");
    assert_eq!(op, OP_BINARY);
    assert!(got == small, "4 MiB echo differs (len {})", got.len());
    writer.join().unwrap().expect("all written");
}
