//! The client event loops: one mio `Poll` per thread driving many non-blocking clients.
//!
//! Per loop turn a thread reads every readable socket until `WouldBlock`, decodes in place
//! with the server crate's client-role decoder, reacts (answers pings, replies to messages,
//! moves the state machine), and queues output in the connection's buffer; at the end of the
//! turn each connection with output gets one `write` (batched per turn). Message frames are
//! copies of a pre-masked template with the stamp written in (see `frames.rs`).
//!
//! A thread goes through: setup (open its connections, handshake, find, pair) → ready (waits
//! for the common start instant `go`) → run (send until `stop`) → drain (end markers, closes)
//! → done. `go` and `stop` come from the orchestrator through [`Control`], in CLOCK_MONOTONIC
//! nanoseconds, so that every thread of every process starts and stops at the same instant.
use crate::frames::{
    padding_ok, parse_server, parse_stamp, parse_upgrade, Frames, Rng, ServerMsg, Stamp, Upgrade,
    STAMP_LEN,
};
use crate::stats::{Counts, ErrKind, Hists, ERR_KINDS};
use crate::sys::{now_ns, TimerFd};
use crate::targets;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use roulette::ws::{Decoder, Event};
use serde::{Deserialize, Serialize};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

const WAKER: Token = Token(usize::MAX);
const TIMER: Token = Token(usize::MAX - 1);
/// Below this, a timer deadline is waited for with a timerfd (ns precision) instead of the
/// poll timeout (which mio rounds up to whole milliseconds): open-loop sends must leave on
/// time, or the corrected latency would include up to 1 ms of our own lateness.
const FINE_TIMER_NS: u64 = 2_000_000;
/// Per-thread receive buffer.
const RBUF: usize = 64 * 1024;
/// Timer sweep period (timeouts, readiness, progress).
const SWEEP_NS: u64 = 50_000_000;
/// Longest poll sleep.
const MAX_SLEEP_NS: u64 = 100_000_000;
/// Bound on timer-driven work per turn (sends, opens), so reading is never starved.
const MAX_BURST: usize = 4096;
/// `IP_BIND_ADDRESS_NO_PORT` (linux/in.h): let `connect()` pick the port, so that the
/// 4-tuple, not the source address alone, must be unique.
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;
/// Handshake responses longer than this are refused.
const MAX_HEAD: usize = 16 * 1024;
/// Error descriptions kept per thread for the report: at most this many of each kind...
const SAMPLES_PER_KIND: usize = 2;
/// ... and this many in all.
const MAX_SAMPLES: usize = 16;

/// Which scenario the clients play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Idle,
    Relay,
    Churn,
    Echo,
    /// One step of the `pairing` sweep: churn joins, one message each way, close.
    Pairing,
}

/// What every thread of this process needs to know; built once, shared read-only.
#[derive(Debug)]
pub struct Plan {
    pub kind: Kind,
    /// One address per `--url`: client `i` (global index) connects to `targets[i % n]` with
    /// `frames.requests[i % n]`.
    pub targets: Vec<SocketAddr>,
    pub sources: Vec<IpAddr>,
    /// Connections (idle, relay, echo) or joins (churn) of each thread of this process.
    pub per_thread: Vec<usize>,
    /// Global index of this process's first connection (spreads URLs and source addresses,
    /// names pair tags).
    pub conn_offset: usize,
    /// `--pair-tags`: the run id of the tags (clients `2k` and `2k+1` send `find` with the one
    /// interest `lt<k>-<run id>`; churn joins them two at a time).
    pub pair_run: Option<String>,
    /// All connections of the run, over every process (open-loop rate share).
    pub total_connections: usize,
    pub in_flight: u32,
    /// Open loop: aggregate messages/s of the whole run.
    pub rate: Option<f64>,
    /// Churn: joins/s of each thread.
    pub join_rate_per_thread: f64,
    /// Churn: chat messages per client.
    pub messages: u32,
    pub timeout_ns: u64,
    /// Wait for `paired` after `find` (`--pair-timeout` of `pairing`, else `--timeout`).
    pub pair_timeout_ns: u64,
    /// Pairing: the measured window starts this long after `go` (the warm-up).
    pub warmup_ns: u64,
    /// Pairing: connections one thread holds at most; a join due beyond it is skipped.
    pub max_open: usize,
    pub max_connecting: usize,
    /// Setup pacing per thread (0 = unpaced).
    pub connect_interval_ns: u64,
    pub frames: Frames,
    pub max_message: usize,
}

impl Plan {
    fn chat(&self) -> bool {
        self.kind != Kind::Echo
    }
    fn closed_loop(&self) -> bool {
        self.rate.is_none()
    }
    /// Clients join on a schedule after `go` (churn, pairing) instead of during setup.
    fn joins(&self) -> bool {
        matches!(self.kind, Kind::Churn | Kind::Pairing)
    }
}

/// Live counters of one thread, read by the orchestrator for the progress line.
#[derive(Debug, Default)]
pub struct Cells {
    opened: AtomicU64,
    connected: AtomicU64,
    paired: AtomicU64,
    failed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    bad: AtomicU64,
    sessions: AtomicU64,
    live: AtomicU64,
}

/// Summed live counters (also sent by child processes to their parent).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub opened: u64,
    pub connected: u64,
    pub paired: u64,
    pub failed: u64,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    /// lost + duplicated + out of order + corrupt.
    pub bad: u64,
    pub sessions: u64,
    pub live: u64,
}

impl Progress {
    pub fn add(&mut self, o: &Progress) {
        self.opened += o.opened;
        self.connected += o.connected;
        self.paired += o.paired;
        self.failed += o.failed;
        self.sent += o.sent;
        self.received += o.received;
        self.errors += o.errors;
        self.bad += o.bad;
        self.sessions += o.sessions;
        self.live += o.live;
    }
}

