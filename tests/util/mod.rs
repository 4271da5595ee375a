//! Shared helpers for the integration tests: start the real binary on port 0, an independent
//! WebSocket client (tungstenite), a raw frame-level client for protocol violations, raw
//! HTTP exchanges, and a watchdog per test.
//!
//! Every read has a deadline; nothing sleeps to synchronise except where the protocol itself
//! is about time (interest wait, idle ping, rate limit, grace period).
#![allow(dead_code)]

use serde_json::Value;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// Deadline for anything that should happen "at once".
pub const SOON: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

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
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ROULETTE_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env_remove("JOURNAL_STREAM");
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // If the test process dies (watchdog abort), take the server with it.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
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
}

fn token_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let i = line.find(marker)?;
    line[i + marker.len()..].split_whitespace().next()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

// ---------------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Comma-separated tokens of a header, lower-cased.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
            .filter(|t| !t.is_empty())
            .collect()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Read up to `\r\n\r\n`; returns the head and whatever was read after it.
pub fn read_head(s: &mut TcpStream, within: Duration) -> Result<(String, Vec<u8>), String> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            return Ok((head, buf[i + 4..].to_vec()));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no complete response head within {within:?}; got {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        s.set_read_timeout(Some(deadline - now)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "EOF before the end of the response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                return Err(format!(
                    "read error before the end of the head: {e}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
    }
}

pub fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    assert!(
        version == "HTTP/1.1" || version == "HTTP/1.0",
        "bad status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let (k, v) = l
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {l:?}"));
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// Read until EOF (the server closes after a non-101 response).
pub fn read_to_eof(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "connection still open after {within:?}; read {} bytes",
                buf.len()
            ));
        }
        s.set_read_timeout(Some(deadline - now)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                return Err(format!(
                    "{e} after {} bytes: {:?}",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
    }
}

/// Send `request` on a new connection and read a complete non-101 response followed by EOF.
/// Checks the PROTOCOL.md rules every non-101 response follows: `Content-Length` (and a body
/// of exactly that length unless `head_only`), `Connection: close`, then a clean close.
pub fn http_exchange(addr: SocketAddr, request: &[u8], head_only: bool) -> HttpResponse {
    let mut s = tcp(addr);
    s.write_all(request).expect("write request");
    http_read_response(&mut s, head_only)
}

pub fn http_read_response(s: &mut TcpStream, head_only: bool) -> HttpResponse {
    let raw = read_to_eof(s, SOON).unwrap_or_else(|e| panic!("reading the response: {e}"));
    let i = find(&raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..i + 4]).into_owned();
    let body = raw[i + 4..].to_vec();
    let (status, headers) = parse_head(&head);
    let resp = HttpResponse {
        status,
        head,
        headers,
        body,
    };
    assert_ne!(status, 101, "unexpected upgrade");
    let cl: usize = resp
        .header("content-length")
        .unwrap_or_else(|| panic!("no Content-Length in {:?}", resp.head))
        .parse()
        .expect("numeric Content-Length");
    if head_only || status == 304 {
        assert!(
            resp.body.is_empty(),
            "no body expected, got {:?}",
            resp.body_str()
        );
    } else {
        assert_eq!(
            resp.body.len(),
            cl,
            "body length differs from Content-Length in {:?}",
            resp.head
        );
    }
    assert!(
        resp.header_tokens("connection")
            .contains(&"close".to_string()),
        "no `Connection: close` in {:?}",
        resp.head
    );
    resp
}

pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    http_exchange(addr, req.as_bytes(), false)
}

/// An upgrade request head with the RFC 6455 sample key, plus `extra` header lines (each
/// ending in `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The accept value for the RFC 6455 sample key (RFC 6455 §1.3).
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket frames
// ---------------------------------------------------------------------------------------------

pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encode one frame. `rsv` holds the three reserved bits (0..=7); `mask` None = unmasked.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame.
pub fn cframe(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, Some(MASK))
}

/// A masked client text message in one frame.
pub fn ctext(s: &str) -> Vec<u8> {
    cframe(true, OP_TEXT, s.as_bytes())
}

