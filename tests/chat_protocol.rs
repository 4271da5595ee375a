//! PROTOCOL.md chat rules, row by row: the state table (find/message/typing/next/leave in
//! idle, waiting and chatting), the error table, matching and delivery. Every scenario runs
//! against `--shards 1` and `--shards 2` (consecutive clients on different loops).
//!
//! The rate limit is off here (`--rate-limit-per-sec 0`) so that scenarios may send freely;
//! tests/limits.rs covers it.
mod util;

use serde_json::json;
use std::time::{Duration, Instant};
use tungstenite::Message;
use util::*;

const NOLIMIT: &[&str] = &["--rate-limit-per-sec", "0"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = NOLIMIT.to_vec();
    v.extend_from_slice(extra);
    v
}

const FIND: &str = r#"{"type":"find"}"#;
const NEXT: &str = r#"{"type":"next"}"#;
const LEAVE: &str = r#"{"type":"leave"}"#;

/// Connect, read `hello`, send a find with these interests and expect `waiting`.
fn waiting_with(addr: std::net::SocketAddr, interests: &[&str]) -> Client {
    let mut c = chat(addr);
    c.send_text(&find_msg(interests));
    c.expect_json(WAITING);
    c
}

// ---------------------------------------------------------------------------------------------
// Server → client: hello, waiting, paired
// ---------------------------------------------------------------------------------------------

#[test]
fn hello_counts_online_clients() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let mut a = ws_connect(server.addr, "/ws");
        assert_eq!(a.hello(), 1, "first client");
        let mut b = ws_connect(server.addr, "/ws");
        assert_eq!(b.hello(), 2, "second client (other shard when --shards 2)");
        let mut c = ws_connect(server.addr, "/ws");
        assert_eq!(c.hello(), 3);
        // A client that left is no longer counted.
        c.close_and_end();
        drop(b);
        let deadline = Instant::now() + SOON;
        loop {
            let mut d = ws_connect(server.addr, "/ws");
            let n = d.hello();
            if n == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "online stays at {n} after two clients left"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        a.expect_no_reply();
    });
}

#[test]
fn find_waits_then_pairs_with_sorted_normalised_common_interests() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let mut a = waiting_with(server.addr, &["rust", "Music", " zebra "]);
        let mut b = chat(server.addr);
        b.send_text(&find_msg(&[" Rust ", "MUSIC", "zebra", "other"]));
        assert_eq!(b.expect_paired(), ["music", "rust", "zebra"]);
        assert_eq!(a.expect_paired(), ["music", "rust", "zebra"]);

        // Duplicates after normalising are merged; Unicode lower-casing; sorted.
        let mut c = waiting_with(server.addr, &["RUST", "rust", " rust ", "ÄPFEL", "Zz"]);
        let mut d = chat(server.addr);
        d.send_text(&find_msg(&["äpfel", "zz", "rust"]));
        assert_eq!(d.expect_paired(), ["rust", "zz", "äpfel"]);
        assert_eq!(c.expect_paired(), ["rust", "zz", "äpfel"]);

        // Unicode lower-casing of the whole tag (final sigma), not character by character.
        let mut g = waiting_with(server.addr, &["ΣΑΣ"]);
        let mut h = chat(server.addr);
        h.send_text(&find_msg(&["σας"]));
        assert_eq!(h.expect_paired(), ["σας"]);
        assert_eq!(g.expect_paired(), ["σας"]);

        // No interests: absent, null or [] pair at once with common [].
        for (x, y) in [
            (r#"{"type":"find"}"#, r#"{"type":"find","interests":null}"#),
            (r#"{"type":"find","interests":[]}"#, r#"{"type":"find"}"#),
        ] {
            let mut e = chat(server.addr);
            e.send_text(x);
            e.expect_json(WAITING);
            let mut f = chat(server.addr);
            f.send_text(y);
            assert!(f.expect_paired().is_empty());
            assert!(e.expect_paired().is_empty());
        }
    });
}

#[test]
fn never_paired_with_itself_nor_with_two_strangers() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let mut a = waiting_with(server.addr, &[]);
        a.send_text(FIND);
        a.expect_json(WAITING);
        a.send_text(NEXT);
        a.expect_json(WAITING);
        a.expect_no_reply();
        let mut b = chat(server.addr);
        b.send_text(FIND);
        assert!(b.expect_paired().is_empty());
        assert!(a.expect_paired().is_empty());
        let mut c = waiting_with(server.addr, &[]);
        c.expect_no_reply();
        a.expect_no_reply();
        b.expect_no_reply();
    });
}

// ---------------------------------------------------------------------------------------------
// message / typing
// ---------------------------------------------------------------------------------------------

