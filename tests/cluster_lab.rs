//! The cluster in a small data centre (scripts/cluster-lab.sh): three nodes, a Redis master
//! and replica, three Sentinels and a client host, each in its own network namespace.
//! - (a) 40 ms one way and 1 % loss between every node and Redis: cross-node pairs relay 200
//!   numbered messages each way, in order and exactly once;
//! - (b) one node cut off from Redis for 20 s: its cross-node partners hear `partner_left`
//!   within 10 s, its local pairs keep chatting, and after the heal it pairs across nodes
//!   again within 5 s;
//! - (c) the Redis master killed: the Sentinels (down-after-milliseconds 5000) promote the
//!   replica, and new cross-node pairs work within 15 s; open cross-node chats end with
//!   `partner_left`, local ones go on; nothing arrives out of order or at the wrong client,
//!   and no queue entry is left behind.
//!
//! Needs root (namespaces), `ip`, `nft` or netem, `redis-server` and `python3`: ignored by
//! default, run by scripts/test.sh (`cargo test --test cluster_lab -- --ignored`), and
//! skipped with a message where those are missing.
mod util;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// Our own prefix and subnet, so a lab someone runs by hand (rlab, 10.77.0) is not touched.
const PREFIX: &str = "rlt";
const NET: &str = "10.78.0";
const NODES: usize = 3;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster-lab.sh")
}

fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need it)".into());
    }
    for (tool, arg) in [
        ("ip", "-V"),
        ("redis-server", "--version"),
        ("python3", "--version"),
        ("nft", "--version"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("no `{tool}`"));
        }
    }
    None
}

/// The lab, torn down (by the script's own trap) when dropped, however the test ends.
struct Lab {
    up: Child,
    dir: TempDir,
    nodes: Vec<Child>,
}

impl Lab {
    fn env(cmd: &mut Command, dir: &Path) {
        cmd.env("LAB_PREFIX", PREFIX)
            .env("LAB_SUBNET", NET)
            .env("LAB_DIR", dir)
            .env("DOWN_AFTER", "5000");
    }

