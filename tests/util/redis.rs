//! A real redis-server for cluster tests, and nodes clustered on it.

use super::http::find;
use super::server::{die_with_test, stop_child, Server};
use super::sockets::free_port;
use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `redis-server` on loopback in the foreground with persistence off, killed with the test;
/// `args` come after these (a later option overrides an earlier one).
pub fn spawn_redis<I, S>(args: I) -> Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_test(&mut cmd);
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start redis-server ({e}): scripts/test.sh installs it (apt-get install redis-server)")
    })
}

/// `redis-server` on a free loopback port, persistence off, killed with the test.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
        };
        r.launch();
        r
    }

    pub fn launch(&mut self) {
        let port = self.port.to_string();
        let child = spawn_redis([
            "--port",
            &port,
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// One command over RESP; returns the raw reply (enough for tests).
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).expect("write to redis");
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        // Simple replies end at the first CRLF; a bulk string after its announced length.
        let complete = |out: &[u8]| -> bool {
            let Some(eol) = find(out, b"\r\n") else {
                return false;
            };
            match out.first() {
                Some(b'$') => {
                    let len: i64 = String::from_utf8_lossy(&out[1..eol]).parse().unwrap_or(-1);
                    len < 0 || out.len() >= eol + 2 + len as usize + 2
                }
                _ => true,
            }
        };
        while !complete(&out) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Close every Redis connection of node `name` (as a network blip would).
    pub fn kill_clients_of(&self, name: &str) -> usize {
        let list = self.command(&["CLIENT", "LIST"]);
        let ids: Vec<String> = list
            .lines()
            .filter(|l| l.contains(&format!("name=roulette-{name}~")))
            .filter_map(|l| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix("id="))
                    .map(str::to_string)
            })
            .collect();
        for id in &ids {
            self.command(&["CLIENT", "KILL", "ID", id]);
        }
        ids.len()
    }

    /// Kill Redis (its data dies with it: nothing is persisted).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Redis plus nodes started with `--cluster` on it.
pub struct Cluster {
    pub redis: Redis,
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Redis plus `n` nodes (two shards each, no rate limit), each connected to Redis.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let redis = Redis::start();
        let url = redis.url();
        Cluster::start_on(redis, &url, n, extra)
    }

    /// Like `start`, but the nodes reach `redis` through `url`, which may lead somewhere
    /// in between (a proxy that delays or drops its replies).
    pub fn start_on(redis: Redis, url: &str, n: usize, extra: &[&str]) -> Cluster {
        let nodes = (1..=n)
            .map(|i| {
                let name = format!("n{i}");
                let mut args = vec![
                    "--shards",
                    "2",
                    "--rate-limit-per-sec",
                    "0",
                    "--cluster",
                    url,
                    "--node-name",
                    &name,
                ];
                args.extend_from_slice(extra);
                Server::start_with_env(
                    &args,
                    &[(
                        "RUST_LOG",
                        "info,roulette::cluster=debug,roulette::matchhost=debug",
                    )],
                )
            })
            .collect();
        let c = Cluster { redis, nodes };
        for i in 0..n {
            c.wait_connected(i, 1);
        }
        c
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// Wait until node `i` has logged its `times`-th Redis connection.
    pub fn wait_connected(&self, i: usize, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let n = self.nodes[i]
                .log_text()
                .matches("cluster: connected to Redis")
                .count();
            if n >= times {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not connect to Redis (#{times}); log:\n{}",
                i + 1,
                self.nodes[i].log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