#[test]
fn message_is_relayed_trimmed_and_otherwise_exact() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let (mut a, mut b) = pair(server.addr);
        for text in [
            "hi",
            "  hello  ",
            "\t\n hi there \u{3000}\u{2003}\u{85}",
            "inner  spaces\n\nand lines",
            "quote \" backslash \\ slash / tab\t.",
            "\u{feff}bom is not white space\u{200b}",
            "nul \u{0} and control \u{1b}[0m",
            "héllo wörld — 😀 👩‍👩‍👧 עברית",
            "<script>alert(1)</script>",
            "x",
        ] {
            a.send_text(&msg(text));
            b.expect_json(&msg(text.trim()));
            b.send_text(&msg(text));
            a.expect_json(&msg(text.trim()));
        }
        // Fields that belong to other types are ignored.
        a.send_text(
            r#"{"type":"message","text":" ok ","interests":5,"active":"no","extra":{"x":[1]}}"#,
        );
        b.expect_json(&msg("ok"));
        a.expect_no_reply();
    });
}

#[test]
fn typing_is_forwarded_in_order_with_messages() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let (mut a, mut b) = pair(server.addr);
        a.send_text(r#"{"type":"typing","active":true}"#);
        b.expect_json(r#"{"type":"typing","active":true}"#);
        a.send_text(r#"{"type":"typing","active":false,"text":[]}"#);
        b.expect_json(r#"{"type":"typing","active":false}"#);
        let batch = [
            r#"{"type":"typing","active":true}"#.to_string(),
            msg("one"),
            r#"{"type":"typing","active":false}"#.to_string(),
            msg("two"),
        ];
        for m in batch {
            b.ws.write(Message::text(m)).unwrap();
        }
        b.ws.flush().unwrap();
        a.expect_json(r#"{"type":"typing","active":true}"#);
        a.expect_json(&msg("one"));
        a.expect_json(r#"{"type":"typing","active":false}"#);
        a.expect_json(&msg("two"));
        a.expect_no_reply();
        b.expect_no_reply();
    });
}

#[test]
fn typing_while_idle_or_waiting_is_ignored() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let mut a = chat(server.addr);
        a.send_text(r#"{"type":"typing","active":true}"#);
        a.expect_no_reply();
        a.send_text(FIND);
        a.expect_json(WAITING);
        a.send_text(r#"{"type":"typing","active":false}"#);
        a.expect_no_reply();
        // The waiting client is still queued: the next client pairs with it.
        let mut b = chat(server.addr);
        b.send_text(FIND);
        b.expect_paired();
        a.expect_paired();
    });
}

#[test]
fn message_while_idle_or_waiting_is_not_chatting() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let mut a = chat(server.addr);
        a.send_text(&msg("anyone?"));
        a.expect_error("not_chatting");
        a.send_text(FIND);
        a.expect_json(WAITING);
        a.send_text(&msg("anyone?"));
        a.expect_error("not_chatting");
        // The error changed nothing: still waiting.
        let mut b = chat(server.addr);
        b.send_text(FIND);
        b.expect_paired();
        a.expect_paired();
        // After partner_left the client is idle again.
        b.send_text(LEAVE);
        a.expect_json(PARTNER_LEFT);
        a.send_text(&msg("hello?"));
        a.expect_error("not_chatting");
        b.send_text(&msg("hello?"));
        b.expect_error("not_chatting");
    });
}

// ---------------------------------------------------------------------------------------------
// next
// ---------------------------------------------------------------------------------------------

#[test]
fn next_while_chatting_requeues_and_never_repairs_the_same_two() {
    let _w = watchdog(40);
    for_each_shards(&args(&["--interest-wait", "0.3"]), |server| {
        // Without interests.
        let (mut a, mut b) = pair(server.addr);
        a.send_text(NEXT);
        a.expect_json(WAITING);
        b.expect_json(PARTNER_LEFT);
        b.send_text(NEXT);
        b.expect_json(WAITING);
        // Only the two of them wait: they stay waiting (well past the interest wait).
        a.expect_quiet(Duration::from_millis(800));
        b.expect_no_reply();
        // A third client pairs with the one waiting longest (a).
        let mut c = chat(server.addr);
        c.send_text(FIND);
        assert!(c.expect_paired().is_empty());
        assert!(a.expect_paired().is_empty());
        b.expect_no_reply();
        let mut d = chat(server.addr);
        d.send_text(FIND);
        d.expect_paired();
        b.expect_paired();

        // With a shared interest the rule is the same.
        let mut p = waiting_with(server.addr, &["x"]);
        let mut q = chat(server.addr);
        q.send_text(&find_msg(&["x"]));
        assert_eq!(q.expect_paired(), ["x"]);
        assert_eq!(p.expect_paired(), ["x"]);
        p.send_text(NEXT);
        p.expect_json(WAITING);
        q.expect_json(PARTNER_LEFT);
        q.send_text(&find_msg(&["x"]));
        q.expect_json(WAITING);
        p.expect_quiet(Duration::from_millis(800));
        q.expect_no_reply();
        let mut r = chat(server.addr);
        r.send_text(&find_msg(&["x"]));
        assert_eq!(r.expect_paired(), ["x"]);
        assert_eq!(p.expect_paired(), ["x"], "the one waiting longest");
        q.expect_no_reply();
        // p has now been paired with someone else: p and q may meet again.
        r.send_text(LEAVE);
        p.expect_json(PARTNER_LEFT);
        p.send_text(NEXT);
        assert_eq!(p.expect_paired(), ["x"]);
        assert_eq!(q.expect_paired(), ["x"]);
        // And they chat.
        p.send_text(&msg("again"));
        q.expect_json(&msg("again"));
    });
}