/// Shared between the orchestrator and the threads of one process.
#[derive(Debug)]
pub struct Control {
    /// Start of the measured phase (0 = not yet).
    pub go_ns: AtomicU64,
    /// End of the measured phase (`u64::MAX` = not yet known).
    pub stop_ns: AtomicU64,
    pub abort: AtomicBool,
    /// Threads whose setup is complete.
    pub ready: AtomicUsize,
    /// Threads that have finished.
    pub finished: AtomicUsize,
    cells: Vec<Cells>,
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl Control {
    pub fn new(threads: usize) -> Control {
        Control {
            go_ns: AtomicU64::new(0),
            stop_ns: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            cells: (0..threads).map(|_| Cells::default()).collect(),
            wakers: Mutex::new(Vec::new()),
        }
    }
    /// Wake every thread (after changing `go_ns`, `stop_ns` or `abort`).
    pub fn wake_all(&self) {
        if let Ok(w) = self.wakers.lock() {
            for w in w.iter() {
                let _ = w.wake();
            }
        }
    }
    pub fn set_go(&self, go_ns: u64, stop_ns: u64) {
        self.stop_ns.store(stop_ns, Relaxed);
        self.go_ns.store(go_ns.max(1), Relaxed);
        self.wake_all();
    }
    pub fn set_abort(&self) {
        self.abort.store(true, Relaxed);
        self.wake_all();
    }
    pub fn progress(&self) -> Progress {
        let mut p = Progress::default();
        for c in &self.cells {
            p.add(&Progress {
                opened: c.opened.load(Relaxed),
                connected: c.connected.load(Relaxed),
                paired: c.paired.load(Relaxed),
                failed: c.failed.load(Relaxed),
                sent: c.sent.load(Relaxed),
                received: c.received.load(Relaxed),
                errors: c.errors.load(Relaxed),
                bad: c.bad.load(Relaxed),
                sessions: c.sessions.load(Relaxed),
                live: c.live.load(Relaxed),
            });
        }
        p
    }
}

/// What a thread hands back when it is done.
#[derive(Debug, Default)]
pub struct ThreadResult {
    pub counts: Counts,
    pub hists: Hists,
    pub samples: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, reading the 101.
    Handshake,
    /// `find` sent, waiting for `paired`.
    Pairing,
    /// Set up; waiting for `go`.
    Ready,
    /// Exchanging messages.
    Active,
    /// Our end marker is sent (relay) or we stopped sending (echo); waiting for the rest.
    Draining,
    /// Churn: both end markers through, waiting for the partner's `partner_left`.
    AwaitLeft,
    /// Our Close frame is queued; waiting for the server's Close or EOF.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ThreadPhase {
    Setup,
    WaitGo,
    Run,
    Drain,
    Done,
}

/// Per-client state (everything but the socket and the decoder).
#[derive(Debug)]
struct St {
    key: usize,
    phase: Phase,
    /// `Some(clean)` once the connection is finished; it is removed at the end of the turn.
    dead: Option<bool>,
    out: Vec<u8>,
    out_pos: usize,
    writable: bool,
    dirty: bool,
    /// Handshake response bytes (only while in `Handshake`).
    hs: Vec<u8>,
    /// A data message spanning several reads/frames, and its full length.
    part: Vec<u8>,
    part_len: usize,
    /// Socket creation time; `find` time.
    t0: u64,
    t_find: u64,
    /// 0 = no deadline.
    deadline: u64,
    /// Random id sent in the end marker (churn: who leaves).
    id: u64,
    /// Index of this client over the whole run (URL, source address, pair tag).
    gidx: usize,
    seq_out: u32,
    seq_in: u32,
    /// Data messages received and how many of them were duplicates.
    recv: u32,
    dup: u32,
    end_sent: bool,
    end_recv: Option<(u32, u64)>,
    /// Closed-loop replies owed for messages that arrived before our `go`.
    owed: u32,
    /// Echo: messages sent and not yet echoed.
    outstanding: u32,
    /// The server's Close arrived (we are waiting for its FIN).
    got_close: bool,
}

struct Conn {
    sock: TcpStream,
    dec: Decoder,
    st: St,
}

/// Open-loop schedule of one thread: its k-th send goes to client `k % n` at `start + k·spacing`.
#[derive(Debug, Default)]
struct OpenLoop {
    keys: Vec<usize>,
    k: u64,
    start: u64,
    spacing_ns: f64,
}

impl OpenLoop {
    fn due(&self) -> u64 {
        self.start + (self.k as f64 * self.spacing_ns) as u64
    }
}

/// Everything of a thread except its connections (so both can be borrowed at once).
struct Cx<'a> {
    plan: &'a Plan,
    ctl: &'a Control,
    t: usize,
    now: u64,
    go: u64,
    stop: u64,
    tphase: ThreadPhase,
    counts: Counts,
    hists: Hists,
    samples: Vec<String>,
    /// Samples kept per error kind (last slot: not tied to a kind).
    sampled: [usize; ERR_KINDS + 1],
    dirty: Vec<usize>,
    dead: Vec<usize>,
    rng: Rng,
    /// Connections in `Connecting` or `Handshake`.
    connecting: usize,
}

impl Cx<'_> {
    fn in_window(&self) -> bool {
        self.go != 0 && self.now >= self.go && self.now < self.stop
    }
    /// Pairing: `t` lies in the measured window [go + warm-up, stop).
    fn in_measure(&self, t: u64) -> bool {
        self.go != 0 && t >= self.go.saturating_add(self.plan.warmup_ns) && t < self.stop
    }
    /// Keep a description of an error of this kind (the first few of each kind).
    fn sample(&mut self, kind: Option<ErrKind>, msg: String) {
        let idx = kind.map_or(ERR_KINDS, |k| k.index());
        let seen = self.sampled.get_mut(idx);
        if let Some(seen) = seen {
            if *seen < SAMPLES_PER_KIND && self.samples.len() < MAX_SAMPLES {
                *seen += 1;
                self.samples.push(msg);
            }
        }
    }
}

impl St {
    fn new(key: usize, now: u64, id: u64, timeout: u64, gidx: usize) -> St {
        St {
            key,
            phase: Phase::Connecting,
            dead: None,
            out: Vec::new(),
            out_pos: 0,
            writable: false,
            dirty: false,
            hs: Vec::new(),
            part: Vec::new(),
            part_len: 0,
            t0: now,
            t_find: 0,
            deadline: now + timeout,
            id,
            gidx,
            seq_out: 0,
            seq_in: 0,
            recv: 0,
            dup: 0,
            end_sent: false,
            end_recv: None,
            owed: 0,
            outstanding: 0,
            got_close: false,
        }
    }

    fn mark_dirty(&mut self, cx: &mut Cx) {
        if !self.dirty {
            self.dirty = true;
            cx.dirty.push(self.key);
        }
    }

