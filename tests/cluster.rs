//! Cluster mode against a real `redis-server` (loopback, a free port, persistence off) and
//! three real nodes: pairing across nodes (with and without interests), ordered relay both
//! ways, the no-re-pair rule across nodes, a SIGKILLed node, a Redis outage and its recovery,
//! the cluster-wide online count, and a node that starts while Redis is unreachable.
//!
//! Each test gets its own Redis and nodes; they run one at a time so that the failure
//! timings (heartbeat TTL, reconnect backoff) are not skewed by each other's load.
mod util;

use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

/// How long PROTOCOL.md allows for a partner on a failed node or link to be told.
const FAILURE_BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Pairs across nodes
// ---------------------------------------------------------------------------------------------

/// `a` on one node and `b` on another find with these interests; both must be paired with
/// each other (checked by a message each way). Returns (a, b, common).
fn pair_across(
    a_at: SocketAddr,
    a_interests: &[&str],
    b_at: SocketAddr,
    b_interests: &[&str],
) -> (Client, Client, Vec<String>) {
    let mut a = chat(a_at);
    let mut b = chat(b_at);
    a.send_text(&find_msg(a_interests));
    a.expect_json(WAITING);
    b.send_text(&find_msg(b_interests));
    let common_b = b.expect_paired();
    let common_a = a.expect_paired();
    assert_eq!(
        common_a, common_b,
        "both sides see the same common interests"
    );
    a.send_text(&msg("hello b"));
    b.expect_json(&msg("hello b"));
    b.send_text(&msg("hello a"));
    a.expect_json(&msg("hello a"));
    (a, b, common_a)
}

