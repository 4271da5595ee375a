//! The server under test: the real binary started on port 0 with its log captured, a run
//! per shard count, and a watchdog per test.

use super::http::get;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Deadline for anything that should happen "at once".
pub const SOON: Duration = Duration::from_secs(5);

static SERIAL: Mutex<()> = Mutex::new(());

/// One test of this binary at a time, for tests that start several processes or whose
/// timings must not be skewed by each other's load (taken before the watchdog, so waiting
/// does not count). A test that failed does not poison it for the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Aborts the whole test process if the test holding it runs longer than allowed (a hung
/// test must fail, not stall CI). Dropping it disarms it.
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

pub fn watchdog(secs: u64) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let name = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !flag.load(Ordering::SeqCst) {
            eprintln!(
                "WATCHDOG: test `{name}` still running after {secs} s; aborting the test process"
            );
            std::process::abort();
        }
    });
    Watchdog { done }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Start `roulette --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 ARGS` with
    /// `RUST_LOG=info` and no inherited `ROULETTE_*` variables.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_wrapped(&[], args, env)
    }

    /// Like `start_with_env`, but run the binary through a wrapper command that execs it
    /// (e.g. `["prlimit", "--nofile=200:200", "--"]`), so `pid()` is still the server's.
    /// An empty `wrapper` starts the binary directly.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(env!("CARGO_BIN_EXE_roulette")),
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(env!("CARGO_BIN_EXE_roulette"));
                c
            }
        };
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
        cmd.args(args);
        clean_env(&mut cmd);
        cmd.env("RUST_LOG", "info");
        // Every test client comes from loopback: the per-address limits are off unless a test
        // turns them on (with the flags, which win over these variables).
        cmd.env("ROULETTE_MAX_CONNECTIONS_PER_IP", "0");
        cmd.env("ROULETTE_HANDSHAKE_RATE_PER_IP", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_test(&mut cmd);
        let mut child = cmd.spawn().expect("spawn the roulette binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<(SocketAddr, SocketAddr)>();
        let log2 = log.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut metrics: Option<SocketAddr> = None;
            let mut sent = false;
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if let Some(a) = token_after(&text, "metrics listening on ") {
                    metrics = a.parse().ok();
                }
                if !sent {
                    if let Some(a) = token_after(&text, "roulette listening on ") {
                        if let (Ok(a), Some(m)) = (a.parse(), metrics) {
                            let _ = tx.send((a, m));
                            sent = true;
                        }
                    }
                }
                log2.lock().unwrap().push(text);
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: "127.0.0.1:1".parse().unwrap(),
            metrics_addr: "127.0.0.1:1".parse().unwrap(),
            args: args.iter().map(|s| s.to_string()).collect(),
            log,
            reader: Some(reader),
            exit: None,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((a, m)) => {
                server.addr = a;
                server.metrics_addr = m;
            }
            Err(_) => panic!(
                "the server did not log `roulette listening on ADDR` (args {:?}); log:\n{}",
                args,
                server.log_text()
            ),
        }
        server
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("child")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on our own child.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Wait for the process to exit; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exit {
            return Some(s);
        }
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("child");
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.exit = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Panics if the process has exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("child");
        if let Some(s) = child.try_wait().expect("try_wait") {
            panic!(
                "the server exited unexpectedly ({s}); log:\n{}",
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn log_contains(&self, s: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(s))
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// One scrape of the metrics endpoint: the value of an unlabelled sample.
    pub fn metric(&self, name: &str) -> Option<f64> {
        get(self.metrics_addr, "/metrics")
            .body_str()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Wait until the unlabelled sample `name` is `want`.
    pub fn wait_metric(&self, name: &str, want: f64, within: Duration) {
        self.wait_metric_until(name, |v| v == want, &want.to_string(), within);
    }

    /// Wait until the unlabelled sample `name` is at least `want`.
    pub fn wait_metric_at_least(&self, name: &str, want: f64, within: Duration) {
        self.wait_metric_until(name, |v| v >= want, &format!("at least {want}"), within);
    }

    fn wait_metric_until(
        &self,
        name: &str,
        ok: impl Fn(f64) -> bool,
        expected: &str,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.metric(name);
            if got.is_some_and(&ok) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {got:?}, expected {expected} within {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The binary sees only what the test gives it: no inherited `ROULETTE_*` settings, and no
/// `JOURNAL_STREAM` (which would switch its log format).
pub fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ROULETTE_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("JOURNAL_STREAM");
}

/// If the test process dies (watchdog abort), the child goes with it.
pub fn die_with_test(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Kill and reap the child, if there still is one.
pub fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn token_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let i = line.find(marker)?;
    line[i + marker.len()..].split_whitespace().next()
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let log = self.log_text();
        if std::thread::panicking() {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "---- server log (args {:?}), last {} lines ----\n{}",
                self.args,
                tail.len(),
                tail.join("\n")
            );
        } else if log.contains("panicked at") {
            panic!(
                "the server panicked during the test (args {:?}); log:\n{log}",
                self.args
            );
        }
    }
}

/// Run `f` once against a server started with `--shards 1`, then once with `--shards 2`
/// (with two shards the acceptor alternates, so consecutive clients land on different loops).
pub fn for_each_shards(args: &[&str], f: impl Fn(&mut Server)) {
    for n in ["1", "2"] {
        let mut all = vec!["--shards", n];
        all.extend_from_slice(args);
        let mut server = Server::start(&all);
        eprintln!("-- scenario with --shards {n}");
        f(&mut server);
        server.assert_running();
    }
}