#[test]
fn next_while_idle_queues_with_the_last_interests() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "30"]), |server| {
        let mut a = waiting_with(server.addr, &["cats"]);
        let mut b = chat(server.addr);
        b.send_text(&find_msg(&["cats"]));
        assert_eq!(b.expect_paired(), ["cats"]);
        assert_eq!(a.expect_paired(), ["cats"]);
        a.send_text(LEAVE);
        b.expect_json(PARTNER_LEFT);
        a.expect_no_reply();
        // Idle a: next queues with ["cats"].
        a.send_text(NEXT);
        a.expect_json(WAITING);
        let mut c = chat(server.addr);
        c.send_text(&find_msg(&["dogs", "cats"]));
        assert_eq!(c.expect_paired(), ["cats"]);
        assert_eq!(a.expect_paired(), ["cats"]);
        // Idle b (after partner_left): next queues with b's ["cats"].
        b.send_text(NEXT);
        b.expect_json(WAITING);
        let mut d = chat(server.addr);
        d.send_text(&find_msg(&["CATS"]));
        assert_eq!(d.expect_paired(), ["cats"]);
        assert_eq!(b.expect_paired(), ["cats"]);
        // Without a previous find: no interests.
        let mut e = chat(server.addr);
        e.send_text(NEXT);
        e.expect_json(WAITING);
        let mut f = chat(server.addr);
        f.send_text(FIND);
        assert!(f.expect_paired().is_empty());
        assert!(e.expect_paired().is_empty());
    });
}

#[test]
fn next_while_waiting_answers_waiting_and_keeps_the_place() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "30"]), |server| {
        let mut a = waiting_with(server.addr, &["a"]);
        let mut b = waiting_with(server.addr, &["b"]);
        a.send_text(NEXT);
        a.expect_json(WAITING);
        a.expect_no_reply();
        // c shares an interest with both; a has waited longest (next kept its place).
        let mut c = chat(server.addr);
        c.send_text(&find_msg(&["a", "b"]));
        assert_eq!(c.expect_paired(), ["a"]);
        assert_eq!(a.expect_paired(), ["a"]);
        b.expect_no_reply();
    });
}

// ---------------------------------------------------------------------------------------------
// find while waiting / chatting
// ---------------------------------------------------------------------------------------------

#[test]
fn find_while_waiting_requeues_at_the_back_with_the_new_interests() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "30"]), |server| {
        let mut a = waiting_with(server.addr, &["a"]);
        let mut b = waiting_with(server.addr, &["b"]);
        a.send_text(&find_msg(&["a"]));
        a.expect_json(WAITING);
        // Now b has waited longest.
        let mut c = chat(server.addr);
        c.send_text(&find_msg(&["a", "b"]));
        assert_eq!(c.expect_paired(), ["b"]);
        assert_eq!(b.expect_paired(), ["b"]);
        a.expect_no_reply();
        // New interests replace the old ones.
        a.send_text(&find_msg(&["z"]));
        a.expect_json(WAITING);
        let mut d = waiting_with(server.addr, &["a"]);
        d.expect_no_reply();
        let mut e = chat(server.addr);
        e.send_text(&find_msg(&["z"]));
        assert_eq!(e.expect_paired(), ["z"]);
        assert_eq!(a.expect_paired(), ["z"]);
    });
}

#[test]
fn find_while_waiting_restarts_the_interest_wait() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "1"]), |server| {
        let mut a = chat(server.addr);
        let t0 = Instant::now();
        a.send_text(&find_msg(&["a"]));
        a.expect_json(WAITING);
        // b is open to anyone; a is not until its wait passes.
        let mut b = waiting_with(server.addr, &[]);
        std::thread::sleep(Duration::from_millis(600).saturating_sub(t0.elapsed()));
        a.send_text(&find_msg(&["a"]));
        a.expect_json(WAITING);
        // The wait restarted at ~0.6 s: no pairing at 1 s, pairing at ~1.6 s.
        assert!(a.expect_paired_within(Duration::from_secs(5)).is_empty());
        let at = t0.elapsed();
        assert!(
            at >= Duration::from_millis(1300),
            "paired after {at:?}: the interest wait did not restart"
        );
        assert!(b.expect_paired().is_empty());
    });
}