/// A masked client close frame with a code and reason.
pub fn cclose(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    cframe(true, OP_CLOSE, &p)
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

#[derive(Debug)]
pub enum End {
    Timeout,
    Eof,
    Error(io::Error),
}

/// A hand-driven WebSocket client: exact bytes out, frames in (checked to be well formed
/// server frames: unmasked, no reserved bits, control frames final and ≤ 125 bytes).
pub struct RawWs {
    pub s: TcpStream,
    buf: Vec<u8>,
    /// A fragmented data message being reassembled (control frames may come in between).
    partial: Option<(u8, Vec<u8>)>,
}

impl RawWs {
    pub fn connect(addr: SocketAddr, path: &str) -> RawWs {
        RawWs::connect_pipelined(addr, path, &[])
    }

    /// Send the upgrade request and `extra` bytes in one write, then expect a 101.
    pub fn connect_pipelined(addr: SocketAddr, path: &str, extra: &[u8]) -> RawWs {
        let mut req = upgrade_request(path, "").into_bytes();
        req.extend_from_slice(extra);
        RawWs::upgrade_with(addr, &req)
    }

    /// Send exactly `request` (a hand-written upgrade using the RFC sample key, possibly
    /// followed by frames), then expect a 101 with the sample accept value.
    pub fn upgrade_with(addr: SocketAddr, request: &[u8]) -> RawWs {
        let mut s = tcp(addr);
        s.write_all(request).expect("write upgrade");
        let (head, rest) = read_head(&mut s, SOON).unwrap_or_else(|e| panic!("upgrade: {e}"));
        check_101(&head, SAMPLE_ACCEPT);
        RawWs {
            s,
            buf: rest,
            partial: None,
        }
    }

    /// Wrap a socket whose 101 was already read; `buffered` holds bytes read after it.
    pub fn from_parts(s: TcpStream, buffered: Vec<u8>) -> RawWs {
        RawWs {
            s,
            buf: buffered,
            partial: None,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to server");
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        let now = Instant::now();
        if now >= deadline {
            return Err(End::Timeout);
        }
        self.s.set_read_timeout(Some(deadline - now)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => Err(End::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if is_timeout(&e) => Ok(()),
            Err(e) => Err(End::Error(e)),
        }
    }

    /// One frame from the server.
    pub fn read_frame(&mut self, within: Duration) -> Result<Frame, End> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((f, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(f);
            }
            self.fill(deadline)?;
        }
    }

    /// The next data message (fragments reassembled) or control frame. Returns
    /// `(opcode, payload)` where a reassembled message carries its first frame's opcode.
    pub fn read_message(&mut self, within: Duration) -> Result<(u8, Vec<u8>), End> {
        let deadline = Instant::now() + within;
        loop {
            let now = Instant::now();
            let f = self.read_frame(deadline.saturating_duration_since(now))?;
            if f.opcode >= 8 {
                return Ok((f.opcode, f.payload));
            }
            match (self.partial.as_mut(), f.opcode) {
                (None, OP_TEXT | OP_BINARY) => {
                    if f.fin {
                        return Ok((f.opcode, f.payload));
                    }
                    self.partial = Some((f.opcode, f.payload));
                }
                (Some((_, data)), OP_CONT) => {
                    data.extend_from_slice(&f.payload);
                    if f.fin {
                        return Ok(self.partial.take().expect("partial"));
                    }
                }
                (partial, op) => panic!(
                    "server sent a badly fragmented message: opcode {op} while partial={}",
                    partial.is_some()
                ),
            }
        }
    }

    /// Read until a close frame: returns its code (None for an empty close payload). Data and
    /// ping/pong frames before it are skipped. The close payload is checked (RFC 6455 §5.5.1).
    pub fn read_close(&mut self, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        loop {
            match self.read_frame(deadline.saturating_duration_since(Instant::now())) {
                Ok(f) if f.opcode == OP_CLOSE => {
                    assert!(f.payload.len() != 1, "close payload of one byte");
                    assert!(
                        std::str::from_utf8(f.payload.get(2..).unwrap_or(&[])).is_ok(),
                        "close reason is not UTF-8"
                    );
                    return f.close_code();
                }
                Ok(_) => {}
                Err(e) => panic!("expected a close frame, got {e:?}"),
            }
        }
    }

    /// Expect a close frame with `code` (skipping other frames), answer it like a good client,
    /// then expect the server to close the TCP connection.
    pub fn expect_close(&mut self, code: u16) {
        let got = self.read_close(SOON);
        assert_eq!(got, Some(code), "close code");
        let _ = self.try_send(&cclose(code, ""));
        self.expect_tcp_closed(SOON);
    }

    /// Expect EOF (or a reset) within `within`, discarding any frames that still arrive
    /// except that a data frame after our close would be a bug we do not check here.
    pub fn expect_tcp_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.buf.clear();
            match self.fill(deadline) {
                Ok(()) => {}
                Err(End::Eof) | Err(End::Error(_)) => return,
                Err(End::Timeout) => {
                    panic!("the server did not close the TCP connection within {within:?}")
                }
            }
        }
    }

    /// No frame at all within `within`.
    pub fn expect_no_frame(&mut self, within: Duration) {
        match self.read_frame(within) {
            Err(End::Timeout) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }
}

pub fn check_101(head: &str, accept: &str) {
    let (status, headers) = parse_head(head);
    assert_eq!(status, 101, "expected 101, got {head:?}");
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert!(
        h("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "Upgrade header in {head:?}"
    );
    assert!(
        h("connection").is_some_and(|v| v
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))),
        "Connection header in {head:?}"
    );
    assert_eq!(
        h("sec-websocket-accept").as_deref(),
        Some(accept),
        "Sec-WebSocket-Accept in {head:?}"
    );
}