    fn kill(&mut self, cx: &mut Cx, clean: bool) {
        if self.dead.is_none() {
            self.dead = Some(clean);
            cx.dead.push(self.key);
        }
    }

    /// Count an error and drop the connection at once.
    fn fail(&mut self, cx: &mut Cx, kind: ErrKind, what: &str) {
        cx.counts.error(kind);
        cx.sample(
            Some(kind),
            format!("{}: {what} (phase {:?})", kind.name(), self.phase),
        );
        self.kill(cx, false);
    }

    /// Count an error and close gracefully.
    fn fail_close(&mut self, cx: &mut Cx, kind: ErrKind, what: &str) {
        cx.counts.error(kind);
        cx.sample(
            Some(kind),
            format!("{}: {what} (phase {:?})", kind.name(), self.phase),
        );
        self.start_close(cx);
    }

    fn start_close(&mut self, cx: &mut Cx) {
        if self.phase == Phase::Closing || self.dead.is_some() {
            return;
        }
        self.out.extend_from_slice(&cx.plan.frames.close);
        self.phase = Phase::Closing;
        self.deadline = cx.now + cx.plan.timeout_ns;
        self.mark_dirty(cx);
    }

    fn send_msg(&mut self, cx: &mut Cx, intended: u64) {
        cx.plan
            .frames
            .push_msg(&mut self.out, self.seq_out, intended, cx.now);
        self.seq_out = self.seq_out.wrapping_add(1);
        cx.counts.sent += 1;
        if cx.in_window() {
            cx.counts.window_sent += 1;
        }
        if !cx.plan.chat() {
            self.outstanding += 1;
        }
        self.mark_dirty(cx);
    }

    fn send_end(&mut self, cx: &mut Cx) {
        if !self.end_sent {
            cx.plan
                .frames
                .push_end(&mut self.out, self.seq_out, self.id);
            self.end_sent = true;
            self.mark_dirty(cx);
        }
    }

    /// Bring a set-up connection to where its thread is (start sending after `go`, end after
    /// `stop`).
    fn catch_up(&mut self, cx: &mut Cx) {
        if self.dead.is_some() {
            return;
        }
        if cx.tphase >= ThreadPhase::Run && self.phase == Phase::Ready {
            match cx.plan.kind {
                Kind::Relay | Kind::Echo => {
                    self.phase = Phase::Active;
                    if cx.plan.closed_loop() {
                        let n = cx.plan.in_flight.saturating_add(self.owed);
                        self.owed = 0;
                        for _ in 0..n {
                            self.send_msg(cx, cx.now);
                        }
                    }
                }
                Kind::Idle | Kind::Churn | Kind::Pairing => {}
            }
        }
        if cx.tphase >= ThreadPhase::Drain {
            match (cx.plan.kind, self.phase) {
                (Kind::Idle, Phase::Ready) => self.start_close(cx),
                (Kind::Relay, Phase::Active | Phase::Ready) => {
                    self.send_end(cx);
                    self.phase = Phase::Draining;
                    self.deadline = cx.now + cx.plan.timeout_ns;
                    if self.end_recv.is_some() {
                        self.start_close(cx);
                    }
                }
                (Kind::Echo, Phase::Active | Phase::Ready) => {
                    if self.outstanding == 0 {
                        self.start_close(cx);
                    } else {
                        self.phase = Phase::Draining;
                        self.deadline = cx.now + cx.plan.timeout_ns;
                    }
                }
                _ => {}
            }
        }
    }

    /// The TCP connection is established: send the upgrade request.
    fn on_connected(&mut self, cx: &mut Cx) {
        self.phase = Phase::Handshake;
        let requests = &cx.plan.frames.requests;
        let url = targets::url_index(self.gidx, requests.len());
        if let Some(r) = requests.get(url) {
            self.out.extend_from_slice(r);
        }
        self.mark_dirty(cx);
    }

    /// The 101 is in.
    fn on_upgraded(&mut self, cx: &mut Cx) {
        cx.counts.connected += 1;
        let url = targets::url_index(self.gidx, cx.plan.targets.len());
        let per_url = &mut cx.counts.connected_per_url;
        if per_url.len() < cx.plan.targets.len() {
            per_url.resize(cx.plan.targets.len(), 0);
        }
        if let Some(n) = per_url.get_mut(url) {
            *n += 1;
        }
        cx.hists.connect.record_ns(cx.now.saturating_sub(self.t0));
        cx.connecting = cx.connecting.saturating_sub(1);
        self.hs = Vec::new();
        if cx.plan.chat() {
            self.phase = Phase::Pairing;
            self.t_find = cx.now;
            self.deadline = cx.now + cx.plan.pair_timeout_ns;
            match &cx.plan.pair_run {
                Some(run) => {
                    let tag = targets::pair_tag(run, self.gidx);
                    cx.plan.frames.push_find_tagged(&mut self.out, &tag);
                }
                None => self.out.extend_from_slice(&cx.plan.frames.find),
            }
            self.mark_dirty(cx);
        } else {
            self.phase = Phase::Ready;
            self.deadline = 0;
            cx.counts.last_setup_ns = cx.now;
            self.catch_up(cx);
        }
    }

    /// One decoder event; `false` stops decoding (the connection is finished).
    fn on_event(&mut self, cx: &mut Cx, ev: Event<'_>) -> bool {
        match ev {
            Event::Data {
                payload,
                first,
                last,
                ..
            } => {
                let keep = if cx.plan.chat() {
                    usize::MAX
                } else {
                    STAMP_LEN
                };
                if first && last {
                    self.on_message(cx, payload, payload.len());
                } else {
                    if first {
                        self.part.clear();
                        self.part_len = 0;
                    }
                    let room = keep.saturating_sub(self.part.len());
                    self.part
                        .extend_from_slice(payload.get(..room.min(payload.len())).unwrap_or(&[]));
                    self.part_len += payload.len();
                    if last {
                        let buf = std::mem::take(&mut self.part);
                        self.on_message(cx, &buf, self.part_len);
                        self.part = buf;
                        self.part.clear();
                        if self.part.capacity() > 4096 {
                            self.part = Vec::new();
                        }
                    }
                }
            }
            Event::Ping(p) => {
                cx.plan.frames.push_pong(&mut self.out, p);
                cx.counts.pings += 1;
                self.mark_dirty(cx);
            }
            Event::Pong(_) => {}
            Event::Close { code, .. } => {
                if self.phase == Phase::Closing {
                    // "the client SHOULD wait for the server to close the connection"
                    // (RFC 6455 §7.1.1): keep reading until EOF, so that the TIME_WAIT
                    // state lands on the server and not on our source ports.
                    self.got_close = true;
                    return false;
                } else {
                    let what = format!("server sent Close {code:?}");
                    self.fail(cx, ErrKind::UnexpectedClose, &what);
                }
            }
        }
        self.dead.is_none()
    }