#[test]
fn find_while_chatting_ends_the_chat() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "0.3"]), |server| {
        let (mut a, mut b) = pair(server.addr);
        a.send_text(FIND);
        a.expect_json(WAITING);
        b.expect_json(PARTNER_LEFT);
        // Not paired again with each other.
        b.send_text(FIND);
        b.expect_json(WAITING);
        a.expect_quiet(Duration::from_millis(600));
        b.expect_no_reply();
        let mut c = chat(server.addr);
        c.send_text(FIND);
        c.expect_paired();
        a.expect_paired();
        b.expect_no_reply();
    });
}

#[test]
fn rejected_find_changes_nothing() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "30"]), |server| {
        // While chatting: the chat goes on.
        let (mut a, mut b) = pair(server.addr);
        a.send_text(&find_msg(&["1", "2", "3", "4", "5", "6", "7", "8", "9"]));
        a.expect_error("bad_interests");
        a.send_text(r#"{"type":"find","interests":5}"#);
        a.expect_error("bad_interests");
        a.send_text(r#"{"type":"find","interests":["#);
        a.expect_error("bad_json");
        a.send_text(&msg("still here"));
        b.expect_json(&msg("still here"));
        b.expect_no_reply();
        // While waiting: the old place and interests are kept.
        let mut p = waiting_with(server.addr, &["p"]);
        let mut q = waiting_with(server.addr, &["q"]);
        p.send_text(&find_msg(&[""]));
        p.expect_error("bad_interests");
        let mut r = chat(server.addr);
        r.send_text(&find_msg(&["p", "q"]));
        assert_eq!(r.expect_paired(), ["p"]);
        assert_eq!(p.expect_paired(), ["p"]);
        q.expect_no_reply();
    });
}

// ---------------------------------------------------------------------------------------------
// leave
// ---------------------------------------------------------------------------------------------

#[test]
fn leave_in_each_state() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        // Idle: no change, no reply.
        let mut a = chat(server.addr);
        a.send_text(LEAVE);
        a.expect_no_reply();
        // Waiting: leaves the queue, no reply.
        a.send_text(FIND);
        a.expect_json(WAITING);
        a.send_text(LEAVE);
        a.expect_no_reply();
        let mut b = waiting_with(server.addr, &[]);
        b.expect_no_reply();
        a.expect_no_reply();
        // Chatting: partner_left for the partner, nothing for the leaver, both idle.
        let mut c = chat(server.addr);
        c.send_text(FIND);
        c.expect_paired();
        b.expect_paired();
        b.send_text(LEAVE);
        c.expect_json(PARTNER_LEFT);
        b.expect_no_reply();
        b.send_text(&msg("x"));
        b.expect_error("not_chatting");
        c.send_text(&msg("x"));
        c.expect_error("not_chatting");
        // A chat ended by leave does not block the two from meeting again.
        b.send_text(FIND);
        b.expect_json(WAITING);
        c.send_text(FIND);
        c.expect_paired();
        b.expect_paired();
        b.send_text(&msg("hi again"));
        c.expect_json(&msg("hi again"));
    });
}

// ---------------------------------------------------------------------------------------------
// Error table
// ---------------------------------------------------------------------------------------------

const BAD_JSON: &[&str] = &[
    "not json",
    "",
    " ",
    "{",
    "[1,2]",
    "[]",
    "\"find\"",
    "42",
    "null",
    "true",
    "{}",
    r#"{"Type":"find"}"#,
    r#"{"type":5}"#,
    r#"{"type":null}"#,
    r#"{"type":true}"#,
    r#"{"type":["find"]}"#,
    r#"{"type":{"find":1}}"#,
    r#"{"type":"typing","active":"yes"}"#,
    r#"{"type":"typing","active":1}"#,
    r#"{"type":"typing","active":null}"#,
    r#"{"type":"typing"}"#,
    r#"{"type":"message"}"#,
    r#"{"type":"message","text":5}"#,
    r#"{"type":"message","text":null}"#,
    r#"{"type":"message","text":["a"]}"#,
    r#"{"type":"find"} trailing"#,
    r#"{"type":"find"}{"type":"find"}"#,
    r#"{"type":"find",}"#,
    r#"{'type':'find'}"#,
    r#"{"type":"find","x":NaN}"#,
    r#"{"type":"message","text":"\ud800"}"#,
    r#"{"type":"message","text":"a\udc00b"}"#,
    r#"{"type":"message","text":"\ud83d x"}"#,
    r#"{"type":"find","interests":["\ud800"]}"#,
    r#"{"type":"leave","x":"\ud800"}"#,
    r#"{"type":"message","text":"bad escape \q"}"#,
];

