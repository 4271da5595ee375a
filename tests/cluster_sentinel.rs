//! Cluster mode behind Sentinels on loopback, as any user: a Redis master and replica with a
//! password, three Sentinels with a password of their own (down-after-milliseconds 5000), two
//! nodes on `redis+sentinel://` with the data password in a file. The master is killed: the
//! cross-node chat ends with `partner_left`, the local chat goes on, new cross-node pairs work
//! within 15 s, and neither password appears in any log. (tests/cluster_lab.rs does the same
//! in network namespaces, with slow links and a partition, as root.)
mod util;

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

const DATA_PW: &str = "data-s3cr3t-7f2c";
const SENTINEL_PW: &str = "sentinel-s3cr3t-91ab";

fn redis_ok(port: u16, password: &str, cmd: &[&str]) -> Option<redis::Value> {
    let client = redis::Client::open(format!("redis://:{password}@127.0.0.1:{port}")).ok()?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    let mut c = redis::cmd(cmd.first()?);
    for a in cmd.get(1..)? {
        c.arg(*a);
    }
    c.query(&mut con).ok()
}

fn spawn_sentinel(dir: &TempDir, port: u16, master: u16) -> Child {
    let conf = dir.write(
        &format!("sentinel-{port}.conf"),
        &format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nrequirepass {SENTINEL_PW}\n\
             sentinel sentinel-pass {SENTINEL_PW}\n\
             sentinel monitor roulette 127.0.0.1 {master} 2\n\
             sentinel auth-pass roulette {DATA_PW}\n\
             sentinel down-after-milliseconds roulette 5000\n\
             sentinel failover-timeout roulette 10000\n",
            dir.root().display()
        ),
    );
    let mut cmd = Command::new("redis-server");
    cmd.arg(conf)
        .arg("--sentinel")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_test(&mut cmd);
    cmd.spawn().expect("start a Sentinel")
}

/// Kills and reaps its processes when dropped, however the test ends.
struct Reaped(Vec<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn partner_left_within(c: &mut Client, within: Duration) {
    let v: Value = c.next_json(within);
    assert_eq!(v["type"], "partner_left", "expected partner_left, got {v}");
}

#[test]
fn nodes_follow_the_master_through_a_sentinel_failover() {
    let _g = serial();
    let _w = watchdog(120);
    let dir = TempDir::new("sentinel");
    let (mp, rp) = (free_port(), free_port());
    // A replica's full sync writes the master's snapshot into its working directory even with
    // persistence off: keep it in the test's folder, not the checkout.
    let data_dir = dir.root().display().to_string();
    let auth = [
        "--requirepass",
        DATA_PW,
        "--masterauth",
        DATA_PW,
        "--dir",
        data_dir.as_str(),
    ];
    let mut master = spawn_redis(["--port", &mp.to_string()].iter().chain(&auth));
    let mut others = Reaped(Vec::new());
    others.0.push(spawn_redis(
        [
            "--port",
            &rp.to_string(),
            "--replicaof",
            "127.0.0.1",
            &mp.to_string(),
        ]
        .iter()
        .chain(&auth),
    ));
    let sports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    others
        .0
        .extend(sports.iter().map(|&p| spawn_sentinel(&dir, p, mp)));
    // Every Sentinel knows the replica and the two others before anything is killed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = sports.iter().all(|&p| {
            let count = |what: &str| match redis_ok(p, SENTINEL_PW, &["SENTINEL", what, "roulette"])
            {
                Some(redis::Value::Array(v)) => v.len(),
                _ => 0,
            };
            count("replicas") == 1 && count("sentinels") == 2
        });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the Sentinels did not settle");
        std::thread::sleep(Duration::from_millis(200));
    }

    let url = format!(
        "redis+sentinel://{SENTINEL_PW}@{}/roulette",
        sports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let pw_file = dir.write("data-password", &format!("{DATA_PW}\n"));
    let pw_file = pw_file.to_string_lossy().to_string();
    let nodes: Vec<Server> = (1..=2)
        .map(|i| {
            let name = format!("n{i}");
            Server::start_with_env(
                &[
                    "--shards",
                    "1",
                    "--rate-limit-per-sec",
                    "0",
                    "--cluster",
                    &url,
                    "--cluster-password-file",
                    &pw_file,
                    "--node-name",
                    &name,
                ],
                &[("RUST_LOG", "debug")],
            )
        })
        .collect();
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !n.log_contains(&format!("(master 127.0.0.1:{mp})")) {
            assert!(Instant::now() < deadline, "no connection: {}", n.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (mut x1, mut x2) = pair_tagged(nodes[0].addr, nodes[1].addr, "across-before");
    exchange(&mut x1, &mut x2, 50, "before");
    let (mut l1, mut l2) = pair_tagged(nodes[0].addr, nodes[0].addr, "local");

    let killed = Instant::now();
    let _ = master.kill();
    let _ = master.wait();
    partner_left_within(&mut x1, Duration::from_secs(15));
    partner_left_within(&mut x2, Duration::from_secs(15));
    exchange(&mut l1, &mut l2, 20, "local during the failover");
    let mut attempt = 0;
    let (mut a, mut b) = loop {
        attempt += 1;
        let tag = format!("across-after-{attempt}");
        let mut a = chat(nodes[0].addr);
        let mut b = chat(nodes[1].addr);
        a.send_text(&find_msg(&[&tag]));
        a.expect_json(WAITING);
        b.send_text(&find_msg(&[&tag]));
        let mut got = Value::Null;
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            match b.recv(until.saturating_duration_since(Instant::now())) {
                Recv::Msg(tungstenite::Message::Text(t)) => {
                    got = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if got["type"] != "waiting" {
                        break;
                    }
                }
                Recv::Msg(_) => {}
                Recv::Timeout => break,
                Recv::Closed(e) => panic!("closed while pairing: {e}"),
            }
        }
        if got["type"] == "paired" {
            a.expect_type("paired");
            break (a, b);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no cross-node pair within 15 s of the kill"
        );
    };
    let back = killed.elapsed();
    eprintln!("cross-node pairs again {back:?} after the master was killed");
    exchange(&mut a, &mut b, 50, "after");
    exchange(&mut l1, &mut l2, 20, "local after the failover");
    for n in &nodes {
        let log = n.log_text();
        assert!(log.contains(&format!("(master 127.0.0.1:{rp})")), "{log}");
        assert!(
            !log.contains(DATA_PW) && !log.contains(SENTINEL_PW),
            "a password in the log"
        );
    }
}
