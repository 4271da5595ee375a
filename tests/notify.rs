//! systemd integration of the real binary, without systemd: the test plays the service
//! manager's side of the sd_notify protocol. It binds a Unix datagram socket, starts
//! `roulette` with `NOTIFY_SOCKET` and `WATCHDOG_USEC` pointing at it (as
//! `Type=notify` + `WatchdogSec=` in deploy/roulette.service do), and checks the
//! datagrams: `READY=1` once listening, `WATCHDOG=1` pings, `STOPPING=1` on SIGTERM,
//! then a clean exit 0; and that a second signal during the drain exits at once (130)
//! while `/healthz` answers 503.
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use util::TempDir;

/// The server under test, killed on drop if the test fails half-way.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, notify_socket: &Path, extra: &[&str]) -> Server {
        let log = dir.join("server.log");
        let stderr = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(env!("CARGO_BIN_EXE_roulette"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .env("NOTIFY_SOCKET", notify_socket)
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the roulette binary");
        Server { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The address from the "roulette listening on ADDR" log line.
    fn listen_addr(&mut self, deadline: Instant) -> SocketAddr {
        loop {
            let log = self.log();
            if let Some(addr) = log
                .lines()
                .find_map(|l| l.split("roulette listening on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return addr
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address {addr:?}: {e}"));
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "no \"listening on\" line in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("server exited early with {status}; log:\n{}", self.log());
        }
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The service manager's end of `$NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    /// Every datagram received so far, in order.
    seen: Vec<String>,
}

impl Notify {
    fn bind(path: &Path) -> Notify {
        let sock = UnixDatagram::bind(path).expect("bind notify socket");
        Notify {
            sock,
            seen: Vec::new(),
        }
    }

    /// Wait for a datagram with the line `want` (e.g. "READY=1"); returns the datagram.
    fn expect(&mut self, server: &mut Server, want: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {want} within {within:?}; datagrams so far: {:?}; log:\n{}",
                self.seen,
                server.log()
            );
            let wait = (deadline - now).min(Duration::from_millis(100));
            self.sock
                .set_read_timeout(Some(wait))
                .expect("set_read_timeout");
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    if msg.lines().any(|l| l == want) {
                        return msg;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if !want.starts_with("STOPPING") {
                        server.assert_running();
                    }
                }
                Err(e) => panic!("recv on notify socket: {e}"),
            }
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the whole response (the server
/// answers non-101 responses with `Connection: close`).
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn ready_watchdog_stopping_and_clean_exit() {
    let dir = TempDir::new("notify");
    let sock_path = dir.path("notify.sock");
    let mut notify = Notify::bind(&sock_path);
    let mut server = Server::start(dir.root(), &sock_path, &[]);

    let ready = notify.expect(&mut server, "READY=1", Duration::from_secs(20));
    // The listener is bound by the time READY=1 arrives.
    let addr = server.listen_addr(Instant::now() + Duration::from_secs(2));
    assert!(
        http_get(addr, "/healthz").starts_with("HTTP/1.1 200"),
        "healthz before drain"
    );
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=")),
        "READY=1 without STATUS=: {ready:?}"
    );

    // WATCHDOG_USEC=1 s: pings every 500 ms while every shard loop turns. Two in a row
    // shows it is periodic, not a one-off.
    notify.expect(&mut server, "WATCHDOG=1", Duration::from_secs(5));
    notify.expect(&mut server, "WATCHDOG=1", Duration::from_secs(5));

    server.signal(libc::SIGTERM);
    notify.expect(&mut server, "STOPPING=1", Duration::from_secs(5));
    // No clients: the drain ends at once, far below the 10 s grace period.
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}; log:\n{}",
        server.log()
    );
}

#[test]
fn drain_answers_503_and_second_signal_exits_at_once() {
    let dir = TempDir::new("drain");
    let sock_path = dir.path("notify.sock");
    let mut notify = Notify::bind(&sock_path);
    let mut server = Server::start(dir.root(), &sock_path, &["--grace-period", "30"]);
    notify.expect(&mut server, "READY=1", Duration::from_secs(20));
    let addr = server.listen_addr(Instant::now() + Duration::from_secs(2));

    // A WebSocket client that never answers the server's close frame keeps the drain
    // going (the server waits up to 5 s for the close reply, within the 30 s grace).
    let mut ws = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        ws,
        "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            ws.read(&mut byte).expect("read handshake"),
            1,
            "connection closed during handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");

    server.signal(libc::SIGTERM);
    notify.expect(&mut server, "STOPPING=1", Duration::from_secs(5));
    // Draining: load balancers must see the node leave.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = http_get(addr, "/healthz");
        if resp.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "healthz while draining: {resp:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.assert_running();

    // A second signal ends the process at once, without waiting for the grace period.
    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(130),
        "exit status after the second SIGTERM: {status}"
    );
    assert!(sent.elapsed() < Duration::from_secs(5));
    drop(ws);
}