#[test]
fn bad_json_in_every_state() {
    let _w = watchdog(40);
    for_each_shards(NOLIMIT, |server| {
        // Idle.
        let mut a = chat(server.addr);
        for bad in BAD_JSON {
            a.send_text(bad);
            a.expect_error_for("bad_json", bad);
        }
        a.expect_no_reply();
        // Waiting: still queued afterwards.
        a.send_text(FIND);
        a.expect_json(WAITING);
        for bad in BAD_JSON {
            a.send_text(bad);
            a.expect_error_for("bad_json", bad);
        }
        let mut b = chat(server.addr);
        b.send_text(FIND);
        b.expect_paired();
        a.expect_paired();
        // Chatting: nothing reaches the partner, the chat goes on.
        for bad in BAD_JSON {
            a.send_text(bad);
            a.expect_error_for("bad_json", bad);
        }
        a.send_text(&msg("after the errors"));
        b.expect_json(&msg("after the errors"));
        b.expect_no_reply();
    });
}

#[test]
fn unknown_fields_are_ignored() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let mut a = chat(server.addr);
        a.send_text(r#"{"type":"leave","interests":"garbage","text":5}"#);
        a.expect_no_reply();
        a.send_text(
            r#"{"type":"typing","active":true,"text":[],"nested":{"a":[{"b":[1,2,{"c":null}]}]}}"#,
        );
        a.expect_no_reply();
        a.send_text(r#"{"extra":1,"type":"find","text":5,"active":"x"}"#);
        a.expect_json(WAITING);
        let mut b = chat(server.addr);
        b.send_text(r#"{"type":"find","interests":null,"type2":"x"}"#);
        b.expect_paired();
        a.expect_paired();
        b.send_text(r#"{"type":"next","interests":5,"text":[]}"#);
        b.expect_json(WAITING);
        a.expect_json(PARTNER_LEFT);
    });
}

#[test]
fn unknown_type() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let mut a = chat(server.addr);
        for t in [
            "hello",
            "FIND",
            "Find",
            "",
            " find",
            "find ",
            "paired",
            "error",
            "waiting",
            "partner_left",
            "ping",
            "messages",
        ] {
            let m = json!({"type": t}).to_string();
            a.send_text(&m);
            a.expect_error_for("unknown_type", &m);
        }
        a.send_text(r#"{"type":"nope","text":5}"#);
        a.expect_error("unknown_type");
        // While chatting too, and nothing reaches the partner.
        let mut b = chat(server.addr);
        a.send_text(FIND);
        a.expect_json(WAITING);
        b.send_text(FIND);
        b.expect_paired();
        a.expect_paired();
        a.send_text(r#"{"type":"shout","text":"hi"}"#);
        a.expect_error("unknown_type");
        b.expect_no_reply();
    });
}

#[test]
fn text_length_counts_characters_after_trimming() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let (mut a, mut b) = pair(server.addr);
        // Characters, not bytes, UTF-16 units or JSON escapes.
        for unit in ["a", "é", "€", "😀", "\"", "\u{1}"] {
            let ok = unit.repeat(2000);
            a.send_text(&msg(&ok));
            b.expect_json(&msg(&ok));
            let over = unit.repeat(2001);
            a.send_text(&msg(&over));
            a.expect_error_for("too_long", &format!("2001 × {unit}"));
        }
        // Whitespace around does not count.
        let padded = format!("  \n{}\t ", "b".repeat(2000));
        a.send_text(&msg(&padded));
        b.expect_json(&msg(&"b".repeat(2000)));
        // Inner whitespace does.
        let inner = format!("{} {}", "c".repeat(1000), "c".repeat(1000));
        a.send_text(&msg(&inner));
        a.expect_error("too_long");
        b.expect_no_reply();
        // Validated before the state table: too_long while idle, not not_chatting.
        let mut c = chat(server.addr);
        c.send_text(&msg(&"d".repeat(2001)));
        c.expect_error("too_long");
    });
}

#[test]
fn max_text_chars_flag_sets_the_limit() {
    let _w = watchdog(30);
    let server = Server::start(&[
        "--shards",
        "2",
        "--rate-limit-per-sec",
        "0",
        "--max-text-chars",
        "10",
    ]);
    let (mut a, mut b) = pair(server.addr);
    a.send_text(&msg(" 0123456789 "));
    b.expect_json(&msg("0123456789"));
    a.send_text(&msg("0123456789x"));
    a.expect_error("too_long");
    let env = Server::start_with_env(
        &["--shards", "1", "--rate-limit-per-sec", "0"],
        &[("ROULETTE_MAX_TEXT_CHARS", "5")],
    );
    let (mut a, mut b) = pair(env.addr);
    a.send_text(&msg("éééé€"));
    b.expect_json(&msg("éééé€"));
    a.send_text(&msg("123456"));
    a.expect_error("too_long");
}

#[test]
fn empty_text_after_trimming() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let (mut a, mut b) = pair(server.addr);
        for t in ["", " ", "   ", "\n\t\r", "\u{3000}\u{2028}\u{85}\u{a0}"] {
            a.send_text(&msg(t));
            a.expect_error_for("empty", &format!("{t:?}"));
        }
        b.expect_no_reply();
        let mut c = chat(server.addr);
        c.send_text(&msg(" "));
        c.expect_error("empty");
    });
}