    fn on_message(&mut self, cx: &mut Cx, payload: &[u8], len: usize) {
        if cx.plan.chat() {
            self.on_chat(cx, payload);
        } else {
            self.on_echo(cx, payload, len);
        }
    }

    /// Check order and count a received data message; record its latency.
    fn on_data(&mut self, cx: &mut Cx, seq: u32, intended: u64, sent: u64) {
        if seq == self.seq_in {
            self.seq_in = self.seq_in.wrapping_add(1);
        } else if seq > self.seq_in {
            cx.counts.out_of_order += 1;
            self.seq_in = seq.wrapping_add(1);
        } else {
            cx.counts.duplicated += 1;
            self.dup += 1;
        }
        self.recv += 1;
        cx.counts.received += 1;
        if cx.in_window() {
            cx.counts.window_received += 1;
        }
        cx.hists.latency.record_ns(cx.now.saturating_sub(intended));
        if !cx.plan.closed_loop() {
            cx.hists
                .latency_uncorrected
                .record_ns(cx.now.saturating_sub(sent));
        }
    }

    fn on_echo(&mut self, cx: &mut Cx, head: &[u8], len: usize) {
        let Some(Stamp::Data {
            seq,
            intended,
            sent,
        }) = parse_stamp(head)
        else {
            cx.counts.corrupt += 1;
            self.fail_close(cx, ErrKind::Protocol, "echo without a stamp");
            return;
        };
        if len != cx.plan.frames.message_bytes {
            cx.counts.corrupt += 1;
            cx.sample(None, format!("corrupt: echo of {len} bytes"));
        }
        self.on_data(cx, seq, intended, sent);
        self.outstanding = self.outstanding.saturating_sub(1);
        match self.phase {
            Phase::Active if cx.plan.closed_loop() => self.send_msg(cx, cx.now),
            Phase::Draining if self.outstanding == 0 => self.start_close(cx),
            _ => {}
        }
    }

    fn on_chat(&mut self, cx: &mut Cx, payload: &[u8]) {
        let Some(msg) = parse_server(payload) else {
            let what = format!(
                "unparsable message {:?}",
                String::from_utf8_lossy(payload.get(..80).unwrap_or(payload))
            );
            self.fail_close(cx, ErrKind::Protocol, &what);
            return;
        };
        match msg {
            ServerMsg::Hello | ServerMsg::Waiting | ServerMsg::Typing => {}
            ServerMsg::Paired(common) => self.on_paired(cx, &common),
            ServerMsg::Message(text) => self.on_chat_line(cx, &text),
            ServerMsg::PartnerLeft => self.on_partner_left(cx),
            ServerMsg::Error(code) => {
                cx.counts.error(ErrKind::ServerError);
                cx.sample(
                    Some(ErrKind::ServerError),
                    format!("server_error: {code:?} (phase {:?})", self.phase),
                );
            }
            ServerMsg::Unknown(ty) => {
                self.fail_close(cx, ErrKind::Protocol, &format!("unknown type {ty:?}"));
            }
        }
    }

    fn on_paired(&mut self, cx: &mut Cx, common: &[String]) {
        if self.phase != Phase::Pairing {
            self.fail_close(cx, ErrKind::Protocol, "paired while not looking");
            return;
        }
        if let Some(run) = &cx.plan.pair_run {
            // The one interest in common must be our pair's tag; anything else means the
            // server paired us with someone else (e.g. our partner never came and the
            // interest wait ran out). Counted, but the chat goes on and is checked as usual.
            let tag = targets::pair_tag(run, self.gidx);
            if common.len() == 1 && common.first().is_some_and(|c| *c == tag) {
                if self.gidx.is_multiple_of(2) {
                    cx.counts.pairs += 1;
                    if targets::crosses(self.gidx, cx.plan.targets.len()) {
                        cx.counts.pairs_cross_url += 1;
                    }
                }
            } else {
                cx.counts.error(ErrKind::WrongPartner);
                cx.sample(
                    Some(ErrKind::WrongPartner),
                    format!(
                        "wrong_partner: client {} ({tag}) paired with common {common:?}",
                        self.gidx
                    ),
                );
            }
        }
        cx.counts.paired += 1;
        cx.counts.last_setup_ns = cx.now;
        // A pairing step's histogram holds the strangers that joined inside its window, so
        // that strangers who joined during an overload and paired later are not left out.
        if cx.plan.kind != Kind::Pairing || cx.in_measure(self.t0) {
            cx.hists
                .pair_wait
                .record_ns(cx.now.saturating_sub(self.t_find));
        }
        self.deadline = 0;
        match cx.plan.kind {
            Kind::Pairing => {
                if cx.in_measure(cx.now) {
                    cx.counts.window_paired += 1;
                }
                // One message each way proves that the pair works.
                self.phase = Phase::Active;
                self.deadline = cx.now + cx.plan.timeout_ns;
                self.send_msg(cx, cx.now);
            }
            Kind::Churn => {
                self.phase = Phase::Active;
                self.deadline = cx.now + cx.plan.timeout_ns;
                if cx.plan.messages > 0 {
                    self.send_msg(cx, cx.now);
                } else {
                    self.send_end(cx);
                }
            }
            _ => {
                self.phase = Phase::Ready;
                self.catch_up(cx);
            }
        }
    }

