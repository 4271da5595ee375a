//! One event loop (shard): a `mio::Poll`, a slab of connections, one read buffer shared by all
//! of them, and the inbox other threads write to. The only code that registers sockets and
//! calls `poll`, `read` and `write`.
//!
//! A loop turn: poll → read every readable connection (decode, act) → drain the inbox →
//! continue connections that hit their read budget → close what was doomed → flush every
//! connection with pending output (one `write` for all frames queued this turn) → send the
//! cross-shard outbox (one wake per destination) → timer sweep when due.
pub mod conn;
pub mod stats;

use crate::chat::matchmaker::Pairing;
use crate::chat::protocol::{self as proto, ClientMsg, ErrorCode};
use crate::chat::ratelimit::{RateLimitConfig, RateLimiter, RateVerdict};
use crate::cluster::ClusterMsg;
use crate::http::{self, Endpoint, HttpContext, HttpOutcome};
use crate::server::Shared;
use crate::ws::{self, Decoder, Event, OpCode};
use crate::xshard::{ConnId, Inbox, MatchReq, Outbox, ShardHandle, ShardMsg, CLUSTER_EPOCH};
use conn::{flag, ChatPhase, ChatState, Conn, Phase};
use crossbeam_channel::Sender;
use log::{debug, error};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use stats::ShardStats;

/// The token of each shard's `mio::Waker`; connection tokens are slab keys, far below it.
pub const WAKER_TOKEN: Token = Token(usize::MAX - 1);

/// Shared read buffer per shard (uSockets uses 512 KiB per loop; 64 KiB holds a whole
/// maximum chat message and keeps the loop's working set in cache).
const READ_BUF_BYTES: usize = 64 * 1024;
/// Full reads per connection per turn before it waits its turn again (fairness).
const READ_BUDGET: usize = 4;
/// How often the timer sweep runs.
const SWEEP_MS: u32 = 100;
/// How long to read-and-discard after shutting down our write side.
const LINGER_MS: u32 = 2_000;
/// How long to wait for the peer's close frame after sending ours.
const CLOSE_WAIT_MS: u32 = 5_000;
/// How long a client closed for not reading may take to read its close frame.
const SLOW_CLOSE_MS: u32 = 1_000;
/// How long a non-101 response may take to be read.
const HTTP_REPLY_MS: u32 = 5_000;
/// Output buffers kept for reuse, and the largest capacity worth keeping.
const POOL_MAX: usize = 256;
const POOL_BUF_MAX: usize = 16 * 1024;

const _: () = assert!(
    std::mem::size_of::<Conn>() <= 192,
    "Conn grew: idle connections must stay small"
);

fn ms(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX / 4)) as u32
}

/// What the loop does with a readiness event.
struct Ready {
    slot: usize,
    readable: bool,
    writable: bool,
    hup: bool,
}

pub struct Shard {
    id: u16,
    poll: Poll,
    conns: Slab<Conn>,
    next_gen: u32,
    read_buf: Box<[u8]>,
    /// JSON of the server message being built.
    json: Vec<u8>,
    /// The frame being built (for relays and pooled copies).
    frame: Vec<u8>,
    pool: Vec<Vec<u8>>,
    dirty: Vec<usize>,
    ready_again: Vec<usize>,
    doomed: Vec<(usize, u16)>,
    inbox: Inbox,
    peers: Vec<ShardHandle>,
    matcher: Sender<MatchReq>,
    /// The Redis bridge, in cluster mode.
    cluster: Option<Sender<ClusterMsg>>,
    outbox: Outbox,
    shared: Arc<Shared>,
    epoch_start: Instant,
    now: u32,
    last_sweep: u32,
    draining: bool,
    rate_cfg: RateLimitConfig,
    handshake_ms: u32,
    idle_ping_ms: u32,
    pong_ms: u32,
}

impl Shard {
    pub fn new(
        id: u16,
        poll: Poll,
        inbox: Inbox,
        peers: Vec<ShardHandle>,
        matcher: Sender<MatchReq>,
        cluster: Option<Sender<ClusterMsg>>,
        shared: Arc<Shared>,
    ) -> Shard {
        let c = &shared.config;
        let rate_cfg = RateLimitConfig {
            per_sec: c.rate_limit_per_sec,
            burst: c.rate_limit_burst,
            abuse_drops: c.abuse_drops,
        };
        let (handshake_ms, idle_ping_ms, pong_ms) =
            (ms(c.handshake_timeout), ms(c.idle_ping), ms(c.pong_timeout));
        let outbox = Outbox::new(peers.len());
        Shard {
            id,
            poll,
            conns: Slab::with_capacity(1024),
            next_gen: 1,
            read_buf: vec![0u8; READ_BUF_BYTES].into_boxed_slice(),
            json: Vec::with_capacity(4096),
            frame: Vec::with_capacity(4096),
            pool: Vec::new(),
            dirty: Vec::new(),
            ready_again: Vec::new(),
            doomed: Vec::new(),
            inbox,
            peers,
            matcher,
            cluster,
            outbox,
            shared,
            epoch_start: Instant::now(),
            now: 0,
            last_sweep: 0,
            draining: false,
            rate_cfg,
            handshake_ms,
            idle_ping_ms,
            pong_ms,
        }
    }