#[test]
fn bad_interests() {
    let _w = watchdog(40);
    let long32 = "a".repeat(32);
    let long33 = "a".repeat(33);
    let padded32 = format!("  {}\t", "B".repeat(32));
    let e32 = "é".repeat(32);
    let e33 = "É".repeat(33);
    // 'İ' lower-cases to two characters ("i̇"): 16 → 32 characters, 17 → 34.
    let dotted16 = "İ".repeat(16);
    let dotted17 = "İ".repeat(17);
    let nine: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    let eight: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let bad: Vec<String> = vec![
        json!({"type":"find","interests":nine}).to_string(),
        json!({"type":"find","interests":["a","a","a","a","a","a","a","a","a"]}).to_string(),
        json!({"type":"find","interests":[long33]}).to_string(),
        json!({"type":"find","interests":[e33]}).to_string(),
        json!({"type":"find","interests":[dotted17]}).to_string(),
        json!({"type":"find","interests":[""]}).to_string(),
        json!({"type":"find","interests":["   "]}).to_string(),
        json!({"type":"find","interests":["ok","\u{3000}"]}).to_string(),
        json!({"type":"find","interests":[1]}).to_string(),
        json!({"type":"find","interests":["a",2]}).to_string(),
        json!({"type":"find","interests":[null]}).to_string(),
        json!({"type":"find","interests":[["a"]]}).to_string(),
        json!({"type":"find","interests":[{"a":1}]}).to_string(),
        json!({"type":"find","interests":"rust"}).to_string(),
        json!({"type":"find","interests":{"a":1}}).to_string(),
        json!({"type":"find","interests":5}).to_string(),
        json!({"type":"find","interests":true}).to_string(),
    ];
    let good: Vec<String> = vec![
        json!({"type":"find","interests":eight}).to_string(),
        json!({"type":"find","interests":["a","A"," a","a ","b","B","c","C"]}).to_string(),
        json!({"type":"find","interests":[long32]}).to_string(),
        json!({"type":"find","interests":[padded32]}).to_string(),
        json!({"type":"find","interests":[e32]}).to_string(),
        json!({"type":"find","interests":[dotted16]}).to_string(),
        json!({"type":"find","interests":null}).to_string(),
        json!({"type":"find","interests":[]}).to_string(),
        json!({"type":"find"}).to_string(),
    ];
    for_each_shards(&args(&["--interest-wait", "30"]), |server| {
        let mut a = chat(server.addr);
        for m in &bad {
            a.send_text(m);
            a.expect_error_for("bad_interests", m);
        }
        for m in &good {
            a.send_text(m);
            let v = a.next_json(SOON);
            assert_eq!(v, json!({"type":"waiting"}), "{m} should be accepted");
            a.send_text(LEAVE);
        }
        a.expect_no_reply();
        // The normalised tags are what matching uses.
        let mut p = waiting_with(server.addr, &[&"İ".repeat(16)]);
        let mut q = chat(server.addr);
        q.send_text(&find_msg(&[&"i\u{307}".repeat(16)]));
        assert_eq!(q.expect_paired(), ["i\u{307}".repeat(16)]);
        assert_eq!(p.expect_paired(), ["i\u{307}".repeat(16)]);
    });
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

#[test]
fn disjoint_interests_pair_after_the_interest_wait() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "0.3"]), |server| {
        let mut a = waiting_with(server.addr, &["cats"]);
        let mut b = chat(server.addr);
        let t0 = Instant::now();
        b.send_text(&find_msg(&["dogs"]));
        assert!(b.expect_paired_within(Duration::from_secs(5)).is_empty());
        let at = t0.elapsed();
        assert!(
            at >= Duration::from_millis(250),
            "paired after {at:?}, before the interest wait"
        );
        assert!(a.expect_paired().is_empty());
        // Interests vs none: the one without waits for the other's wait.
        let mut c = chat(server.addr);
        let t0 = Instant::now();
        c.send_text(&find_msg(&["cats"]));
        c.expect_json(WAITING);
        let mut d = chat(server.addr);
        d.send_text(FIND);
        assert!(d.expect_paired_within(Duration::from_secs(5)).is_empty());
        let at = t0.elapsed();
        assert!(
            at >= Duration::from_millis(250),
            "paired after {at:?}, before the interest wait"
        );
        assert!(c.expect_paired().is_empty());
    });
}