/// Wait for `partner_left`.
fn partner_left_within(c: &mut Client, within: Duration) {
    let v: Value = c.next_json(within);
    assert_eq!(v["type"], "partner_left", "expected partner_left, got {v}");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn users_on_different_nodes_pair_and_chat_in_order_both_ways() {
    let _g = serial();
    let _w = watchdog(90);
    let c = Cluster::start(3, &[]);

    // No interests: n1 with n2.
    let (mut a, mut b, common) = pair_across(c.addr(0), &[], c.addr(1), &[]);
    assert!(common.is_empty());
    exchange(&mut a, &mut b, 300, "plain");
    // Typing crosses too, in order with messages.
    a.send_text(r#"{"type":"typing","active":true}"#);
    a.send_text(&msg("after typing"));
    b.expect_json(r#"{"type":"typing","active":true}"#);
    b.expect_json(&msg("after typing"));

    // Interests: n2 with n3, sharing one of two.
    let (mut x, mut y, common) = pair_across(c.addr(1), &["cats", "rust"], c.addr(2), &["rust"]);
    assert_eq!(common, vec!["rust".to_string()]);
    exchange(&mut x, &mut y, 300, "tagged");

    // Leaving: the partner gets every message first, then partner_left.
    for i in 0..50 {
        a.send_text(&msg(&format!("last {i}")));
    }
    a.send_text(r#"{"type":"leave"}"#);
    for i in 0..50 {
        b.expect_json(&msg(&format!("last {i}")));
    }
    b.expect_json(PARTNER_LEFT);
    // A disconnect ends the other cross-node pair.
    drop(x);
    y.expect_json(PARTNER_LEFT);

    for (i, n) in c.nodes.iter().enumerate() {
        let out = n
            .metric("roulette_cluster_records_sent_total")
            .unwrap_or(0.0);
        let inn = n
            .metric("roulette_cluster_records_received_total")
            .unwrap_or(0.0);
        eprintln!("node n{}: {out} records sent, {inn} received", i + 1);
        assert_eq!(n.metric("roulette_cluster_redis_up"), Some(1.0));
    }
    assert!(
        c.nodes[0]
            .metric("roulette_cluster_records_sent_total")
            .unwrap_or(0.0)
            >= 300.0
    );
    assert!(
        c.nodes[2]
            .metric("roulette_cluster_records_received_total")
            .unwrap_or(0.0)
            >= 300.0
    );
}

#[test]
fn cluster_matching_keeps_every_rule_of_the_protocol() {
    let _g = serial();
    let _w = watchdog(90);
    // A long interest wait: interest users only pair by interest during this test.
    let c = Cluster::start(3, &["--interest-wait", "30"]);

    // An open stranger waits on n1 first.
    let mut s = chat(c.addr(0));
    s.send_text(&find_msg(&[]));
    s.expect_json(WAITING);
    // `a` on n2 has interests: it must not take the open stranger.
    let mut a = chat(c.addr(1));
    a.send_text(&find_msg(&["x", "y"]));
    a.expect_json(WAITING);
    a.expect_quiet(Duration::from_millis(600));
    // `b` on n3 shares "x" with `a`: interests first, even though `s` waited longer.
    let mut b = chat(c.addr(2));
    b.send_text(&find_msg(&["x"]));
    assert_eq!(b.expect_paired(), vec!["x".to_string()]);
    assert_eq!(a.expect_paired(), vec!["x".to_string()]);

    // `a` skips `b`; `b` asks for someone new too. They share "x" but must not re-pair while
    // nobody else is around.
    a.send_text(r#"{"type":"next"}"#);
    a.expect_json(WAITING);
    b.expect_json(PARTNER_LEFT);
    // Queue order across nodes is the order in which users reach the cluster queue (each
    // after its node's hold): leave no doubt that `a` is first.
    std::thread::sleep(Duration::from_millis(400));
    b.send_text(r#"{"type":"next"}"#);
    b.expect_json(WAITING);
    a.expect_quiet(Duration::from_millis(1500));
    b.expect_quiet(Duration::from_millis(100));

    // A newcomer with "x" on n1 pairs with `a`, the one waiting longest among the two...
    let mut d = chat(c.addr(0));
    d.send_text(&find_msg(&["x"]));
    assert_eq!(d.expect_paired(), vec!["x".to_string()]);
    assert_eq!(a.expect_paired(), vec!["x".to_string()]);
    // ...which lifts the no-re-pair rule: `a` leaves `d` and meets `b` again.
    a.send_text(&find_msg(&["x"]));
    a.expect_json(WAITING);
    d.expect_json(PARTNER_LEFT);
    assert_eq!(a.expect_paired(), vec!["x".to_string()]);
    assert_eq!(b.expect_paired(), vec!["x".to_string()]);
    a.send_text(&msg("again"));
    b.expect_json(&msg("again"));

    // The open stranger pairs with the next open user, on any node.
    let mut e = chat(c.addr(2));
    e.send_text(&find_msg(&[]));
    assert!(e.expect_paired().is_empty());
    assert!(s.expect_paired().is_empty());
    s.send_text(&msg("from n1"));
    e.expect_json(&msg("from n1"));
    // Never two partners at once: nobody else heard anything.
    d.expect_quiet(Duration::from_millis(300));
}

#[test]
fn a_killed_node_ends_its_cross_node_chats_within_10_s_and_its_queue_entries_die() {
    let _g = serial();
    let _w = watchdog(90);
    let c = Cluster::start(3, &[]);

    let (mut a, b, _) = pair_across(c.addr(0), &[], c.addr(1), &[]);
    // A local pair on n1 keeps chatting through all of this.
    let (mut x, mut y) = pair(c.addr(0));
    // `w` waits on n2 long enough to be in the cluster queue.
    let mut w = chat(c.addr(1));
    w.send_text(&find_msg(&["lonely"]));
    w.expect_json(WAITING);
    std::thread::sleep(Duration::from_millis(500));

    let killed = Instant::now();
    c.nodes[1].signal(libc::SIGKILL);
    partner_left_within(&mut a, FAILURE_BOUND);
    let took = killed.elapsed();
    eprintln!("partner on the killed node: partner_left after {took:?}");
    drop(b);
    drop(w);
    exchange(&mut x, &mut y, 20, "local");

    // The dead node's queue entry is never matched: a newcomer sharing its interest waits.
    let mut z = chat(c.addr(2));
    z.send_text(&find_msg(&["lonely"]));
    z.expect_json(WAITING);
    z.expect_quiet(Duration::from_millis(1000));
    // The survivors still pair across nodes.
    a.send_text(&find_msg(&["lonely"]));
    a.expect_json(WAITING);
    assert_eq!(a.expect_paired(), vec!["lonely".to_string()]);
    assert_eq!(z.expect_paired(), vec!["lonely".to_string()]);
    exchange(&mut a, &mut z, 20, "survivors");
    assert!(
        c.nodes[0]
            .metric("roulette_cluster_nodes_down_total")
            .unwrap_or(0.0)
            >= 1.0,
        "n1 counted the dead node"
    );
    c.nodes[0].wait_metric("roulette_cluster_nodes", 2.0, Duration::from_secs(3));
}

#[test]
fn a_redis_outage_ends_cross_node_chats_keeps_local_ones_and_pairing_resumes_after() {
    let _g = serial();
    let _w = watchdog(120);
    let mut c = Cluster::start(3, &[]);

    let (mut a, mut b, _) = pair_across(c.addr(0), &[], c.addr(1), &[]);
    let (mut x, mut y) = pair(c.addr(0));

    let stopped = Instant::now();
    c.redis.stop();
    partner_left_within(&mut a, FAILURE_BOUND);
    let ta = stopped.elapsed();
    partner_left_within(&mut b, FAILURE_BOUND);
    let tb = stopped.elapsed();
    eprintln!("Redis stopped: partner_left after {ta:?} (n1) and {tb:?} (n2)");
    for n in &c.nodes {
        n.wait_metric("roulette_cluster_redis_up", 0.0, Duration::from_secs(3));
    }
    // Local chats go on, and local pairing still works during the outage.
    exchange(&mut x, &mut y, 50, "during outage");
    let (mut p, mut q) = pair(c.addr(1));
    exchange(&mut p, &mut q, 20, "new local pair");
    // Users alone on their node wait.
    a.send_text(&find_msg(&[]));
    a.expect_json(WAITING);
    let mut d = chat(c.addr(2));
    d.send_text(&find_msg(&[]));
    d.expect_json(WAITING);
    a.expect_quiet(Duration::from_millis(500));
    // The outage was logged once per node, not once per retry.
    std::thread::sleep(Duration::from_secs(2));
    for (i, n) in c.nodes.iter().enumerate() {
        let log = n.log_text();
        let lines = log.matches("cluster: lost the Redis link").count()
            + log.matches("cluster: relay subscription lost").count()
            + log.matches("cluster: Redis unreachable").count();
        assert_eq!(
            lines,
            1,
            "node n{} logged the outage {lines} times:\n{log}",
            i + 1
        );
    }

    // Redis comes back (empty): every node reconnects and the two waiting users meet.
    let t0 = Instant::now();
    c.redis.launch();
    for i in 0..3 {
        c.wait_connected(i, 2);
    }
    assert_eq!(
        a.expect_paired_within(Duration::from_secs(10)),
        Vec::<String>::new()
    );
    assert_eq!(d.expect_paired(), Vec::<String>::new());
    eprintln!(
        "Redis restarted: waiting users on n1 and n3 paired after {:?}",
        t0.elapsed()
    );
    exchange(&mut a, &mut d, 100, "after outage");
    // And new cross-node pairs form as before.
    let (mut e, mut f, _) = pair_across(c.addr(1), &["z"], c.addr(2), &["z"]);
    exchange(&mut e, &mut f, 20, "new");
    for n in &c.nodes {
        assert_eq!(n.metric("roulette_cluster_redis_up"), Some(1.0));
        assert!(
            n.metric("roulette_cluster_redis_link_losses_total")
                .unwrap_or(0.0)
                >= 1.0
        );
    }
    drop(b);
}

#[test]
fn a_node_that_loses_its_link_ends_its_chats_and_comes_back_as_a_new_incarnation() {
    let _g = serial();
    let _w = watchdog(60);
    let c = Cluster::start(3, &[]);
    let (mut a, mut b, _) = pair_across(c.addr(0), &[], c.addr(1), &[]);
    let (mut x, mut y) = pair(c.addr(0));
    // Both of n1's connections (commands and subscription) are named after it.
    let cut = Instant::now();
    assert_eq!(
        c.redis.kill_clients_of("n1"),
        2,
        "n1 has a command and a pub/sub connection"
    );
    partner_left_within(&mut a, FAILURE_BOUND);
    let ta = cut.elapsed();
    partner_left_within(&mut b, FAILURE_BOUND);
    let tb = cut.elapsed();
    eprintln!("n1's link cut: partner_left after {ta:?} on n1 and {tb:?} on n2");
    // n1 retires its old incarnation when it reconnects, so n2 need not wait for the
    // heartbeat to expire (5 s).
    assert!(tb < Duration::from_secs(4), "n2 learned only after {tb:?}");
    c.wait_connected(0, 2);
    assert!(c.nodes[0].log_contains("cluster: retired our previous incarnation"));
    exchange(&mut x, &mut y, 20, "local");
    let (mut e, mut f, _) = pair_across(c.addr(0), &["q"], c.addr(2), &["q"]);
    exchange(&mut e, &mut f, 20, "after the blip");
}

#[test]
fn a_draining_node_takes_its_users_out_of_the_cluster_queue_and_ends_its_chats() {
    let _g = serial();
    let _w = watchdog(60);
    let mut c = Cluster::start(2, &["--grace-period", "5"]);
    let (mut a, mut b, _) = pair_across(c.addr(0), &[], c.addr(1), &[]);
    // `w` waits on n1, in the cluster queue by now.
    let mut w = chat(c.addr(0));
    w.send_text(&find_msg(&["t"]));
    w.expect_json(WAITING);
    std::thread::sleep(Duration::from_millis(400));
    c.nodes[0].signal(libc::SIGTERM);
    // n1's clients are closed with 1001 and their partners elsewhere told.
    a.expect_close(1001);
    w.expect_close(1001);
    b.expect_json(PARTNER_LEFT);
    // Nobody on another node is paired with the departing `w`.
    let mut z = chat(c.addr(1));
    z.send_text(&find_msg(&["t"]));
    z.expect_json(WAITING);
    z.expect_quiet(Duration::from_millis(800));
    let status = c.nodes[0].wait_exit(Duration::from_secs(8));
    assert!(
        status.is_some_and(|s| s.success()),
        "n1 exits 0 after draining: {status:?}"
    );
}

#[test]
fn hello_counts_the_clients_of_every_node() {
    let _g = serial();
    let _w = watchdog(60);
    let c = Cluster::start(3, &[]);
    let _held: Vec<Client> = vec![chat(c.addr(0)), chat(c.addr(0)), chat(c.addr(1))];
    // Heartbeats carry each node's count every second; a newcomer on n3 counts itself too.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe = ws_connect(c.addr(2), "/ws");
        let online = probe.hello();
        if online == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hello never counted the other nodes' clients (last: {online})"
        );
        drop(probe);
        std::thread::sleep(Duration::from_millis(200));
    }
    c.nodes[0].wait_metric("roulette_cluster_nodes", 3.0, Duration::from_secs(3));
}

#[test]
fn a_node_whose_redis_is_down_at_start_serves_alone_and_says_so_once() {
    let _g = serial();
    let _w = watchdog(60);
    // A port nobody listens on.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut node = Server::start(&["--cluster", &url, "--rate-limit-per-sec", "0"]);
    let (mut a, mut b) = pair(node.addr);
    exchange(&mut a, &mut b, 20, "alone");
    std::thread::sleep(Duration::from_secs(3));
    let log = node.log_text();
    assert_eq!(
        log.matches("cluster: Redis unreachable").count(),
        1,
        "the outage is logged once:\n{log}"
    );
    assert_eq!(node.metric("roulette_cluster_redis_up"), Some(0.0));
    assert!(
        node.metric("roulette_cluster_redis_connects_total")
            .unwrap_or(0.0)
            >= 3.0
    );
    node.assert_running();

    // A bad URL is refused at start with a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_roulette"))
        .args(["--cluster", "http://127.0.0.1:6379"])
        .env("ROULETTE_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a redis:// URL"), "{err}");
}

#[test]
fn a_malformed_heartbeat_value_does_not_break_the_others() {
    let _g = serial();
    let _w = watchdog(60);
    let c = Cluster::start(2, &[]);
    // Something that is not a roulette node writes a heartbeat key with a non-number in it.
    c.redis
        .command(&["SET", "rl:node:intruder", "not-a-number", "PX", "600000"]);
    c.redis.command(&["SADD", "rl:nodes", "intruder"]);
    // Several heartbeats later the nodes are still up and still pair across.
    let losses = |i: usize| {
        c.nodes[i]
            .metric("roulette_cluster_redis_link_losses_total")
            .unwrap_or(0.0)
    };
    let before = (losses(0), losses(1));
    for i in 0..2 {
        c.nodes[i].wait_metric_at_least(
            "roulette_cluster_redis_roundtrips_total",
            c.nodes[i]
                .metric("roulette_cluster_redis_roundtrips_total")
                .unwrap_or(0.0)
                + 6.0,
            Duration::from_secs(15),
        );
    }
    assert_eq!((losses(0), losses(1)), before, "a heartbeat failed");
    for i in 0..2 {
        assert_eq!(c.nodes[i].metric("roulette_cluster_redis_up"), Some(1.0));
    }
    let (mut a, mut b, _) = pair_across(c.addr(0), &["hb"], c.addr(1), &["hb"]);
    exchange(&mut a, &mut b, 5, "after the intruder");
}