    fn stats(&self) -> &ShardStats {
        // `id` indexes the vector the server built with one entry per shard.
        &self.shared.shards[usize::from(self.id)]
    }

    fn tick(&mut self) {
        self.now = self.epoch_start.elapsed().as_millis() as u32;
    }

    fn now_ms64(&self) -> u64 {
        self.epoch_start.elapsed().as_millis() as u64
    }

    fn elapsed(&self, since: u32) -> u32 {
        self.now.wrapping_sub(since)
    }

    /// The loop. Returns a non-zero exit code only on a fatal error.
    pub fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<Ready> = Vec::with_capacity(1024);
        loop {
            let busy = !self.ready_again.is_empty() || !self.outbox.is_empty();
            let timeout = if busy {
                Duration::from_millis(if self.ready_again.is_empty() { 1 } else { 0 })
            } else {
                Duration::from_millis(u64::from(
                    SWEEP_MS
                        .saturating_sub(self.elapsed(self.last_sweep))
                        .max(1),
                ))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("shard {}: poll failed: {e}", self.id);
                return 1;
            }
            self.tick();
            let turn_start = Instant::now();
            ShardStats::inc(&self.stats().loop_turns);

            ready.clear();
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER_TOKEN {
                    woken = true;
                    continue;
                }
                ready.push(Ready {
                    slot: ev.token().0,
                    readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    writable: ev.is_writable(),
                    hup: ev.is_read_closed() || ev.is_error(),
                });
            }
            for r in ready.drain(..) {
                if r.writable {
                    if let Some(c) = self.conns.get_mut(r.slot) {
                        c.flags |= flag::WRITABLE;
                        if c.pending_out() > 0 {
                            self.mark_dirty(r.slot);
                        }
                    }
                }
                if r.readable {
                    self.on_readable(r.slot, r.hup);
                }
            }
            if woken {
                ShardStats::inc(&self.stats().wakeups);
            }
            self.drain_inbox();