    fn on_chat_line(&mut self, cx: &mut Cx, text: &[u8]) {
        if matches!(
            self.phase,
            Phase::Connecting | Phase::Handshake | Phase::Pairing
        ) {
            self.fail_close(cx, ErrKind::Protocol, "message while not paired");
            return;
        }
        match parse_stamp(text) {
            Some(Stamp::Data {
                seq,
                intended,
                sent,
            }) => {
                if !padding_ok(text, cx.plan.frames.message_bytes) {
                    cx.counts.corrupt += 1;
                    cx.sample(None, format!("corrupt: text of {} bytes", text.len()));
                }
                self.on_data(cx, seq, intended, sent);
                match (cx.plan.kind, self.phase) {
                    (Kind::Relay, Phase::Active) if cx.plan.closed_loop() => {
                        self.send_msg(cx, cx.now)
                    }
                    (Kind::Relay, Phase::Ready) => self.owed = self.owed.saturating_add(1),
                    (Kind::Churn, Phase::Active) => {
                        if self.seq_out < cx.plan.messages {
                            self.send_msg(cx, cx.now);
                        } else {
                            self.send_end(cx);
                        }
                    }
                    (Kind::Pairing, Phase::Active) => {
                        // Ours went out at `paired`, before this arrived: both ways are
                        // through (for the partner, once it reads ours). A partner_left that
                        // overtakes ours would be an error on its side.
                        cx.counts.sessions += 1;
                        self.start_close(cx);
                    }
                    _ => {}
                }
            }
            Some(Stamp::End { count, id }) => {
                if self.end_recv.is_some() {
                    self.fail_close(cx, ErrKind::Protocol, "second end marker");
                    return;
                }
                self.end_recv = Some((count, id));
                let unique = self.recv.saturating_sub(self.dup);
                cx.counts.lost += u64::from(count.saturating_sub(unique));
                match cx.plan.kind {
                    Kind::Relay if self.end_sent => self.start_close(cx),
                    Kind::Churn => {
                        if !self.end_sent && self.seq_out >= cx.plan.messages {
                            self.send_end(cx);
                        }
                        if self.end_sent {
                            self.churn_finish(cx, id);
                        }
                    }
                    _ => {}
                }
            }
            None => {
                cx.counts.corrupt += 1;
                let what = format!(
                    "message text without a stamp: {:?}",
                    String::from_utf8_lossy(text.get(..60).unwrap_or(text))
                );
                self.fail_close(cx, ErrKind::Protocol, &what);
            }
        }
    }

    /// Churn: both end markers are through. The client with the smaller id leaves (by
    /// `leave` + Close if its id is odd, by Close alone if even); the other waits for
    /// `partner_left`.
    fn churn_finish(&mut self, cx: &mut Cx, partner_id: u64) {
        if self.id <= partner_id {
            cx.counts.sessions += 1;
            if self.id & 1 == 1 {
                self.out.extend_from_slice(&cx.plan.frames.leave);
            }
            self.start_close(cx);
        } else {
            self.phase = Phase::AwaitLeft;
            self.deadline = cx.now + cx.plan.timeout_ns;
        }
    }

    fn on_partner_left(&mut self, cx: &mut Cx) {
        let expected = match cx.plan.kind {
            // Another thread or process may close its side first: `stop` is known to all
            // of them ahead of time, so any partner_left after it is part of the end.
            Kind::Idle => cx.now >= cx.ctl.stop_ns.load(Relaxed),
            Kind::Relay => self.end_recv.is_some(),
            Kind::Churn => self.phase == Phase::AwaitLeft,
            // Pairing: the partner closes only after reading our message, and its own message
            // left before its close, so its partner_left finds us closing (handled above);
            // one that comes first means its message was lost.
            Kind::Echo | Kind::Pairing => false,
        };
        if self.phase == Phase::Closing {
            return;
        }
        if expected {
            if self.phase == Phase::AwaitLeft {
                cx.counts.sessions += 1;
            }
            self.start_close(cx);
        } else {
            self.fail_close(cx, ErrKind::UnexpectedPartnerLeft, "partner_left");
        }
    }

    fn on_eof(&mut self, cx: &mut Cx, what: &str) {
        if self.phase == Phase::Closing {
            self.kill(cx, true);
        } else if matches!(self.phase, Phase::Connecting | Phase::Handshake) {
            let kind = if self.phase == Phase::Connecting {
                ErrKind::Connect
            } else {
                ErrKind::Handshake
            };
            self.fail(cx, kind, what);
        } else {
            self.fail(cx, ErrKind::UnexpectedClose, what);
        }
    }

    /// A deadline passed.
    fn on_timeout(&mut self, cx: &mut Cx) {
        self.deadline = 0;
        match self.phase {
            Phase::Connecting | Phase::Handshake => {
                self.fail(cx, ErrKind::TimeoutConnect, "no 101 in time")
            }
            Phase::Pairing => {
                if cx.plan.kind == Kind::Pairing && cx.in_measure(self.t0) {
                    // Counted with what it waited (a lower bound), so that timeouts raise
                    // the step's p99 instead of vanishing from it.
                    cx.hists
                        .pair_wait
                        .record_ns(cx.now.saturating_sub(self.t_find));
                }
                self.fail(cx, ErrKind::TimeoutPair, "not paired in time")
            }
            Phase::Active => self.fail_close(cx, ErrKind::TimeoutChat, "chat not done in time"),
            Phase::Draining => {
                self.fail_close(cx, ErrKind::TimeoutDrain, "end of stream not seen in time")
            }
            Phase::AwaitLeft => {
                self.fail_close(cx, ErrKind::TimeoutPartnerLeft, "no partner_left in time")
            }
            Phase::Closing if self.got_close => self.kill(cx, true),
            Phase::Closing => self.fail(cx, ErrKind::TimeoutClose, "no Close reply in time"),
            Phase::Ready => {}
        }
    }
}

impl Conn {
    /// Feed received bytes to the handshake parser or the decoder.
    fn feed(&mut self, cx: &mut Cx, data: &mut [u8]) {
        if self.st.phase == Phase::Handshake {
            self.st.hs.extend_from_slice(data);
            match parse_upgrade(&self.st.hs, &cx.plan.frames.accept) {
                Upgrade::Partial => {
                    if self.st.hs.len() > MAX_HEAD {
                        self.st
                            .fail(cx, ErrKind::Handshake, "response head too long");
                    }
                }
                Upgrade::Failed(why) => self.st.fail(cx, ErrKind::Handshake, &why),
                Upgrade::Done(n) => {
                    let mut rest = std::mem::take(&mut self.st.hs);
                    rest.drain(..n.min(rest.len()));
                    self.st.on_upgraded(cx);
                    if !rest.is_empty() {
                        self.decode(cx, &mut rest);
                    }
                }
            }
            return;
        }
        self.decode(cx, data);
    }

