//! 2,000 chat clients over two shards (and again over three cluster nodes), no rate limit: everyone finds a stranger, each sends
//! 200 numbered messages at once, and every client must receive exactly its partner's
//! sequence 0..199 in order and nothing from anyone else (PROTOCOL.md "Delivery"). Then one
//! side of each pair ends the chat (leave, close handshake, or a dropped TCP connection) and
//! the other must get `partner_left` after the last message.
//!
//! So that the test client is not the bottleneck (the test profile is unoptimised), the
//! clients are plain non-blocking sockets with pre-encoded masked frames and the small
//! frame parser of tests/util, driven by a few threads with a `mio::Poll` each.
mod util;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::*;

const CLIENTS: usize = 2000;
const MSGS: u32 = 200;
const THREADS: usize = 4;
/// A hang guard, not a speed requirement (speed is measured in BENCHMARKS.md).
const TIME_LIMIT: Duration = Duration::from_secs(240);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum St {
    /// Waiting for `hello`.
    Hello,
    /// `find` sent; `waiting` (at most once) then `paired` expected.
    Finding,
    /// Sending and receiving the numbered messages.
    Chatting,
    /// Leader: `leave` queued, waiting for it to be written.
    Leaving,
    /// Leader: close frame queued, waiting for the server's close and the end of the
    /// connection.
    Closing,
    /// Leader: waiting for our output to be written, then the socket is shut down.
    Dropping,
    /// Follower: all messages received, `partner_left` expected.
    AwaitLeft,
    Done,
}

struct Sc {
    id: usize,
    sock: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    st: St,
    saw_waiting: bool,
    got_close: bool,
    partner: Option<usize>,
    got: u32,
    open: bool,
    /// Pair by a tag shared with client `id ^ 1` (which a test puts on another node).
    tagged: bool,
}

fn connect(addr: SocketAddr, id: usize, start: Instant) -> Result<(TcpStream, Vec<u8>), String> {
    let fail = |e: String| format!("client {id}: upgrade at {:?}: {e}", start.elapsed());
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| fail(e.to_string()))?;
    s.set_nodelay(true).unwrap();
    s.write_all(upgrade_request("/ws", "").as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    // Generous: on a loaded machine 2,000 handshakes queue behind each other. The server is
    // started with the same handshake timeout, so neither side gives up first.
    let (head, rest) = read_head(&mut s, HANDSHAKE).map_err(fail)?;
    check_101(&head, SAMPLE_ACCEPT);
    s.set_nonblocking(true).unwrap();
    Ok((TcpStream::from_std(s), rest))
}

const MESSAGE_PREFIX: &str = r#"{"type":"message","text":""#;

/// The text of a relayed `message` (fast path for the expected form, JSON parser otherwise).
fn message_text(json: &str) -> Option<String> {
    if let Some(t) = json
        .strip_prefix(MESSAGE_PREFIX)
        .and_then(|r| r.strip_suffix("\"}"))
    {
        if !t.contains(['"', '\\']) {
            return Some(t.to_string());
        }
    }
    let v: Value = serde_json::from_str(json).ok()?;
    if v["type"] == "message" {
        v["text"].as_str().map(str::to_string)
    } else {
        None
    }
}

impl Sc {
    fn err(&self, what: impl std::fmt::Display) -> String {
        format!(
            "client {} in {:?} (got {}, partner {:?}): {what}",
            self.id, self.st, self.got, self.partner
        )
    }

    fn tag(&self) -> String {
        format!("p{}", self.id / 2)
    }

    fn queue_text(&mut self, text: &str) {
        self.out.extend(ctext(text));
    }