            let again = std::mem::take(&mut self.ready_again);
            for slot in &again {
                self.on_readable(*slot, false);
            }
            self.drain_inbox();
            self.process_doomed();
            // Other threads first, sockets second: a client that reads `waiting` knows its
            // request is already in the matchmaker's queue, ahead of anything another client
            // sends after that.
            if self.flush_outbox().is_err() {
                return 1;
            }
            self.flush_dirty();
            self.process_doomed();
            if self.flush_outbox().is_err() {
                return 1;
            }
            if self.elapsed(self.last_sweep) >= SWEEP_MS {
                self.last_sweep = self.now;
                self.sweep();
                self.process_doomed();
                self.flush_dirty();
            }
            self.stats()
                .loop_time
                .observe(turn_start.elapsed().as_secs_f64());
        }
    }

    /// Send what the turn queued for other threads. `Err` when one of them died (fatal).
    fn flush_outbox(&mut self) -> Result<(), ()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        match self
            .outbox
            .flush(&self.peers, &self.matcher, self.cluster.as_ref())
        {
            Ok(_) => {
                if !self.outbox.is_empty() {
                    ShardStats::inc(&self.stats().outbox_full);
                }
                Ok(())
            }
            Err(_) => {
                error!("shard {}: another thread is gone", self.id);
                Err(())
            }
        }
    }

    // ----- inbox ------------------------------------------------------------------------

    fn drain_inbox(&mut self) {
        if let Some(me) = self.peers.get(usize::from(self.id)) {
            me.begin_drain();
        }
        while let Ok(msg) = self.inbox.try_recv() {
            ShardStats::inc(&self.stats().xshard_received);
            self.on_msg(msg);
        }
    }

    fn on_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::NewConn(sock) => self.adopt(sock),
            ShardMsg::PairMade(p) => self.on_pair_made(p),
            ShardMsg::Paired {
                to,
                ticket,
                partner,
                epoch,
                common,
            } => self.on_paired(to, ticket, partner, epoch, &common),
            ShardMsg::Relay { to, epoch, frame } => {
                if let Some(slot) = self.paired_slot(to, epoch) {
                    ShardStats::inc(&self.stats().messages_out);
                    self.queue(slot, &frame);
                }
            }
            ShardMsg::PartnerLeft { to, epoch, avoid } => self.on_partner_left(to, epoch, avoid),
            ShardMsg::NodeDown { node } => self.on_node_down(node),
            ShardMsg::Drain => self.start_drain(),
        }
    }

    fn adopt(&mut self, mut sock: mio::net::TcpStream) {
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            debug!("register failed: {e}");
            return;
        }
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        entry.insert(Conn {
            sock,
            gen,
            phase: Phase::Handshake,
            flags: 0,
            since: self.now,
            last_rx: self.now,
            decoder: Decoder::default(),
            out: Vec::new(),
            out_pos: 0,
            assembly: None,
            chat: ChatState::new(),
            rate: RateLimiter::new(&self.rate_cfg, 0),
        });
        ShardStats::inc(&self.stats().accepted);
        ShardStats::inc(&self.stats().open_sockets);
    }

    fn start_drain(&mut self) {
        self.draining = true;
        let open: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .map(|(k, _)| k)
            .collect();
        for slot in open {
            self.begin_close(slot, 1001, "server shutting down", false);
        }
    }

    // ----- reading ----------------------------------------------------------------------

    fn on_readable(&mut self, slot: usize, hup: bool) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut reads = 0;
        while let Some(conn) = self.conns.get_mut(slot) {
            if conn.has(flag::DOOMED) {
                break;
            }
            // After a failed write, read on to the error or EOF that ends the connection.
            let hup = hup || conn.has(flag::WRITE_DEAD);
            match conn.sock.read(&mut buf) {
                Ok(0) => {
                    self.on_eof(slot);
                    break;
                }
                Ok(n) => {
                    conn.last_rx = self.now;
                    conn.flags &= !flag::PING_SENT;
                    ShardStats::add(&self.stats().bytes_in, n as u64);
                    if let Some(data) = buf.get_mut(..n) {
                        self.on_bytes(slot, data);
                    }
                    reads += 1;
                    // Linux reports new data on an edge-triggered socket at every arrival, so a
                    // short read means the socket is drained: skip the read that would only
                    // say WouldBlock (one syscall less per message). After a hang-up, read on
                    // to see the EOF.
                    if n < buf.len() && !hup {
                        break;
                    }
                    if reads >= READ_BUDGET {
                        self.ready_again.push(slot);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_now(slot);
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    fn on_eof(&mut self, slot: usize) {
        // Send what we can (e.g. the close reply) before the socket goes.
        self.flush(slot);
        self.close_now(slot);
    }

    fn on_bytes(&mut self, slot: usize, data: &mut [u8]) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        match conn.phase {
            Phase::Handshake => self.on_handshake_bytes(slot, data),
            Phase::Open | Phase::Closing => self.decode(slot, data),
            Phase::HttpReply | Phase::Linger => {}
        }
    }

    fn on_handshake_bytes(&mut self, slot: usize, data: &mut [u8]) {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let ctx = HttpContext {
            max_head_bytes: cfg.max_head_bytes as usize,
            echo_enabled: cfg.enable_echo,
            draining: self.draining || shared.draining.load(Ordering::Relaxed),
            at_capacity: shared.ws_open.load(Ordering::Relaxed) >= cfg.max_connections,
            allowed_origins: &cfg.allowed_origins,
        };
        let now_ms = self.now_ms64();
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let mut assembled = conn.assembly.take();
        let outcome = match assembled.as_mut() {
            None => http::handle_request(data, &ctx),
            Some(head) => {
                // The whole read is kept: bytes after the head may already be WebSocket
                // frames. Bounded: a partial head is only kept below --max-head-bytes (431
                // beyond), so this holds at most that plus one read.
                head.extend_from_slice(data);
                http::handle_request(head, &ctx)
            }
        };
        match outcome {
            HttpOutcome::Incomplete => {
                conn.assembly = Some(assembled.unwrap_or_else(|| Box::new(data.to_vec())));
            }
            HttpOutcome::Reply(bytes) => {
                conn.phase = Phase::HttpReply;
                conn.since = self.now;
                conn.flags |= flag::SHUT_AFTER_FLUSH;
                self.stats().count_http(&bytes);
                self.queue(slot, &bytes);
            }
            HttpOutcome::Upgrade {
                endpoint,
                head_len,
                response,
            } => {
                conn.phase = Phase::Open;
                conn.since = self.now;
                conn.decoder = Decoder::new();
                conn.rate = RateLimiter::new(&self.rate_cfg, now_ms);
                conn.flags |= flag::COUNTED_WS;
                shared.ws_open.fetch_add(1, Ordering::Relaxed);
                let chat = endpoint == Endpoint::Chat;
                if chat {
                    conn.flags |= flag::COUNTED_ONLINE;
                    shared.online.fetch_add(1, Ordering::Relaxed);
                    ShardStats::inc(&self.stats().upgrades_chat);
                } else {
                    conn.flags |= flag::ECHO;
                    ShardStats::inc(&self.stats().upgrades_echo);
                }
                self.queue(slot, &response);
                if chat {
                    let online = shared.online_count();
                    self.send_json(slot, |out| proto::write_hello(out, online));
                }
                // Bytes after the head already belong to the WebSocket stream.
                match assembled {
                    Some(mut head) => {
                        if let Some(rest) = head.get_mut(head_len..) {
                            if !rest.is_empty() {
                                self.decode(slot, rest);
                            }
                        }
                    }
                    None => {
                        if let Some(rest) = data.get_mut(head_len..) {
                            if !rest.is_empty() {
                                self.decode(slot, rest);
                            }
                        }
                    }
                }
            }
        }
    }

    fn decode(&mut self, slot: usize, data: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let gen = conn.gen;
        let max = if conn.has(flag::ECHO) {
            self.shared.config.echo_max_message_bytes
        } else {
            self.shared.config.max_message_bytes
        } as usize;
        let mut decoder = std::mem::take(&mut conn.decoder);
        let result = decoder.decode(data, max, |ev| self.on_ws_event(slot, ev));
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.gen != gen {
            return;
        }
        // Put it back even after an error: a stopped decoder ignores the rest of the stream,
        // where a fresh one would read the middle of a frame as a header.
        conn.decoder = decoder;
        match result {
            Ok(()) => {}
            Err(e) => {
                debug!("shard {}: slot {slot}: {e:?}", self.id);
                self.fail(slot, e.close_code());
            }
        }
    }

    /// One decoded event. Returns whether to keep decoding this input.
    fn on_ws_event(&mut self, slot: usize, ev: Event<'_>) -> bool {
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        if conn.has(flag::DOOMED) {
            return false;
        }
        if conn.phase == Phase::Closing {
            // After our close frame nothing more is sent; we only wait for the peer's close.
            if let Event::Close { code, .. } = ev {
                conn.flags |= flag::SHUT_AFTER_FLUSH;
                self.stats().count_close_received(code);
                self.mark_dirty(slot);
                return false;
            }
            return true;
        }
        if conn.phase != Phase::Open {
            return false;
        }
        match ev {
            Event::Data {
                payload,
                text,
                first,
                last,
            } => {
                let echo = conn.has(flag::ECHO);
                if first && !echo && !text {
                    // Binary messages are not part of the chat protocol.
                    self.fail(slot, 1003);
                    return false;
                }
                if first && last {
                    self.on_message(slot, payload, text);
                } else {
                    if first {
                        conn.assembly = Some(Box::default());
                        if text {
                            conn.flags |= flag::ASSEMBLING_TEXT;
                        } else {
                            conn.flags &= !flag::ASSEMBLING_TEXT;
                        }
                    }
                    let text = conn.has(flag::ASSEMBLING_TEXT);
                    let asm = conn.assembly.get_or_insert_with(Box::default);
                    asm.extend_from_slice(payload);
                    if last {
                        if let Some(whole) = conn.assembly.take() {
                            self.on_message(slot, &whole, text);
                        }
                    }
                }
                self.conns
                    .get(slot)
                    .is_some_and(|c| c.phase == Phase::Open && !c.has(flag::DOOMED))
            }
            Event::Ping(payload) => {
                // One pong per ping, in order (Autobahn 2.10/2.11).
                self.queue_frame(slot, OpCode::Pong, payload);
                true
            }
            Event::Pong(_) => true,
            Event::Close { code, .. } => {
                self.stats().count_close_received(code);
                // Echo the peer's code (RFC 6455 §5.5.1), then close TCP ourselves.
                let reply = code.unwrap_or(1000);
                self.leave_chat(slot);
                self.frame.clear();
                ws::write_close(&mut self.frame, reply, "");
                self.queue_built_frame(slot);
                if let Some(conn) = self.conns.get_mut(slot) {
                    conn.phase = Phase::Closing;
                    conn.since = self.now;
                    conn.flags |= flag::SHUT_AFTER_FLUSH;
                    conn.assembly = None;
                }
                self.stats().count_close(reply);
                false
            }
        }
    }

    fn on_message(&mut self, slot: usize, payload: &[u8], text: bool) {
        ShardStats::inc(&self.stats().messages_in);
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        if conn.has(flag::ECHO) {
            self.queue_frame(
                slot,
                if text { OpCode::Text } else { OpCode::Binary },
                payload,
            );
            ShardStats::inc(&self.stats().messages_out);
        } else {
            self.on_chat_message(slot, payload);
        }
    }

    // ----- chat -------------------------------------------------------------------------

    fn me(&self, slot: usize) -> Option<ConnId> {
        self.conns
            .get(slot)
            .map(|c| ConnId::local(self.id, slot as u32, c.gen))
    }

    fn on_chat_message(&mut self, slot: usize, json: &[u8]) {
        let parsed = proto::parse_client_message(json, self.shared.config.max_text_chars as usize);
        let now = self.now_ms64();
        let is_line = matches!(parsed, Ok(ClientMsg::Message { .. }));
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        match conn.rate.check(&self.rate_cfg, now, is_line) {
            RateVerdict::Allow => {}
            RateVerdict::Drop { notify } => {
                ShardStats::inc(&self.stats().rate_limited);
                if notify && is_line {
                    self.send_error(slot, ErrorCode::RateLimited);
                }
                return;
            }
            RateVerdict::Abuse => {
                ShardStats::inc(&self.stats().rate_limited);
                self.doom(slot, 1008);
                return;
            }
        }
        let msg = match parsed {
            Ok(m) => m,
            Err(code) => {
                self.send_error(slot, code);
                return;
            }
        };
        let Some(me) = self.me(slot) else { return };
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let state = conn.chat.phase;
        match msg {
            // `end_pair` does nothing unless the connection is paired.
            ClientMsg::Find { interests } => {
                self.end_pair(slot, true);
                let ticket = self.requeue(slot);
                self.outbox.to_matcher.push_back(MatchReq::Find {
                    user: me,
                    ticket,
                    interests,
                });
            }
            ClientMsg::Next => match state {
                ChatPhase::Waiting => self.send_json(slot, proto::write_waiting),
                ChatPhase::Idle | ChatPhase::Paired => {
                    self.end_pair(slot, true);
                    let ticket = self.requeue(slot);
                    self.outbox
                        .to_matcher
                        .push_back(MatchReq::Next { user: me, ticket });
                }
            },
            ClientMsg::Leave => match state {
                ChatPhase::Idle => {}
                ChatPhase::Waiting | ChatPhase::Paired => {
                    self.end_pair(slot, false);
                    if let Some(c) = self.conns.get_mut(slot) {
                        c.chat.phase = ChatPhase::Idle;
                    }
                    self.outbox
                        .to_matcher
                        .push_back(MatchReq::Leave { user: me });
                }
            },
            ClientMsg::Message { text } => {
                if state == ChatPhase::Paired {
                    self.relay(slot, |out| proto::write_message(out, &text));
                } else {
                    self.send_error(slot, ErrorCode::NotChatting);
                }
            }
            ClientMsg::Typing { active } => {
                if state == ChatPhase::Paired {
                    self.relay(slot, |out| proto::write_typing(out, active));
                }
            }
        }
    }

    /// Mark the connection as waiting under a new ticket and tell the client.
    fn requeue(&mut self, slot: usize) -> u32 {
        let Some(conn) = self.conns.get_mut(slot) else {
            return 0;
        };
        conn.chat.ticket = conn.chat.ticket.wrapping_add(1).max(1);
        conn.chat.phase = ChatPhase::Waiting;
        conn.chat.waiting_since = self.now;
        let ticket = conn.chat.ticket;
        // Always say `waiting` at once: PROTOCOL.md allows it before `paired`, and it saves a
        // round trip through the matchmaker.
        self.send_json(slot, proto::write_waiting);
        ticket
    }

    /// End this connection's pair from its side: the partner gets `partner_left` after every
    /// relay we sent it (same channel, FIFO). `avoid`: ended by `next`/`find`, so the two are
    /// not paired again for now (in a cluster, Redis is told before the partner is).
    fn end_pair(&mut self, slot: usize, avoid: bool) {
        let me = self.me(slot);
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.chat.phase != ChatPhase::Paired {
            return;
        }
        conn.chat.phase = ChatPhase::Idle;
        let (partner, epoch) = (conn.chat.partner, conn.chat.epoch);
        if avoid && self.cluster.is_some() {
            conn.flags |= flag::AVOIDS;
            if let Some(a) = me {
                self.outbox
                    .to_cluster
                    .push_back(ClusterMsg::Avoid { a, b: partner });
            }
        }
        self.send_partner_left(partner, epoch, avoid);
    }

    /// Is `to` a connection of this shard?
    fn is_here(&self, to: ConnId) -> bool {
        !to.is_remote() && to.shard == self.id
    }

    fn send_partner_left(&mut self, to: ConnId, epoch: u64, avoid: bool) {
        if self.is_here(to) {
            self.on_partner_left(to, epoch, avoid);
        } else {
            self.outbox
                .push_to(to, ShardMsg::PartnerLeft { to, epoch, avoid });
        }
    }

    /// Every pair with a partner on `node` is over (`node == 0`: on any other node, because
    /// our Redis link is gone). Tell our side; tell theirs too if the link still works, in
    /// case that node is alive and only lost messages.
    fn on_node_down(&mut self, node: u16) {
        let ended: Vec<(usize, ConnId, u64)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.phase == Phase::Open
                    && c.chat.phase == ChatPhase::Paired
                    && c.chat.partner.is_remote()
                    && (node == 0 || c.chat.partner.node == node)
            })
            .map(|(slot, c)| (slot, c.chat.partner, c.chat.epoch))
            .collect();
        for (slot, partner, epoch) in ended {
            if let Some(me) = self.me(slot) {
                self.on_partner_left(me, epoch, false);
            }
            if node != 0 {
                self.send_partner_left(partner, epoch, false);
            }
            ShardStats::inc(&self.stats().cluster_pairs_lost);
        }
    }

    /// The connection leaves the chat for good (closing): end its pair and tell the matchmaker.
    fn leave_chat(&mut self, slot: usize) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        if conn.has(flag::ECHO) || conn.phase == Phase::Handshake {
            return;
        }
        let asked = conn.chat.ticket != 0;
        let avoids = conn.has(flag::AVOIDS);
        let me = self.me(slot);
        self.end_pair(slot, false);
        if let (true, Some(user)) = (avoids, me) {
            self.outbox
                .to_cluster
                .push_back(ClusterMsg::ClearAvoid { user });
        }
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.chat = ChatState::new();
        }
        if let (true, Some(user)) = (asked, me) {
            self.outbox.to_matcher.push_back(MatchReq::Gone { user });
        }
    }

    /// The slot of `to` if it is still the same connection, open, and in pair `epoch`.
    fn paired_slot(&self, to: ConnId, epoch: u64) -> Option<usize> {
        let slot = to.slot as usize;
        let c = self.conns.get(slot)?;
        (c.gen == to.gen
            && c.phase == Phase::Open
            && c.chat.phase == ChatPhase::Paired
            && c.chat.epoch == epoch)
            .then_some(slot)
    }

    fn on_partner_left(&mut self, to: ConnId, epoch: u64, avoid: bool) {
        let Some(slot) = self.paired_slot(to, epoch) else {
            return;
        };
        let cluster = self.cluster.is_some();
        if let Some(c) = self.conns.get_mut(slot) {
            c.chat.phase = ChatPhase::Idle;
            if avoid && cluster {
                c.flags |= flag::AVOIDS;
            }
        }
        self.send_json(slot, proto::write_partner_left);
    }

    /// Is `id` on this shard, open, and waiting under `ticket`?
    fn waiting_slot(&self, id: ConnId, ticket: u32) -> Option<usize> {
        let slot = id.slot as usize;
        let c = self.conns.get(slot)?;
        (c.gen == id.gen
            && c.phase == Phase::Open
            && c.chat.phase == ChatPhase::Waiting
            && c.chat.ticket == ticket)
            .then_some(slot)
    }

    fn become_paired(&mut self, slot: usize, partner: ConnId, epoch: u64, common: &[String]) {
        let me = self.me(slot);
        if let Some(c) = self.conns.get_mut(slot) {
            // Paired here with someone else: its avoid relation in Redis ends. (The cluster
            // queue's pairing script ends it by itself.)
            if c.has(flag::AVOIDS) {
                c.flags &= !flag::AVOIDS;
                if epoch & CLUSTER_EPOCH == 0 {
                    if let Some(user) = me {
                        self.outbox
                            .to_cluster
                            .push_back(ClusterMsg::ClearAvoid { user });
                    }
                }
            }
            let waited = self.now.wrapping_sub(c.chat.waiting_since);
            self.shared.shards[usize::from(self.id)]
                .match_wait
                .observe(f64::from(waited) / 1000.0);
            c.chat.phase = ChatPhase::Paired;
            c.chat.partner = partner;
            c.chat.epoch = epoch;
        }
        self.send_json(slot, |out| proto::write_paired(out, common));
    }

    /// The matchmaker paired our `a` with `b`. Tell `a`, then forward `Paired` to `b` through
    /// this shard, so it reaches `b`'s shard before any relay from `a`.
    fn on_pair_made(&mut self, p: Pairing<ConnId>) {
        let live = self.waiting_slot(p.a, p.a_ticket);
        if let Some(slot) = live {
            self.become_paired(slot, p.b, p.epoch, &p.common);
        }
        let (b, a, epoch) = (p.b, p.a, p.epoch);
        if self.is_here(b) {
            self.on_paired(b, p.b_ticket, a, epoch, &p.common);
        } else {
            self.outbox.push_to(
                b,
                ShardMsg::Paired {
                    to: b,
                    ticket: p.b_ticket,
                    partner: a,
                    epoch,
                    common: p.common,
                },
            );
        }
        if live.is_none() {
            // `a` is gone or asked for something else meanwhile: `b` gets partner_left.
            self.send_partner_left(b, epoch, false);
        }
    }

    fn on_paired(
        &mut self,
        to: ConnId,
        ticket: u32,
        partner: ConnId,
        epoch: u64,
        common: &[String],
    ) {
        match self.waiting_slot(to, ticket) {
            Some(slot) => {
                self.become_paired(slot, partner, epoch, common);
                if partner.is_remote() {
                    // Claimed from the cluster queue by another node: the matchmaker still
                    // lists it as queued there.
                    self.outbox.to_matcher.push_back(MatchReq::Claimed {
                        user: to,
                        ticket,
                        partner,
                        epoch,
                    });
                }
            }
            // Stale for our side: the other side is told, the matchmaker already knows.
            None => self.send_partner_left(partner, epoch, false),
        }
    }

    /// Send a server message to this connection's partner: encoded once, then either queued
    /// directly (same shard) or boxed for the partner's shard or node.
    fn relay(&mut self, slot: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        let (partner, epoch) = (conn.chat.partner, conn.chat.epoch);
        self.json.clear();
        write(&mut self.json);
        self.frame.clear();
        ws::write_frame(&mut self.frame, OpCode::Text, &self.json);
        if self.is_here(partner) {
            if let Some(pslot) = self.paired_slot(partner, epoch) {
                self.queue_built_frame(pslot);
                ShardStats::inc(&self.stats().relayed_local);
                ShardStats::inc(&self.stats().messages_out);
            }
        } else {
            let frame = self.frame.as_slice().into();
            self.outbox.push_to(
                partner,
                ShardMsg::Relay {
                    to: partner,
                    epoch,
                    frame,
                },
            );
            let path = if partner.is_remote() {
                &self.stats().relayed_cluster
            } else {
                &self.stats().relayed_cross
            };
            ShardStats::inc(path);
        }
    }

    fn send_json(&mut self, slot: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.json.clear();
        write(&mut self.json);
        self.frame.clear();
        ws::write_frame(&mut self.frame, OpCode::Text, &self.json);
        self.queue_built_frame(slot);
        ShardStats::inc(&self.stats().messages_out);
    }

    fn send_error(&mut self, slot: usize, code: ErrorCode) {
        self.send_json(slot, |out| proto::write_error(out, code));
    }

    // ----- writing ----------------------------------------------------------------------

    /// Encode one unfragmented frame and queue it.
    fn queue_frame(&mut self, slot: usize, opcode: OpCode, payload: &[u8]) {
        self.frame.clear();
        ws::write_frame(&mut self.frame, opcode, payload);
        self.queue_built_frame(slot);
    }

    /// Queue the frame already built in the shard's scratch buffer.
    fn queue_built_frame(&mut self, slot: usize) {
        let frame = std::mem::take(&mut self.frame);
        self.queue(slot, &frame);
        self.frame = frame;
    }

    /// Append bytes to a connection's output, enforcing the outbound cap. Never closes from
    /// here (closing inside a send is how uWebSockets issue #1056 crashed): an over-cap connection is doomed and closed at the
    /// end of the turn.
    fn queue(&mut self, slot: usize, bytes: &[u8]) {
        let cap = if self.conns.get(slot).is_some_and(|c| c.has(flag::ECHO)) {
            self.shared.config.echo_outbound_cap()
        } else {
            self.shared.config.outbound_cap_bytes as usize
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.has(flag::DOOMED | flag::WRITE_DEAD) {
            return;
        }
        if conn.pending_out() + bytes.len() > cap && conn.phase == Phase::Open {
            conn.flags |= flag::SLOW;
            self.doom(slot, 1008);
            return;
        }
        if conn.out.capacity() == 0 {
            if let Some(buf) = self.pool.pop() {
                conn.out = buf;
            }
        }
        conn.out.extend_from_slice(bytes);
        self.mark_dirty(slot);
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            if !c.has(flag::DIRTY) {
                c.flags |= flag::DIRTY;
                self.dirty.push(slot);
            }
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            if let Some(c) = self.conns.get_mut(slot) {
                c.flags &= !flag::DIRTY;
            }
            self.flush(slot);
        }
        dirty.clear();
        // Keep the allocation unless the list was filled during this flush.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// The peer reset or stopped reading for good. Its last messages may still sit unread in
    /// the receive queue (Linux keeps them readable after an RST), and they must reach the
    /// partner before `partner_left`: drop our output, read what is left (the read path then
    /// meets the error or EOF and closes), and give up after the linger time.
    fn write_failed(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.has(flag::WRITE_DEAD) {
            return;
        }
        conn.flags |= flag::WRITE_DEAD;
        conn.since = self.now;
        conn.out = Vec::new();
        conn.out_pos = 0;
        self.ready_again.push(slot);
    }

    /// Write pending output (one `write` for everything queued this turn), then apply the
    /// phase change that waited for it.
    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let mut written = 0u64;
        while conn.out_pos < conn.out.len() {
            let chunk = conn.out.get(conn.out_pos..).unwrap_or(&[]);
            match conn.sock.write(chunk) {
                Ok(0) => {
                    self.write_failed(slot);
                    return;
                }
                Ok(n) => {
                    conn.out_pos += n;
                    written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.flags &= !flag::WRITABLE;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.write_failed(slot);
                    return;
                }
            }
        }
        if written > 0 {
            ShardStats::add(&self.stats().bytes_out, written);
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.out_pos < conn.out.len() {
            // Compact lazily: only when the sent prefix is most of the buffer.
            if conn.out_pos > conn.out.len() / 2 {
                conn.out.drain(..conn.out_pos);
                conn.out_pos = 0;
            }
            return;
        }
        let mut buf = std::mem::take(&mut conn.out);
        conn.out_pos = 0;
        if conn.has(flag::SHUT_AFTER_FLUSH) {
            conn.flags &= !flag::SHUT_AFTER_FLUSH;
            let _ = conn.sock.shutdown(Shutdown::Write);
            conn.phase = Phase::Linger;
            conn.since = self.now;
        }
        if buf.capacity() <= POOL_BUF_MAX && self.pool.len() < POOL_MAX {
            buf.clear();
            self.pool.push(buf);
        }
    }

    // ----- closing ----------------------------------------------------------------------

    /// Close at the end of this turn (never from inside a send or a decode).
    fn doom(&mut self, slot: usize, code: u16) {
        if let Some(c) = self.conns.get_mut(slot) {
            if !c.has(flag::DOOMED) {
                c.flags |= flag::DOOMED;
                self.doomed.push((slot, code));
            }
        }
    }

    fn process_doomed(&mut self) {
        while let Some((slot, code)) = self.doomed.pop() {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            c.flags &= !flag::DOOMED;
            let slow = c.has(flag::SLOW);
            if slow {
                ShardStats::inc(&self.stats().slow_consumer_closes);
            }
            self.begin_close(
                slot,
                code,
                if slow {
                    "not reading"
                } else {
                    "policy violation"
                },
                true,
            );
        }
    }

    /// Fail the connection after a protocol error: close frame, then shut down.
    fn fail(&mut self, slot: usize, code: u16) {
        let reason = match code {
            1002 => "protocol error",
            1003 => "binary messages are not supported",
            1007 => "invalid UTF-8",
            1009 => "message too big",
            _ => "",
        };
        self.begin_close(slot, code, reason, true);
    }

    /// Send a close frame. `shut`: shut the write side once it is sent (errors); otherwise
    /// wait for the peer's close (a graceful close such as shutdown's 1001).
    fn begin_close(&mut self, slot: usize, code: u16, reason: &str, shut: bool) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        self.leave_chat(slot);
        self.stats().count_close(code);
        self.frame.clear();
        ws::write_close(&mut self.frame, code, reason);
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.phase = Phase::Closing;
        conn.since = self.now;
        conn.assembly = None;
        if shut {
            conn.flags |= flag::SHUT_AFTER_FLUSH;
        }
        // The close frame goes out even past the outbound cap (the cap guards data, not this).
        if !conn.has(flag::WRITE_DEAD) {
            conn.out.extend_from_slice(&self.frame);
        }
        self.mark_dirty(slot);
    }

    /// Drop the connection now: deregister, close the socket, and tell its partner.
    fn close_now(&mut self, slot: usize) {
        if !self.conns.contains(slot) {
            return;
        }
        if self.conns.get(slot).is_some_and(|c| c.phase == Phase::Open) {
            self.leave_chat(slot);
        }
        let Some(mut conn) = self.conns.try_remove(slot) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.sock);
        if conn.has(flag::COUNTED_WS) {
            self.shared.ws_open.fetch_sub(1, Ordering::Relaxed);
        }
        if conn.has(flag::COUNTED_ONLINE) {
            self.shared.online.fetch_sub(1, Ordering::Relaxed);
        }
        ShardStats::inc(&self.stats().closed);
        self.stats().open_sockets.fetch_sub(1, Ordering::Relaxed);
    }

    // ----- timers -----------------------------------------------------------------------

    fn sweep(&mut self) {
        let mut actions: Vec<(usize, u8)> = Vec::new();
        const TIMEOUT_408: u8 = 1;
        const PING: u8 = 2;
        const DEAD_PEER: u8 = 3;
        const DROP: u8 = 4;
        let mut queued = 0u64;
        // While draining, clients get the whole grace period to answer our close.
        let drain_wait = if self.draining {
            ms(self.shared.config.grace_period).max(CLOSE_WAIT_MS)
        } else {
            CLOSE_WAIT_MS
        };
        let close_wait = |c: &Conn| {
            if c.has(flag::SLOW) {
                SLOW_CLOSE_MS
            } else {
                drain_wait
            }
        };
        for (slot, c) in self.conns.iter() {
            queued += c.pending_out() as u64;
            let since = self.now.wrapping_sub(c.since);
            let act = match c.phase {
                _ if c.has(flag::WRITE_DEAD) && since >= LINGER_MS => DROP,
                Phase::Handshake if since >= self.handshake_ms => TIMEOUT_408,
                Phase::Open if c.has(flag::PING_SENT) && since >= self.pong_ms => DEAD_PEER,
                Phase::Open
                    if !c.has(flag::PING_SENT)
                        && self.now.wrapping_sub(c.last_rx) >= self.idle_ping_ms =>
                {
                    PING
                }
                Phase::HttpReply if since >= HTTP_REPLY_MS => DROP,
                Phase::Closing if since >= close_wait(c) => DROP,
                Phase::Linger if since >= LINGER_MS => DROP,
                _ => 0,
            };
            if act != 0 {
                actions.push((slot, act));
            }
        }
        self.stats()
            .out_queue_bytes
            .store(queued, Ordering::Relaxed);
        for (slot, act) in actions {
            match act {
                TIMEOUT_408 => {
                    ShardStats::inc(&self.stats().handshake_timeouts);
                    let reply = http::timeout_response();
                    self.stats().count_http(&reply);
                    if let Some(c) = self.conns.get_mut(slot) {
                        c.phase = Phase::HttpReply;
                        c.since = self.now;
                        c.flags |= flag::SHUT_AFTER_FLUSH;
                        c.assembly = None;
                    }
                    self.queue(slot, &reply);
                }
                PING => {
                    self.queue_frame(slot, OpCode::Ping, b"");
                    if let Some(c) = self.conns.get_mut(slot) {
                        c.flags |= flag::PING_SENT;
                        c.since = self.now;
                    }
                }
                DEAD_PEER => {
                    ShardStats::inc(&self.stats().idle_timeouts);
                    self.begin_close(slot, 1001, "no response to ping", true);
                    self.flush(slot);
                    self.close_now(slot);
                }
                _ => {
                    self.flush(slot);
                    self.close_now(slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conn_size() {
        eprintln!("Conn = {} bytes", std::mem::size_of::<super::Conn>());
    }
}