#[test]
fn a_client_whose_wait_passed_pairs_at_once_with_anyone() {
    let _w = watchdog(60);
    // The wait is long against scheduling delays on a loaded machine: "at once" is checked
    // as "well before a wait would have passed".
    for_each_shards(&args(&["--interest-wait", "2"]), |server| {
        let mut a = waiting_with(server.addr, &["cats"]);
        // Time is the point: a's interest wait passes while nobody else is there.
        std::thread::sleep(Duration::from_millis(2300));
        a.expect_no_reply();
        let mut b = chat(server.addr);
        let t0 = Instant::now();
        b.send_text(&find_msg(&["dogs"]));
        // b is not open yet, so it waits for its own interest wait.
        assert!(b.expect_paired_within(Duration::from_secs(10)).is_empty());
        assert!(
            t0.elapsed() >= Duration::from_millis(1900),
            "b paired before its own wait"
        );
        assert!(a.expect_paired().is_empty());
        let mut c = waiting_with(server.addr, &["cats"]);
        std::thread::sleep(Duration::from_millis(2300));
        let mut d = chat(server.addr);
        let t0 = Instant::now();
        d.send_text(FIND);
        assert!(d.expect_paired().is_empty());
        let at = t0.elapsed();
        assert!(
            at < Duration::from_millis(1500),
            "an open pair took {at:?}, as long as an interest wait"
        );
        assert!(c.expect_paired().is_empty());
    });
}

#[test]
fn next_while_waiting_does_not_restart_the_interest_wait() {
    let _w = watchdog(60);
    // The wait is long against scheduling delays on a loaded machine: a restarted wait would
    // end 1.5 s after the original one.
    for_each_shards(&args(&["--interest-wait", "3"]), |server| {
        let mut a = chat(server.addr);
        let t0 = Instant::now();
        a.send_text(&find_msg(&["a"]));
        a.expect_json(WAITING);
        let mut b = waiting_with(server.addr, &[]);
        std::thread::sleep(Duration::from_millis(1500).saturating_sub(t0.elapsed()));
        a.send_text(NEXT);
        a.expect_json(WAITING);
        assert!(a.expect_paired_within(Duration::from_secs(10)).is_empty());
        let at = t0.elapsed();
        assert!(
            at >= Duration::from_millis(2900),
            "paired after {at:?}, before the interest wait"
        );
        assert!(
            at < Duration::from_millis(4250),
            "paired after {at:?}: next while waiting restarted the wait"
        );
        assert!(b.expect_paired().is_empty());
    });
}

#[test]
fn a_waiting_client_that_disconnects_leaves_the_queue() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let e = waiting_with(server.addr, &[]);
        drop(e);
        // Wait until the server has seen the disconnect (hello counts online clients).
        let deadline = Instant::now() + SOON;
        loop {
            let mut probe = ws_connect(server.addr, "/ws");
            if probe.hello() == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the disconnect is never noticed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut f = chat(server.addr);
        f.send_text(FIND);
        let v = f.next_json(SOON);
        if v["type"] == "paired" {
            // Paired with the departed client in a race: it must end at once.
            f.expect_json(PARTNER_LEFT);
            f.send_text(FIND);
            f.expect_json(WAITING);
        } else {
            assert_eq!(v, json!({"type":"waiting"}));
        }
        f.expect_no_reply();
        let mut g = chat(server.addr);
        g.send_text(FIND);
        g.expect_paired();
        f.expect_paired();
    });
}

#[test]
fn shared_interest_beats_an_older_waiter() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "30"]), |server| {
        let mut a = waiting_with(server.addr, &[]);
        let mut b = waiting_with(server.addr, &["x"]);
        b.expect_no_reply();
        let mut c = chat(server.addr);
        c.send_text(&find_msg(&["y", "x"]));
        assert_eq!(c.expect_paired(), ["x"]);
        assert_eq!(b.expect_paired(), ["x"]);
        a.expect_no_reply();
    });
}

#[test]
fn shared_interest_beats_an_older_open_waiter() {
    let _w = watchdog(30);
    // With no interest wait everyone is open to anyone at once, so the newcomer may pair with
    // either waiter; the one sharing an interest must win over the one waiting longer. The
    // two waiters are former partners (after `next`), so they cannot pair with each other.
    for_each_shards(&args(&["--interest-wait", "0"]), |server| {
        let (mut o, mut s) = pair(server.addr);
        o.send_text(NEXT);
        o.expect_json(WAITING);
        s.expect_json(PARTNER_LEFT);
        s.send_text(&find_msg(&["x"]));
        s.expect_json(WAITING);
        o.expect_no_reply();
        let mut n = chat(server.addr);
        n.send_text(&find_msg(&["x"]));
        assert_eq!(n.expect_paired(), ["x"]);
        assert_eq!(s.expect_paired(), ["x"]);
        o.expect_no_reply();
    });
}

#[test]
fn when_the_interest_wait_passes_the_longest_waiting_wins() {
    let _w = watchdog(30);
    for_each_shards(&args(&["--interest-wait", "0.5"]), |server| {
        // u and v wait without interests but may not pair (former partners).
        let (mut u, mut v) = pair(server.addr);
        u.send_text(NEXT);
        u.expect_json(WAITING);
        v.expect_json(PARTNER_LEFT);
        v.send_text(NEXT);
        v.expect_json(WAITING);
        let mut n = chat(server.addr);
        let t0 = Instant::now();
        n.send_text(&find_msg(&["x"]));
        n.expect_json(WAITING);
        assert!(n.expect_paired_within(Duration::from_secs(5)).is_empty());
        let at = t0.elapsed();
        assert!(
            at >= Duration::from_millis(400),
            "paired after {at:?}, before the interest wait"
        );
        assert!(u.expect_paired().is_empty(), "u waited longest");
        v.expect_no_reply();
    });
}