    fn on_text(&mut self, text: &str, partners: &[AtomicUsize]) -> Result<(), String> {
        if self.st == St::Chatting {
            if let Some(t) = message_text(text) {
                return self.on_message(&t, partners);
            }
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| self.err(format!("bad JSON {text:?}: {e}")))?;
        match (self.st, v["type"].as_str().unwrap_or("")) {
            (St::Hello, "hello") => {
                if self.tagged {
                    let find = format!(r#"{{"type":"find","interests":["{}"]}}"#, self.tag());
                    self.queue_text(&find);
                } else {
                    self.queue_text(r#"{"type":"find"}"#);
                }
                self.st = St::Finding;
            }
            (St::Finding, "waiting") if !self.saw_waiting => self.saw_waiting = true,
            (St::Finding, "paired") => {
                let want = if self.tagged {
                    serde_json::json!([self.tag()])
                } else {
                    serde_json::json!([])
                };
                if v["common"] != want {
                    return Err(self.err(format!("paired with {v}")));
                }
                self.st = St::Chatting;
                for n in 0..MSGS {
                    let m = format!(r#"{{"type":"message","text":"{}:{n}"}}"#, self.id);
                    self.queue_text(&m);
                }
            }
            (St::AwaitLeft, "partner_left") => self.st = St::Done,
            _ => return Err(self.err(format!("unexpected {text}"))),
        }
        Ok(())
    }

    fn on_message(&mut self, t: &str, partners: &[AtomicUsize]) -> Result<(), String> {
        let (pid, n) = t
            .split_once(':')
            .and_then(|(p, n)| Some((p.parse::<usize>().ok()?, n.parse::<u32>().ok()?)))
            .ok_or_else(|| self.err(format!("unexpected text {t:?}")))?;
        match self.partner {
            None => {
                if pid == self.id || pid >= CLIENTS {
                    return Err(self.err(format!("message from {pid}")));
                }
                self.partner = Some(pid);
                partners[self.id].store(pid + 1, Ordering::SeqCst);
            }
            Some(p) if p != pid => {
                return Err(self.err(format!("message {t:?} from {pid}, but the partner is {p}")))
            }
            Some(_) => {}
        }
        if n != self.got {
            return Err(self.err(format!("got {pid}:{n}, expected {pid}:{}", self.got)));
        }
        self.got += 1;
        if self.got == MSGS {
            if self.id < pid {
                // Leader: end the chat one of three ways.
                match self.id % 3 {
                    0 => {
                        self.queue_text(r#"{"type":"leave"}"#);
                        self.st = St::Leaving;
                    }
                    1 => {
                        self.out.extend(cclose(1000, ""));
                        self.st = St::Closing;
                    }
                    _ => self.st = St::Dropping,
                }
            } else {
                self.st = St::AwaitLeft;
            }
        }
        Ok(())
    }

    /// Read everything available, act on it, write what is queued.
    fn pump(&mut self, partners: &[AtomicUsize], poll: &Poll) -> Result<(), String> {
        let mut chunk = [0u8; 32 * 1024];
        let mut eof = false;
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // After the close handshake the server may reset instead of FIN.
                Err(_) if self.st == St::Closing && self.got_close => {
                    eof = true;
                    break;
                }
                Err(e) => return Err(self.err(format!("read: {e}"))),
            }
        }
        let mut used = 0;
        while let Some((f, n)) = parse_server_frame(&self.inbuf[used..]) {
            used += n;
            match f.opcode {
                OP_TEXT if f.fin && !self.got_close => {
                    let text = std::str::from_utf8(&f.payload).map_err(|e| self.err(e))?;
                    self.on_text(text, partners)?;
                }
                OP_CLOSE if self.st == St::Closing => {
                    if f.close_code().is_some_and(|c| c != 1000) {
                        return Err(self.err(format!("close reply {:?}", f.close_code())));
                    }
                    self.got_close = true;
                }
                OP_PING => self.out.extend(cframe(true, OP_PONG, &f.payload)),
                _ => return Err(self.err(format!("unexpected frame {f:?}"))),
            }
        }
        self.inbuf.drain(..used);
        if eof {
            if self.st == St::Closing && self.got_close {
                self.st = St::Done;
                self.open = false;
                return Ok(());
            }
            return Err(self.err("the server closed the connection"));
        }
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(format!("write: {e}"))),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            match self.st {
                St::Leaving => self.st = St::Done,
                St::Dropping => {
                    let _ = poll.registry().deregister(&mut self.sock);
                    let _ = self.sock.shutdown(std::net::Shutdown::Both);
                    self.open = false;
                    self.st = St::Done;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn drive(
    addrs: Arc<Vec<SocketAddr>>,
    tagged: bool,
    ids: Vec<usize>,
    partners: Arc<Vec<AtomicUsize>>,
    start: Instant,
) -> Result<Vec<Sc>, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut clients = Vec::with_capacity(ids.len());
    for (k, id) in ids.into_iter().enumerate() {
        // Client `id` connects to node `id % nodes`: with several nodes, most pairs cross.
        let addr = addrs[id % addrs.len()];
        let (mut sock, rest) = connect(addr, id, start)?;
        poll.registry()
            .register(&mut sock, Token(k), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        clients.push(Sc {
            id,
            sock,
            inbuf: rest,
            out: Vec::new(),
            out_pos: 0,
            st: St::Hello,
            saw_waiting: false,
            got_close: false,
            partner: None,
            got: 0,
            open: true,
            tagged,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut last_sweep = Instant::now() - Duration::from_secs(1);
    loop {
        let left = clients.iter().filter(|c| c.st != St::Done).count();
        if left == 0 {
            return Ok(clients);
        }
        if start.elapsed() > TIME_LIMIT {
            let mut states: Vec<String> = clients
                .iter()
                .filter(|c| c.st != St::Done)
                .take(10)
                .map(|c| format!("{}:{:?} got {} partner {:?}", c.id, c.st, c.got, c.partner))
                .collect();
            states.insert(
                0,
                format!("{left} clients of this thread not done after {TIME_LIMIT:?}"),
            );
            return Err(states.join("; "));
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        let mut todo: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        // Edge-triggered readiness: sweep everyone now and then as well (and at the start,
        // for bytes read together with the 101), so nothing waits for an edge that passed.
        if last_sweep.elapsed() >= Duration::from_millis(200) {
            todo = (0..clients.len()).collect();
            last_sweep = Instant::now();
        }
        for k in todo {
            if let Some(c) = clients.get_mut(k) {
                if c.st != St::Done {
                    c.pump(&partners, &poll)?;
                }
            }
        }
    }
}

/// How long a client waits for the 101, and the server for the request head.
const HANDSHAKE: Duration = Duration::from_secs(60);

#[test]
fn two_thousand_clients_each_get_exactly_their_partners_messages() {
    let _w = watchdog(300);
    let mut server = Server::start(&[
        "--shards",
        "2",
        "--rate-limit-per-sec",
        "0",
        "--handshake-timeout",
        "60",
    ]);
    run_stress(vec![server.addr], false);
    server.assert_running();
}

/// The same over three cluster nodes sharing one Redis (client i on node i mod 3): pairing
/// is atomic across nodes and relays cross nodes exactly once and in order. First with
/// clients 2k and 2k+1 sharing a tag (so every pair crosses nodes), then as strangers (most
/// pair on their own node; whoever finds nobody there joins the cluster queue at once).
#[test]
fn two_thousand_clients_over_three_cluster_nodes_each_get_exactly_their_partners_messages() {
    let _w = watchdog(400);
    let mut c = Cluster::start(
        3,
        &[
            "--cluster-hold",
            "0",
            "--interest-wait",
            "60",
            "--handshake-timeout",
            "60",
        ],
    );
    for tagged in [true, false] {
        run_stress(c.nodes.iter().map(|n| n.addr).collect(), tagged);
    }
    for n in c.nodes.iter_mut() {
        n.assert_running();
    }
    // Redis is left with no queue entry, interest set or avoid relation.
    let keys = c.redis.command(&["KEYS", "rl:*"]);
    for stale in ["rl:e:", "rl:t:", "rl:open", "rl:avoid:"] {
        assert!(!keys.contains(stale), "left in Redis: {keys:?}");
    }
}

fn run_stress(addrs: Vec<SocketAddr>, tagged: bool) {
    let addrs = Arc::new(addrs);
    let partners: Arc<Vec<AtomicUsize>> =
        Arc::new((0..CLIENTS).map(|_| AtomicUsize::new(0)).collect());
    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let ids: Vec<usize> = (0..CLIENTS).filter(|i| i % THREADS == t).collect();
            let partners = partners.clone();
            let addrs = addrs.clone();
            std::thread::spawn(move || drive(addrs, tagged, ids, partners, start))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(clients)) => all.extend(clients),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a client thread panicked (see above)".to_string()),
        }
    }
    let took = start.elapsed();
    eprintln!(
        "{CLIENTS} clients × {MSGS} messages over {} node(s): {took:?}",
        addrs.len()
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // Pairs are symmetric: a's partner is b exactly when b's partner is a.
    let mut crossing = 0;
    for (id, p) in partners.iter().enumerate() {
        let p = p.load(Ordering::SeqCst);
        assert!(p > 0, "client {id} never learned its partner");
        let back = partners[p - 1].load(Ordering::SeqCst);
        assert_eq!(
            back,
            id + 1,
            "client {id} talked to {} who talked to {}",
            p - 1,
            back.wrapping_sub(1)
        );
        if id % addrs.len() != (p - 1) % addrs.len() {
            crossing += 1;
        }
    }
    if addrs.len() > 1 {
        eprintln!("{} of {} pairs crossed nodes", crossing / 2, CLIENTS / 2);
    }
    if tagged {
        for (id, p) in partners.iter().enumerate() {
            assert_eq!(
                p.load(Ordering::SeqCst),
                (id ^ 1) + 1,
                "client {id}'s partner"
            );
        }
        if addrs.len() > 1 {
            assert_eq!(crossing / 2, CLIENTS / 2, "every tagged pair crosses nodes");
        }
    }
    // Nobody still connected gets anything more (nothing leaks after partner_left or leave).
    // A short observation window: this checks that something does not happen.
    std::thread::sleep(Duration::from_millis(300));
    let mut chunk = [0u8; 4096];
    for c in all.iter_mut().filter(|c| c.open) {
        match c.sock.read(&mut chunk) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok(n) => panic!(
                "client {} got {n} more bytes after its chat ended: {:?}",
                c.id,
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) => panic!("client {}: {e} after its chat ended", c.id),
        }
        assert!(c.inbuf.is_empty(), "client {} has unparsed bytes", c.id);
    }
}