    fn up() -> Lab {
        let dir = TempDir::new("cluster-lab");
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(["up", &NODES.to_string(), "1"]);
        Lab::env(&mut cmd, dir.root());
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let up = cmd.spawn().expect("cluster-lab.sh up");
        let lab = Lab {
            up,
            dir,
            nodes: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lab.dir.root().join("ready").exists() {
            assert!(Instant::now() < deadline, "the lab did not come up in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        lab
    }

    fn sh(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(args);
        Lab::env(&mut cmd, self.dir.root());
        let out = cmd.output().expect("cluster-lab.sh");
        assert!(
            out.status.success(),
            "cluster-lab.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn node_addr(i: usize) -> SocketAddr {
        format!("{NET}.{}:8080", 101 + i)
            .parse()
            .expect("node address")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.root().join(format!("node{}.log", i + 1))
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Start node `i` (0-based) in its namespace, following the Sentinels, with short
    /// timeouts so the test stays brief.
    fn start_node(&mut self, i: usize) {
        let url = self.sh(&["url"]);
        let log = std::fs::File::create(self.log_path(i)).expect("node log");
        let addr = Lab::node_addr(i).to_string();
        let metrics = format!("{NET}.{}:9090", 101 + i);
        let name = format!("n{}", i + 1);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("{PREFIX}-{name}")])
            .arg(env!("CARGO_BIN_EXE_roulette"))
            .args(["--listen", &addr, "--metrics-listen", &metrics])
            .args(["--cluster", &url, "--node-name", &name])
            .args(["--shards", "2", "--rate-limit-per-sec", "0"])
            .args([
                "--max-connections-per-ip",
                "0",
                "--handshake-rate-per-ip",
                "0",
            ]);
        clean_env(&mut cmd);
        cmd.env(
            "RUST_LOG",
            "info,roulette::cluster=debug,roulette::matchhost=debug",
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        die_with_test(&mut cmd);
        self.nodes.push(cmd.spawn().expect("start node"));
    }

    fn wait_log(&self, i: usize, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log(i).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "node {} did not log {needle:?} within {within:?}:\n{}",
                i + 1,
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
        // SAFETY: kill on our own child's pid; SIGTERM runs the script's teardown trap.
        unsafe { libc::kill(self.up.id() as i32, libc::SIGTERM) };
        let _ = self.up.wait();
        if std::thread::panicking() {
            for i in 0..NODES {
                eprintln!("---- node {} log ----\n{}", i + 1, self.log(i));
                let delay = self.dir.root().join(format!("delay-n{}.log", i + 1));
                eprintln!(
                    "---- n{} delay proxy ----\n{}",
                    i + 1,
                    std::fs::read_to_string(delay).unwrap_or_default()
                );
            }
        }
    }
}

/// Move this thread into namespace `name`: every socket it opens from now on is a client on
/// that host of the lab.
fn enter_netns(name: &str) {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a descriptor we own; it changes only this thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

fn partner_left_within(c: &mut Client, within: Duration) -> Duration {
    let t0 = Instant::now();
    let v: Value = c.next_json(within);
    assert_eq!(v["type"], "partner_left", "expected partner_left, got {v}");
    t0.elapsed()
}

/// Try to pair `a` on `a_at` and `b` on `b_at` across nodes on a fresh tag until it works or
/// `within` passes; returns the pair and how long it took.
fn pair_across_within(
    a_at: SocketAddr,
    b_at: SocketAddr,
    tag: &str,
    within: Duration,
) -> (Client, Client, Duration) {
    let t0 = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tag = format!("{tag}-{attempt}");
        let mut a = chat(a_at);
        let mut b = chat(b_at);
        a.send_text(&find_msg(&[&tag]));
        a.expect_json(WAITING);
        b.send_text(&find_msg(&[&tag]));
        let left = within
            .saturating_sub(t0.elapsed())
            .max(Duration::from_secs(1));
        let wait = left.min(Duration::from_secs(3));
        let got = match try_json(&mut b, wait) {
            Some(v) if v["type"] == "waiting" => try_json(&mut b, wait),
            other => other,
        };
        let got = got.unwrap_or(Value::Null);
        if got["type"] == "paired" {
            let v = a.next_json(SOON);
            assert_eq!(v["type"], "paired", "a was not told: {v}");
            return (a, b, t0.elapsed());
        }
        assert!(
            got.is_null() || got["type"] == "waiting",
            "unexpected while pairing: {got}"
        );
        assert!(
            t0.elapsed() < within,
            "no cross-node pair {a_at} - {b_at} within {within:?}"
        );
    }
}

/// The next JSON message, or `None` if none comes within `within`.
fn try_json(c: &mut Client, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        match c.recv(deadline.saturating_duration_since(Instant::now())) {
            Recv::Msg(tungstenite::Message::Text(t)) => {
                return serde_json::from_str(t.as_str()).ok();
            }
            Recv::Msg(_) => {}
            Recv::Timeout => return None,
            Recv::Closed(e) => panic!("connection closed while pairing: {e}"),
        }
    }
}

/// Which master the Sentinels name now, asked from the client host.
fn master_addr() -> String {
    let c = redis::Client::open(format!("redis://{NET}.21:26379")).expect("sentinel client");
    let mut con = c
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("sentinel connection");
    let (h, p): (String, String) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg("roulette")
        .query(&mut con)
        .expect("get-master-addr-by-name");
    format!("{h}:{p}")
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it"]
fn the_cluster_survives_slow_links_a_partition_and_a_redis_failover() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED cluster_lab: {why}");
        return;
    }
    let _g = serial();
    let _w = watchdog(300);
    let started = Instant::now();
    let mut lab = Lab::up();
    for i in 0..NODES {
        lab.sh(&[
            "netem",
            &format!("n{}", i + 1),
            "delay",
            "40ms",
            "loss",
            "1%",
        ]);
    }
    for i in 0..NODES {
        lab.start_node(i);
    }
    for i in 0..NODES {
        lab.wait_log(i, "cluster: connected to Redis", Duration::from_secs(20));
    }
    // Every client lives on the load-generator host.
    enter_netns(&format!("{PREFIX}-lg1"));
    let n = |i: usize| Lab::node_addr(i);

    // (a) Slow, lossy links to Redis: 200 numbered messages each way on every node pair.
    let t = Instant::now();
    let mut pairs = Vec::new();
    for (x, y) in [(0, 1), (1, 2), (2, 0)] {
        let (mut a, mut b, took) =
            pair_across_within(n(x), n(y), &format!("slow-{x}{y}"), Duration::from_secs(10));
        eprintln!("(a) n{}-n{} paired in {took:?}", x + 1, y + 1);
        exchange(&mut a, &mut b, 200, &format!("slow n{}-n{}", x + 1, y + 1));
        pairs.push((a, b));
    }
    eprintln!(
        "(a) 3 cross-node pairs x 200 messages each way in {:?}",
        t.elapsed()
    );
    drop(pairs);

    // (b) n3 cut off from Redis for 20 s.
    let (mut far, mut near, _) =
        pair_across_within(n(0), n(2), "before-cut", Duration::from_secs(10));
    let (mut l1, mut l2) = pair_tagged(n(2), n(2), "local-on-n3");
    let cut = Instant::now();
    lab.sh(&["partition", "n3"]);
    let heard = partner_left_within(&mut far, Duration::from_secs(10));
    eprintln!("(b) the partner on n1 heard partner_left after {heard:?}");
    partner_left_within(&mut near, Duration::from_secs(10));
    let mut round = 0;
    while cut.elapsed() < Duration::from_secs(20) {
        exchange(&mut l1, &mut l2, 10, &format!("cut {round}"));
        round += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    lab.sh(&["heal", "n3"]);
    let (mut a, mut b, took) = pair_across_within(n(2), n(1), "after-heal", Duration::from_secs(5));
    eprintln!("(b) n3 paired across nodes {took:?} after the heal");
    exchange(&mut a, &mut b, 50, "healed");
    exchange(&mut l1, &mut l2, 10, "after heal");
    drop((a, b, far, near));

    // (c) Sentinel failover: kill the master.
    let old_master = master_addr();
    let (mut x1, mut x2, _) =
        pair_across_within(n(0), n(1), "before-failover", Duration::from_secs(10));
    let (mut k1, mut k2) = pair_tagged(n(0), n(0), "local-on-n1");
    let killed = Instant::now();
    lab.sh(&["kill", "redis1"]);
    partner_left_within(&mut x1, Duration::from_secs(15));
    partner_left_within(&mut x2, Duration::from_secs(15));
    let (mut a, mut b, _) =
        pair_across_within(n(0), n(1), "after-failover", Duration::from_secs(15));
    let back = killed.elapsed();
    eprintln!("(c) cross-node pairs again {back:?} after the master was killed");
    assert!(back <= Duration::from_secs(15), "took {back:?}");
    let new_master = master_addr();
    assert_ne!(old_master, new_master, "the Sentinels did not fail over");
    exchange(&mut a, &mut b, 100, "failed over");
    exchange(&mut k1, &mut k2, 100, "local through the failover");
    for (x, y) in [(1, 2), (2, 0)] {
        let (mut a, mut b, _) =
            pair_across_within(n(x), n(y), &format!("new-{x}{y}"), Duration::from_secs(5));
        exchange(&mut a, &mut b, 50, &format!("new n{}-n{}", x + 1, y + 1));
    }
    for i in 0..NODES {
        assert!(
            !lab.log(i).contains("went missing"),
            "node {} saw a gap in relayed batches",
            i + 1
        );
    }
    drop((a, b, k1, k2, l1, l2));

    // No queue entry left behind: once every client is gone, the queue on the new master
    // holds nothing, and every node it knows of is alive.
    let c = redis::Client::open(format!("redis://{new_master}")).expect("master client");
    let mut con = c
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("master connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries: Vec<String> = redis::cmd("KEYS")
            .arg("rl:e:*")
            .query(&mut con)
            .expect("KEYS");
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg("rl:nodes")
            .query(&mut con)
            .expect("SMEMBERS");
        let mut dead = Vec::new();
        for m in &nodes {
            let alive: bool = redis::cmd("EXISTS")
                .arg(format!("rl:node:{m}"))
                .query(&mut con)
                .expect("EXISTS");
            if !alive {
                dead.push(m.clone());
            }
        }
        if entries.is_empty() && dead.is_empty() && nodes.len() == NODES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stale queue state: entries {entries:?}, nodes {nodes:?}, dead {dead:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("cluster lab passed in {:?}", started.elapsed());
}