    fn decode(&mut self, cx: &mut Cx, data: &mut [u8]) {
        let Conn { dec, st, .. } = self;
        let max = cx.plan.max_message;
        if let Err(e) = dec.decode(data, max, |ev| st.on_event(cx, ev)) {
            st.fail(cx, ErrKind::Protocol, &format!("frame error {e:?}"));
        }
    }

    /// Read until `WouldBlock`, or until a short read unless `to_eof` (the event reported
    /// the peer's FIN or an error, which raise no further edge).
    fn read_all(&mut self, cx: &mut Cx, rbuf: &mut [u8], to_eof: bool) {
        while self.st.dead.is_none() {
            match self.sock.read(rbuf) {
                Ok(0) => {
                    self.st.on_eof(cx, "connection closed by the server");
                    return;
                }
                Ok(n) => {
                    if let Some(chunk) = rbuf.get_mut(..n) {
                        self.feed(cx, chunk);
                    }
                    // A short read emptied the socket's receive queue: anything arriving
                    // later raises a new edge, so the extra read that would only return
                    // `WouldBlock` is skipped (one syscall less per message; uSockets does
                    // the same, reading again only when the buffer came back full).
                    if n < rbuf.len() && !to_eof {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.st.on_eof(cx, &format!("read: {e}"));
                    return;
                }
            }
        }
    }

    /// Write queued output once (until done or `WouldBlock`).
    fn flush(&mut self, cx: &mut Cx) {
        self.st.dirty = false;
        if !self.st.writable || self.st.dead.is_some() || self.st.phase == Phase::Connecting {
            return;
        }
        while self.st.out_pos < self.st.out.len() {
            let pending = self.st.out.get(self.st.out_pos..).unwrap_or(&[]);
            match self.sock.write(pending) {
                Ok(0) => {
                    self.st.on_eof(cx, "write returned 0");
                    return;
                }
                Ok(n) => self.st.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.st.writable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.st.on_eof(cx, &format!("write: {e}"));
                    return;
                }
            }
        }
        self.st.out.clear();
        self.st.out_pos = 0;
        if self.st.out.capacity() > 64 * 1024 {
            self.st.out = Vec::new();
        }
    }

    /// First writable event while connecting: did the connect succeed?
    fn check_connect(&mut self, cx: &mut Cx) {
        match self.sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                self.st.fail(cx, ErrKind::Connect, &e.to_string());
                return;
            }
            Ok(None) => {}
        }
        match self.sock.peer_addr() {
            Ok(_) => self.st.on_connected(cx),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => self.st.fail(cx, ErrKind::Connect, &e.to_string()),
        }
    }
}

/// Create a non-blocking socket, bind it to `source` (port chosen at connect time) and start
/// connecting.
fn start_connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let s = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    s.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        if ip.is_ipv4() {
            let one: libc::c_int = 1;
            // SAFETY: a valid fd, option value pointer and length of a c_int.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::IPPROTO_IP,
                    IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match s.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// One thread's event loop.
pub struct Worker<'a> {
    ctl: &'a Control,
    poll: Poll,
    events: Events,
    timer: TimerFd,
    /// The instant the timerfd is armed for (0 = not armed).
    timer_at: u64,
    conns: Slab<Conn>,
    rbuf: Vec<u8>,
    cx: Cx<'a>,
    /// Setup: connections still to open, and the next paced open.
    to_open: usize,
    opened: usize,
    next_open: u64,
    /// Churn: next join index and spacing.
    joins: usize,
    join_start: u64,
    open_loop: OpenLoop,
    last_sweep: u64,
    /// Connections still in connect/handshake/pairing at the last sweep.
    unsettled: usize,
    /// Pairing: the current pair of joins is skipped (`--max-open` reached).
    skipping: bool,
    /// Pairing: the most connections held at once.
    peak_open: usize,
}