/// Parse one server frame from `buf`; `None` if incomplete. Panics on frames a server must
/// not send.
pub fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 7;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    assert!(!masked, "server frame is masked (RFC 6455 §5.1)");
    assert_eq!(rsv, 0, "server frame has reserved bits set");
    assert!(
        matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10),
        "server frame with opcode {opcode}"
    );
    let (len, hdr) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if opcode >= 8 {
        assert!(fin && len <= 125, "bad server control frame");
    }
    if buf.len() < hdr + len {
        return None;
    }
    Some((
        Frame {
            fin,
            rsv,
            opcode,
            payload: buf[hdr..hdr + len].to_vec(),
        },
        hdr + len,
    ))
}

// ---------------------------------------------------------------------------------------------
// tungstenite client
// ---------------------------------------------------------------------------------------------

pub enum Recv {
    Msg(Message),
    Timeout,
    Closed(String),
}

pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

pub fn try_ws_connect(addr: SocketAddr, path: &str) -> Result<Client, String> {
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    match tungstenite::client::client(format!("ws://{addr}{path}"), s) {
        Ok((ws, _resp)) => Ok(Client { ws }),
        Err(e) => Err(e.to_string()),
    }
}

pub fn ws_connect(addr: SocketAddr, path: &str) -> Client {
    try_ws_connect(addr, path).unwrap_or_else(|e| panic!("WebSocket connect to {path}: {e}"))
}

/// A chat client on `/ws` whose `hello` has been read.
pub fn chat(addr: SocketAddr) -> Client {
    let mut c = ws_connect(addr, "/ws");
    c.hello();
    c
}