// ---------------------------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------------------------

#[test]
fn partner_left_arrives_after_every_message() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        for ending in ["leave", "next", "find", "close", "tcp"] {
            let (mut a, mut b) = pair(server.addr);
            for i in 0..30 {
                a.ws.write(Message::text(msg(&format!("{ending} {i}"))))
                    .unwrap();
            }
            match ending {
                "leave" => a.ws.write(Message::text(LEAVE)).unwrap(),
                "next" => a.ws.write(Message::text(NEXT)).unwrap(),
                "find" => a.ws.write(Message::text(FIND)).unwrap(),
                "close" => a.ws.write(Message::Close(None)).unwrap(),
                _ => {}
            }
            a.ws.flush().unwrap();
            if ending == "tcp" {
                a.ws.get_ref().shutdown(std::net::Shutdown::Both).unwrap();
            }
            for i in 0..30 {
                b.expect_json(&msg(&format!("{ending} {i}")));
            }
            b.expect_json(PARTNER_LEFT);
            b.expect_no_reply();
            if ending == "next" || ending == "find" {
                // a is queued again: take it out so the next round starts clean.
                a.expect_json(WAITING);
                a.send_text(LEAVE);
                a.expect_no_reply();
            }
        }
    });
}

#[test]
fn nothing_from_a_previous_partner_reaches_a_later_one() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let (mut a, mut b) = pair(server.addr);
        // a floods b, then moves on at once; c is paired with a right away.
        for i in 0..50 {
            a.ws.write(Message::text(msg(&format!("for b {i}"))))
                .unwrap();
        }
        a.ws.write(Message::text(NEXT)).unwrap();
        a.ws.flush().unwrap();
        let mut c = chat(server.addr);
        c.send_text(FIND);
        c.expect_paired();
        a.expect_paired();
        for i in 0..50 {
            b.expect_json(&msg(&format!("for b {i}")));
        }
        b.expect_json(PARTNER_LEFT);
        c.expect_no_reply();
        a.send_text(&msg("for c"));
        c.expect_json(&msg("for c"));
        // And b's later partner gets nothing of a's either.
        b.send_text(FIND);
        b.expect_json(WAITING);
        let mut d = chat(server.addr);
        d.send_text(FIND);
        d.expect_paired();
        b.expect_paired();
        d.expect_no_reply();
        // Messages c sends now reach a only.
        c.send_text(&msg("for a"));
        a.expect_json(&msg("for a"));
        b.expect_no_reply();
        d.expect_no_reply();
    });
}

#[test]
fn disconnect_while_chatting_gives_partner_left() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        // Abrupt TCP close.
        let (a, mut b) = pair(server.addr);
        drop(a);
        b.expect_json(PARTNER_LEFT);
        b.send_text(&msg("x"));
        b.expect_error("not_chatting");
        // Close handshake.
        let (mut c, mut d) = pair(server.addr);
        c.close_and_end();
        d.expect_json(PARTNER_LEFT);
        // The survivor can find again.
        b.send_text(FIND);
        b.expect_json(WAITING);
        d.send_text(FIND);
        d.expect_paired();
        b.expect_paired();
    });
}

#[test]
fn fragmented_chat_message_with_a_ping_inside_is_reassembled() {
    let _w = watchdog(30);
    for_each_shards(NOLIMIT, |server| {
        let mut ws = RawWs::connect(server.addr, "/ws");
        let (op, hello) = ws.read_message(SOON).unwrap();
        assert_eq!(op, OP_TEXT);
        assert!(String::from_utf8(hello).unwrap().contains("hello"));
        let mut bytes = cframe(false, OP_TEXT, br#"{"type":"#);
        bytes.extend(cframe(true, OP_PING, b"mid"));
        bytes.extend(cframe(false, OP_CONT, br#""fi"#));
        bytes.extend(cframe(true, OP_CONT, br#"nd"}"#));
        ws.send(&bytes);
        assert_eq!(ws.read_message(SOON).unwrap(), (OP_PONG, b"mid".to_vec()));
        let (op, waiting) = ws.read_message(SOON).unwrap();
        assert_eq!(op, OP_TEXT);
        let waiting: serde_json::Value = serde_json::from_slice(&waiting).unwrap();
        assert_eq!(waiting, json!({"type":"waiting"}));
        // The queued raw client pairs with a normal one.
        let mut b = chat(server.addr);
        b.send_text(FIND);
        assert!(b.expect_paired().is_empty());
        let (_, paired) = ws.read_message(SOON).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&paired).unwrap();
        assert_eq!(v, json!({"type":"paired","common":[]}));
    });
}