impl<'a> Worker<'a> {
    pub fn new(plan: &'a Plan, ctl: &'a Control, t: usize, seed: u64) -> io::Result<Worker<'a>> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        if let Ok(mut w) = ctl.wakers.lock() {
            w.push(waker);
        }
        let timer = TimerFd::new()?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&timer.raw()),
            TIMER,
            Interest::READABLE,
        )?;
        let to_open = plan.per_thread.get(t).copied().unwrap_or(0);
        Ok(Worker {
            ctl,
            poll,
            events: Events::with_capacity(1024),
            timer,
            timer_at: 0,
            conns: Slab::with_capacity(if plan.joins() { 64 } else { to_open }),
            rbuf: vec![0; RBUF],
            cx: Cx {
                plan,
                ctl,
                t,
                now: now_ns(),
                go: 0,
                stop: u64::MAX,
                tphase: ThreadPhase::Setup,
                counts: Counts::default(),
                hists: Hists::default(),
                samples: Vec::new(),
                sampled: [0; ERR_KINDS + 1],
                dirty: Vec::new(),
                dead: Vec::new(),
                rng: Rng::new(seed),
                connecting: 0,
            },
            to_open: if plan.joins() { 0 } else { to_open },
            opened: 0,
            next_open: 0,
            joins: 0,
            join_start: 0,
            open_loop: OpenLoop::default(),
            last_sweep: 0,
            unsettled: 0,
            skipping: false,
            peak_open: 0,
        })
    }

    /// Index over the whole run of this thread's `n`-th client (connection or join).
    fn global_index(&self, n: usize) -> usize {
        self.cx.plan.conn_offset
            + self
                .cx
                .plan
                .per_thread
                .iter()
                .take(self.cx.t)
                .sum::<usize>()
            + n
    }

    fn source_for(&self, global: usize) -> Option<IpAddr> {
        let s = &self.cx.plan.sources;
        if s.is_empty() {
            return None;
        }
        s.get(global % s.len()).copied()
    }

    /// Open one client connection (setup or churn join).
    fn open_one(&mut self, n: usize) {
        let cx = &mut self.cx;
        cx.counts.opened += 1;
        if cx.counts.first_connect_ns == 0 {
            cx.counts.first_connect_ns = cx.now;
        }
        let gidx = self.global_index(n);
        let source = self.source_for(gidx);
        let cx = &mut self.cx;
        let targets = &cx.plan.targets;
        let Some(&target) = targets.get(targets::url_index(gidx, targets.len())) else {
            cx.counts.error(ErrKind::Connect);
            cx.counts.failed += 1;
            cx.sample(Some(ErrKind::Connect), "connect: no target URL".into());
            return;
        };
        let mut sock = match start_connect(target, source) {
            Ok(s) => s,
            Err(e) => {
                cx.counts.error(ErrKind::Connect);
                cx.counts.failed += 1;
                cx.sample(
                    Some(ErrKind::Connect),
                    format!("connect: {e} (to {target}, source {source:?})"),
                );
                return;
            }
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            cx.counts.error(ErrKind::Connect);
            cx.counts.failed += 1;
            cx.sample(Some(ErrKind::Connect), format!("connect: register: {e}"));
            return;
        }
        let id = cx.rng.next_u64();
        entry.insert(Conn {
            sock,
            dec: Decoder::client(),
            st: St::new(key, cx.now, id, cx.plan.timeout_ns, gidx),
        });
        cx.connecting += 1;
    }

    fn remove_dead(&mut self) {
        while let Some(key) = self.cx.dead.pop() {
            if let Some(mut c) = self.conns.try_remove(key) {
                let _ = self.poll.registry().deregister(&mut c.sock);
                if matches!(c.st.phase, Phase::Connecting | Phase::Handshake) {
                    self.cx.connecting = self.cx.connecting.saturating_sub(1);
                }
                if c.st.dead == Some(true) {
                    self.cx.counts.closed_clean += 1;
                } else {
                    self.cx.counts.failed += 1;
                }
            }
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.cx.dirty);
        for key in dirty.drain(..) {
            if let Some(c) = self.conns.get_mut(key) {
                c.flush(&mut self.cx);
            }
        }
        self.cx.dirty = dirty;
    }

    fn for_each_conn(&mut self, mut f: impl FnMut(&mut St, &mut Cx)) {
        for (_, c) in self.conns.iter_mut() {
            f(&mut c.st, &mut self.cx);
        }
    }

    fn sweep(&mut self) {
        let now = self.cx.now;
        let mut unsettled = 0;
        for (_, c) in self.conns.iter_mut() {
            if c.st.deadline != 0 && c.st.deadline <= now && c.st.dead.is_none() {
                c.st.on_timeout(&mut self.cx);
            }
            if matches!(
                c.st.phase,
                Phase::Connecting | Phase::Handshake | Phase::Pairing
            ) && c.st.dead.is_none()
            {
                unsettled += 1;
            }
        }
        self.unsettled = unsettled;
        self.publish();
    }

    fn publish(&self) {
        let Some(cell) = self.ctl.cells.get(self.cx.t) else {
            return;
        };
        let c = &self.cx.counts;
        cell.opened.store(c.opened, Relaxed);
        cell.connected.store(c.connected, Relaxed);
        cell.paired.store(c.paired, Relaxed);
        cell.failed.store(c.failed, Relaxed);
        cell.sent.store(c.sent, Relaxed);
        cell.received.store(c.received, Relaxed);
        cell.errors.store(c.errors_total(), Relaxed);
        cell.bad
            .store(c.lost + c.duplicated + c.out_of_order + c.corrupt, Relaxed);
        cell.sessions.store(c.sessions, Relaxed);
        cell.live.store(self.conns.len() as u64, Relaxed);
    }

    /// Thread-level phase changes and timer-driven work. Returns the next instant at which
    /// timer work is due.
    fn advance(&mut self) -> u64 {
        let plan = self.cx.plan;
        let now = self.cx.now;
        let mut next = self.last_sweep + SWEEP_NS;
        if self.ctl.abort.load(Relaxed) {
            for (_, c) in self.conns.iter_mut() {
                c.st.kill(&mut self.cx, true);
            }
            self.cx.tphase = ThreadPhase::Done;
            return now;
        }
        if self.cx.tphase == ThreadPhase::Setup {
            let mut burst = 0;
            while self.opened < self.to_open
                && self.cx.connecting < plan.max_connecting
                && (plan.connect_interval_ns == 0 || self.next_open <= now)
                && burst < MAX_BURST / 16
            {
                let n = self.opened;
                self.opened += 1;
                self.open_one(n);
                self.next_open = self.next_open.max(now) + plan.connect_interval_ns;
                burst += 1;
            }
            if self.opened < self.to_open {
                if plan.connect_interval_ns > 0 {
                    next = next.min(self.next_open);
                }
                if burst == MAX_BURST / 16 {
                    next = now;
                }
            }
            if self.opened == self.to_open && self.cx.connecting == 0 && self.unsettled == 0 {
                // `unsettled` is from the last sweep: sweep now to be sure.
                self.sweep();
                if self.unsettled == 0 {
                    self.cx.tphase = ThreadPhase::WaitGo;
                    self.ctl.ready.fetch_add(1, Relaxed);
                }
            }
        }
        if self.cx.tphase == ThreadPhase::WaitGo {
            let go = self.ctl.go_ns.load(Relaxed);
            if go != 0 && now >= go {
                self.cx.go = go;
                self.cx.stop = self.ctl.stop_ns.load(Relaxed);
                self.cx.tphase = ThreadPhase::Run;
                self.start_run();
            } else if go != 0 {
                next = next.min(go);
            }
        }
        if self.cx.tphase == ThreadPhase::Run {
            // `stop` may have been set after `go` (idle sets both at once).
            self.cx.stop = self.ctl.stop_ns.load(Relaxed);
            if now >= self.cx.stop {
                self.cx.tphase = ThreadPhase::Drain;
                self.for_each_conn(|st, cx| st.catch_up(cx));
            } else {
                next = next.min(self.cx.stop);
                if let Some(due) = self.open_loop_sends() {
                    next = next.min(due);
                }
            }
        }
        if plan.joins() && self.cx.tphase >= ThreadPhase::Run {
            if let Some(due) = self.churn_joins() {
                next = next.min(due);
            }
        }
        if self.cx.tphase == ThreadPhase::Drain {
            let joins_done = !plan.joins() || self.joins >= self.per_thread_target();
            if self.conns.is_empty() && joins_done {
                self.cx.tphase = ThreadPhase::Done;
            }
        }
        next
    }

    fn per_thread_target(&self) -> usize {
        self.cx.plan.per_thread.get(self.cx.t).copied().unwrap_or(0)
    }

    fn start_run(&mut self) {
        let plan = self.cx.plan;
        if let (Some(rate), Kind::Relay | Kind::Echo) = (plan.rate, plan.kind) {
            let keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.st.phase == Phase::Ready)
                .map(|(k, _)| k)
                .collect();
            if !keys.is_empty() && rate > 0.0 {
                let thread_rate = rate * keys.len() as f64 / plan.total_connections.max(1) as f64;
                let spacing = 1e9 / thread_rate;
                let threads = plan.per_thread.len().max(1) as f64;
                self.open_loop = OpenLoop {
                    start: self.cx.go + (spacing * self.cx.t as f64 / threads) as u64,
                    keys,
                    k: 0,
                    spacing_ns: spacing,
                };
            }
        }
        self.join_start = self.cx.go;
        self.for_each_conn(|st, cx| st.catch_up(cx));
    }

    /// Open-loop sends that are due; returns when the next one is.
    fn open_loop_sends(&mut self) -> Option<u64> {
        if self.open_loop.keys.is_empty() {
            return None;
        }
        let now = self.cx.now;
        let n = self.open_loop.keys.len() as u64;
        let mut burst = 0;
        while self.open_loop.due() <= now && burst < MAX_BURST {
            let intended = self.open_loop.due();
            let idx = (self.open_loop.k % n) as usize;
            self.open_loop.k += 1;
            burst += 1;
            let Some(&key) = self.open_loop.keys.get(idx) else {
                continue;
            };
            if let Some(c) = self.conns.get_mut(key) {
                if c.st.phase == Phase::Active && c.st.dead.is_none() {
                    c.st.send_msg(&mut self.cx, intended);
                }
            }
        }
        Some(self.open_loop.due())
    }

    /// Churn joins that are due; returns when the next one is.
    fn churn_joins(&mut self) -> Option<u64> {
        let target = self.per_thread_target();
        let rate = self.cx.plan.join_rate_per_thread;
        if self.joins >= target || rate <= 0.0 {
            return None;
        }
        let start = self.join_start;
        // With pair tags, joins 2j and 2j+1 (partners) are due together, so that neither
        // waits for the other; the average rate is the same.
        let pairs = self.cx.plan.pair_run.is_some();
        let due = move |j: usize| {
            let j = if pairs { j & !1 } else { j };
            start + (j as f64 * 1e9 / rate) as u64
        };
        let pairing = self.cx.plan.kind == Kind::Pairing;
        let mut burst = 0;
        while self.joins < target && due(self.joins) <= self.cx.now && burst < MAX_BURST / 16 {
            let n = self.joins;
            self.joins += 1;
            burst += 1;
            if pairing {
                let at = due(n);
                if self.cx.in_measure(at) {
                    self.cx.counts.window_joins += 1;
                }
                let lag = self.cx.now.saturating_sub(at);
                self.cx.counts.max_join_lag_ns = self.cx.counts.max_join_lag_ns.max(lag);
                // Partners are skipped together, so that no one waits for a partner who
                // never comes.
                if !pairs || n.is_multiple_of(2) {
                    let room = if pairs { 2 } else { 1 };
                    self.skipping = self.conns.len() + room > self.cx.plan.max_open;
                }
                if self.skipping {
                    self.cx.counts.error(ErrKind::SkippedJoin);
                    let what = format!(
                        "skipped_join: {} connections open in this thread (--max-open)",
                        self.conns.len()
                    );
                    self.cx.sample(Some(ErrKind::SkippedJoin), what);
                    continue;
                }
            }
            self.open_one(n);
            self.peak_open = self.peak_open.max(self.conns.len());
        }
        (self.joins < target).then(|| due(self.joins))
    }

    fn handle_events(&mut self) {
        let Worker {
            events,
            conns,
            rbuf,
            cx,
            timer,
            timer_at,
            ..
        } = self;
        for ev in events.iter() {
            let key = ev.token().0;
            if ev.token() == WAKER {
                continue;
            }
            if ev.token() == TIMER {
                timer.clear();
                *timer_at = 0;
                continue;
            }
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if c.st.dead.is_some() {
                continue;
            }
            if ev.is_writable() {
                c.st.writable = true;
                if c.st.phase == Phase::Connecting {
                    c.check_connect(cx);
                }
            }
            if c.st.phase == Phase::Connecting && (ev.is_error() || ev.is_read_closed()) {
                c.check_connect(cx);
                if c.st.dead.is_none() && c.st.phase == Phase::Connecting {
                    c.st.fail(cx, ErrKind::Connect, "connection refused or reset");
                }
            }
            if c.st.dead.is_none()
                && c.st.phase != Phase::Connecting
                && (ev.is_readable() || ev.is_read_closed() || ev.is_error())
            {
                c.read_all(cx, rbuf, ev.is_read_closed() || ev.is_error());
            }
            if c.st.dead.is_none() && c.st.out_pos < c.st.out.len() {
                c.st.mark_dirty(cx);
            }
        }
    }

    /// Run the loop until the thread is done.
    pub fn run(mut self) -> ThreadResult {
        loop {
            self.cx.now = now_ns();
            if self.cx.now >= self.last_sweep + SWEEP_NS {
                self.last_sweep = self.cx.now;
                self.sweep();
            }
            let next = self.advance();
            self.remove_dead();
            self.flush_dirty();
            self.remove_dead();
            if self.cx.tphase == ThreadPhase::Done {
                break;
            }
            let now = now_ns();
            let mut sleep = next.saturating_sub(now).min(MAX_SLEEP_NS);
            if sleep > 0 && sleep < FINE_TIMER_NS {
                if self.timer_at != next {
                    self.timer.arm_at(next);
                    self.timer_at = next;
                }
                sleep = FINE_TIMER_NS;
            }
            let timeout = std::time::Duration::from_nanos(sleep);
            if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.cx.sample(None, format!("poll: {e}"));
                    self.ctl.set_abort();
                }
                continue;
            }
            self.cx.now = now_ns();
            self.handle_events();
            self.remove_dead();
            self.flush_dirty();
        }
        self.cx.counts.peak_open = self.peak_open as u64;
        self.publish();
        self.ctl.finished.fetch_add(1, Relaxed);
        ThreadResult {
            counts: self.cx.counts,
            hists: self.cx.hists,
            samples: self.cx.samples,
        }
    }
}