/// Two chat clients paired with each other (no interests).
pub fn pair(addr: SocketAddr) -> (Client, Client) {
    let mut a = chat(addr);
    let mut b = chat(addr);
    a.send_text(r#"{"type":"find"}"#);
    a.expect_json(r#"{"type":"waiting"}"#);
    b.send_text(r#"{"type":"find"}"#);
    assert_eq!(b.expect_paired(), Vec::<String>::new());
    assert_eq!(a.expect_paired(), Vec::<String>::new());
    (a, b)
}

pub fn find_msg(interests: &[&str]) -> String {
    serde_json::json!({"type":"find","interests":interests}).to_string()
}

pub fn msg(text: &str) -> String {
    serde_json::json!({"type":"message","text":text}).to_string()
}

impl Client {
    pub fn send(&mut self, m: Message) {
        self.ws.send(m).expect("send");
    }

    pub fn send_text(&mut self, s: &str) {
        self.send(Message::text(s.to_string()));
    }

    /// The next message (any kind) within `within`.
    pub fn recv(&mut self, within: Duration) -> Recv {
        let deadline = Instant::now() + within;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Recv::Timeout;
            }
            self.ws
                .get_ref()
                .set_read_timeout(Some(deadline - now))
                .unwrap();
            match self.ws.read() {
                Ok(m) => return Recv::Msg(m),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                Err(e) => return Recv::Closed(e.to_string()),
            }
        }
    }

    /// The next text message, parsed as a JSON object (ping/pong skipped).
    pub fn next_json(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Msg(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent invalid JSON {t:?}: {e}"));
                    assert!(v.is_object(), "server message is not an object: {t}");
                    assert!(
                        v["type"].is_string(),
                        "server message without a string type: {t}"
                    );
                    return v;
                }
                Recv::Msg(Message::Ping(_)) | Recv::Msg(Message::Pong(_)) => {}
                Recv::Msg(m) => panic!("expected a text message, got {m:?}"),
                Recv::Timeout => panic!("no message within {within:?}"),
                Recv::Closed(e) => panic!("connection closed while waiting for a message: {e}"),
            }
        }
    }

    /// The next message must equal `expected` (a JSON text), compared as JSON values.
    pub fn expect_json(&mut self, expected: &str) -> Value {
        let want: Value = serde_json::from_str(expected).expect("expected JSON");
        let got = self.next_json(SOON);
        assert_eq!(got, want, "server message");
        got
    }

    pub fn expect_type(&mut self, ty: &str) -> Value {
        let got = self.next_json(SOON);
        assert_eq!(got["type"], ty, "expected a `{ty}` message, got {got}");
        got
    }

    /// `{"type":"error","code":CODE,"message":<non-empty sentence>}`.
    pub fn expect_error(&mut self, code: &str) {
        let got = self.next_json(SOON);
        assert_eq!(got["type"], "error", "expected error {code}, got {got}");
        assert_eq!(got["code"], code, "error code, got {got}");
        assert!(
            got["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty()),
            "error without a message sentence: {got}"
        );
    }

    /// Like `expect_error`, naming the offending input in the failure message.
    pub fn expect_error_for(&mut self, code: &str, what: &str) {
        let got = self.next_json(SOON);
        assert!(
            got["type"] == "error" && got["code"] == code,
            "for {what:?} expected error {code}, got {got}"
        );
        assert!(
            got["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty()),
            "error without a message: {got}"
        );
    }

    /// Reads `hello`, returns `online`.
    pub fn hello(&mut self) -> u64 {
        let v = self.expect_type("hello");
        v["online"]
            .as_u64()
            .unwrap_or_else(|| panic!("hello.online is not a count: {v}"))
    }

    /// `paired`, optionally preceded by one `waiting`; returns `common`.
    pub fn expect_paired(&mut self) -> Vec<String> {
        self.expect_paired_within(SOON)
    }

    pub fn expect_paired_within(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut v = self.next_json(within);
        if v["type"] == "waiting" {
            v = self.next_json(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
        }
        assert_eq!(v["type"], "paired", "expected paired, got {v}");
        let common = v["common"]
            .as_array()
            .unwrap_or_else(|| panic!("paired.common is not a list: {v}"));
        common
            .iter()
            .map(|c| c.as_str().expect("common tag is a string").to_string())
            .collect()
    }

    /// No text/binary message within `within` (time-based by nature: used only where the
    /// protocol is about time or to show that something did not happen).
    pub fn expect_quiet(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Timeout => return,
                Recv::Msg(Message::Ping(_)) | Recv::Msg(Message::Pong(_)) => {}
                Recv::Msg(m) => panic!("expected no message, got {m:?}"),
                Recv::Closed(e) => panic!("connection closed: {e}"),
            }
        }
    }

    /// Show that the server sent nothing since the last expected message: send a message the
    /// server must reject and check that the very next message is that rejection.
    pub fn expect_no_reply(&mut self) {
        self.send_text(r#"{"type":"probe-unknown"}"#);
        self.expect_error("unknown_type");
    }

    /// Expect a close frame with `code` (skipping other messages), then the end of the
    /// connection.
    pub fn expect_close(&mut self, code: u16) {
        let deadline = Instant::now() + SOON;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Msg(Message::Close(Some(f))) => {
                    assert_eq!(
                        u16::from(f.code),
                        code,
                        "close code (reason {:?})",
                        f.reason.as_str()
                    );
                    break;
                }
                Recv::Msg(Message::Close(None)) => panic!("close without a code, expected {code}"),
                Recv::Msg(_) => {}
                Recv::Timeout => panic!("no close {code} within {SOON:?}"),
                Recv::Closed(e) => {
                    panic!("connection ended without a close frame (expected {code}): {e}")
                }
            }
        }
        self.expect_end();
    }

    /// Start the close handshake ourselves: the server answers with a close frame and then
    /// closes the connection.
    pub fn close_and_end(&mut self) {
        self.ws.close(None).expect("send close");
        let deadline = Instant::now() + SOON;
        let mut replied = false;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Msg(Message::Close(f)) => {
                    let code = f.as_ref().map(|f| u16::from(f.code));
                    assert!(code.is_none() || code == Some(1000), "close reply {f:?}");
                    replied = true;
                }
                Recv::Msg(_) => {}
                Recv::Closed(e) => {
                    assert!(replied, "the connection ended without a close reply: {e}");
                    return;
                }
                Recv::Timeout => panic!("no end of the connection within {SOON:?} after our close"),
            }
        }
    }

    /// After a close frame: our reply goes out and the server closes the connection.
    pub fn expect_end(&mut self) {
        match self.recv(SOON) {
            Recv::Closed(_) => {}
            Recv::Timeout => {
                panic!("the connection was not closed within {SOON:?} after the close frame")
            }
            Recv::Msg(m) => panic!("message after close: {m:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection: the server process seen from /proc, abrupt resets, source addresses, and
// an unrelated pair that keeps chatting while a fault is going on
// ---------------------------------------------------------------------------------------------

/// Open file descriptors of process `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
        .count()
}

/// What the open descriptors of `pid` are, by kind (`socket`, `anon_inode:[eventpoll]`, …):
/// for failure messages.
pub fn fd_summary(pid: i32) -> String {
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            let target = std::fs::read_link(e.path())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into());
            let kind = match target.split_once(":[") {
                Some((k, _)) if k != "anon_inode" => k.to_string(),
                _ => target,
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    format!("{kinds:?}")
}

/// Wait until process `pid` has exactly `want` open descriptors; returns how long it took.
pub fn wait_fd_count(pid: i32, want: usize, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let n = fd_count(pid);
        if n == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= within {
            return Err(format!(
                "the server has {n} open fds after {within:?}, expected {want}: {}",
                fd_summary(pid)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, `VmPeak`, `VmSize`), in KiB.
pub fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Set `SO_LINGER {on, 0}`: closing the socket then sends a TCP reset instead of a FIN.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt(SO_LINGER): {}",
        io::Error::last_os_error()
    );
}

/// Abort the connection: `SO_LINGER 0`, then close (the peer gets a RST, not a FIN).
pub fn reset(s: TcpStream) {
    set_linger_zero(&s);
    drop(s);
}

/// Connect to `dst` from the source address `src` (any 127.0.0.0/8 address works on
/// loopback without setup), so that many connections do not exhaust one address's ports.
/// The port is chosen at connect time (`IP_BIND_ADDRESS_NO_PORT`), as for a plain connect.
pub fn connect_from(src: std::net::Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    use std::os::unix::io::FromRawFd;
    let SocketAddr::V4(dst) = dst else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 only"));
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a descriptor we own; the TcpStream takes ownership
    // of it (and closes it on every error path via drop).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let local = sin(src, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sin(*dst.ip(), dst.port());
        loop {
            if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(s)
    }
}

/// What an unrelated pair saw while a fault was going on (see [`Chatter`]).
#[derive(Debug, Default)]
pub struct ChatReport {
    /// Messages sent by a (index 0) and by b (index 1).
    pub sent: [u32; 2],
    /// The sequence numbers a received (from b) and b received (from a), in arrival order.
    pub got: [Vec<u32>; 2],
    /// The longest time from sending a message to its arrival at the partner.
    pub max_latency: Duration,
    /// Anything unexpected (a message from elsewhere, an error reply, a close).
    pub errors: Vec<String>,
    /// How long the pair chatted.
    pub ran_for: Duration,
}

impl ChatReport {
    /// Each side received exactly the other's sequence 0..sent, in order, and nothing else.
    pub fn assert_complete(&self, what: &str) {
        assert!(
            self.errors.is_empty(),
            "{what}: the unrelated pair was disturbed: {:?} ({})",
            self.errors,
            self.summary()
        );
        for (side, other) in [(0, 1), (1, 0)] {
            let want: Vec<u32> = (0..self.sent[other]).collect();
            if self.got[side] != want {
                let first_bad = self.got[side]
                    .iter()
                    .zip(&want)
                    .position(|(g, w)| g != w)
                    .unwrap_or(self.got[side].len().min(want.len()));
                panic!(
                    "{what}: the unrelated pair's {} received {} messages, expected exactly \
                     0..{} in order (first difference at index {first_bad}) ({})",
                    ["a", "b"][side],
                    self.got[side].len(),
                    self.sent[other],
                    self.summary()
                );
            }
        }
        assert!(
            self.sent[0] > 0 && self.sent[1] > 0,
            "{what}: the pair sent nothing"
        );
    }

    pub fn summary(&self) -> String {
        format!(
            "sent {:?}, received [{}, {}] over {:?}, max latency {:?}",
            self.sent,
            self.got[0].len(),
            self.got[1].len(),
            self.ran_for,
            self.max_latency
        )
    }
}

/// A pair of chat clients, paired with each other on a tag no other test client uses, that
/// exchange numbered messages in both directions every `interval` on a thread of their own
/// until stopped. Then every message sent must have arrived, in order: the pair was not
/// affected by whatever the test did meanwhile.
pub struct Chatter {
    stop: Arc<AtomicBool>,
    delivered: Arc<[std::sync::atomic::AtomicU32; 2]>,
    handle: Option<JoinHandle<(ChatReport, [Client; 2])>>,
}

pub const CHATTER_TAG: &str = "unrelated-pair";

impl Chatter {
    pub fn start(addr: SocketAddr, interval: Duration) -> Chatter {
        let mut a = chat(addr);
        let mut b = chat(addr);
        a.send_text(&find_msg(&[CHATTER_TAG]));
        a.expect_json(r#"{"type":"waiting"}"#);
        b.send_text(&find_msg(&[CHATTER_TAG]));
        assert_eq!(b.expect_paired(), vec![CHATTER_TAG.to_string()]);
        assert_eq!(a.expect_paired(), vec![CHATTER_TAG.to_string()]);
        let stop = Arc::new(AtomicBool::new(false));
        let delivered: Arc<[std::sync::atomic::AtomicU32; 2]> = Arc::new(Default::default());
        let (stop2, delivered2) = (stop.clone(), delivered.clone());
        let handle = std::thread::Builder::new()
            .name("chatter".into())
            .spawn(move || chatter_loop([a, b], interval, &stop2, &delivered2))
            .expect("spawn the chatter");
        Chatter {
            stop,
            delivered,
            handle: Some(handle),
        }
    }

    /// Messages delivered so far (to a, to b).
    pub fn delivered(&self) -> [u32; 2] {
        [
            self.delivered[0].load(Ordering::SeqCst),
            self.delivered[1].load(Ordering::SeqCst),
        ]
    }

    /// Wait until both sides received at least `n` more messages than now (the pair is
    /// chatting at this moment), or panic after `within`.
    pub fn expect_progress(&self, n: u32, within: Duration) {
        let before = self.delivered();
        let deadline = Instant::now() + within;
        loop {
            let now = self.delivered();
            if now[0] >= before[0] + n && now[1] >= before[1] + n {
                return;
            }
            assert!(
                !self.handle.as_ref().is_some_and(|h| h.is_finished()),
                "the unrelated pair stopped chatting (delivered {before:?} → {now:?}); its \
                 report, from `stop`, says why"
            );
            assert!(
                Instant::now() < deadline,
                "the unrelated pair made too little progress: delivered {before:?} → {now:?} \
                 in {within:?}, expected {n} more each"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop sending, wait (up to 10 s) for what is in flight, and return the report and the
    /// two clients (still connected unless something went wrong).
    pub fn stop_keep(mut self) -> (ChatReport, [Client; 2]) {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().expect("chatter thread").join() {
            Ok(r) => r,
            Err(_) => panic!("the chatter thread panicked"),
        }
    }

    /// Like `stop_keep`, and disconnect the pair.
    pub fn stop(self) -> ChatReport {
        self.stop_keep().0
    }
}

impl Drop for Chatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn chatter_loop(
    mut c: [Client; 2],
    interval: Duration,
    stop: &AtomicBool,
    delivered: &[std::sync::atomic::AtomicU32; 2],
) -> (ChatReport, [Client; 2]) {
    const NAMES: [&str; 2] = ["a", "b"];
    const DRAIN: Duration = Duration::from_secs(10);
    let start = Instant::now();
    let mut rep = ChatReport::default();
    let mut sent_at: [Vec<Instant>; 2] = Default::default();
    let mut next_send = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    'run: loop {
        let now = Instant::now();
        if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
            stopped_at = Some(now);
        }
        if stopped_at.is_none() && now >= next_send {
            for side in 0..2 {
                let text = format!("{}:{}", NAMES[side], rep.sent[side]);
                if let Err(e) = c[side].ws.send(Message::text(msg(&text))) {
                    rep.errors
                        .push(format!("{} could not send {text:?}: {e}", NAMES[side]));
                    break 'run;
                }
                sent_at[side].push(Instant::now());
                rep.sent[side] += 1;
            }
            // Paced, never bursting to catch up after a stall (the rate limit is on).
            next_send = (next_send + interval).max(Instant::now());
        }
        for side in 0..2 {
            let other = 1 - side;
            loop {
                match c[side].recv(Duration::from_millis(1)) {
                    Recv::Timeout => break,
                    Recv::Msg(Message::Ping(_)) | Recv::Msg(Message::Pong(_)) => {}
                    Recv::Msg(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                        let n = v["text"]
                            .as_str()
                            .and_then(|s| s.strip_prefix(NAMES[other]))
                            .and_then(|s| s.strip_prefix(':'))
                            .and_then(|s| s.parse::<u32>().ok());
                        match n {
                            Some(n) if v["type"] == "message" => {
                                if let Some(at) = sent_at[other].get(n as usize) {
                                    rep.max_latency = rep.max_latency.max(at.elapsed());
                                }
                                rep.got[side].push(n);
                                delivered[side].fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {
                                rep.errors.push(format!(
                                    "{} received {t:?} at {:?}",
                                    NAMES[side],
                                    start.elapsed()
                                ));
                                break 'run;
                            }
                        }
                    }
                    Recv::Msg(m) => {
                        rep.errors.push(format!(
                            "{} received {m:?} at {:?}",
                            NAMES[side],
                            start.elapsed()
                        ));
                        break 'run;
                    }
                    Recv::Closed(e) => {
                        rep.errors.push(format!(
                            "{}'s connection ended at {:?}: {e}",
                            NAMES[side],
                            start.elapsed()
                        ));
                        break 'run;
                    }
                }
            }
        }
        if let Some(t) = stopped_at {
            if rep.got[0].len() >= rep.sent[1] as usize && rep.got[1].len() >= rep.sent[0] as usize
            {
                break;
            }
            if t.elapsed() > DRAIN {
                rep.errors.push(format!(
                    "messages still missing {DRAIN:?} after the pair stopped sending"
                ));
                break;
            }
        }
    }
    rep.ran_for = start.elapsed();
    (rep, c)
}

// ---------------------------------------------------------------------------------------------
// A real redis-server for cluster tests
// ---------------------------------------------------------------------------------------------

/// `redis-server` on a free loopback port, persistence off, killed with the test.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let mut r = Redis { child: None, port };
        r.launch();
        r
    }

    pub fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; if the test dies, Redis goes with it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): scripts/test.sh installs it (apt-get install redis-server)")
        });
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
        let nodes = (1..=n)
            .map(|i| {
                let name = format!("n{i}");
                let mut args = vec![
                    "--shards",
                    "2",
                    "--rate-limit-per-sec",
                    "0",
                    "--cluster",
                    &url,
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
