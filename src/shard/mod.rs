//! One event loop (shard): a `mio::Poll`, a slab of connections, one read buffer shared by all
//! of them, and the inbox other threads write to. The only code that registers sockets and
//! calls `poll`, `read` and `write`. What a connection does with its bytes is in [`conn`]
//! (its phase machine) and [`crate::chat::session`] (the chat rules); the loop only moves
//! bytes, messages and time.
//!
//! A loop turn: poll → read every readable connection (decode, act) → drain the inbox →
//! continue connections that hit their read budget → deliver what connections of this shard
//! sent each other → close what was doomed → send the cross-thread outbox (one wake per
//! destination) → flush every connection with pending output (one `write` for all frames
//! queued this turn) → timer sweep when due.
pub mod conn;
pub mod core;
pub mod stats;

use self::core::{Core, Delivery, LocalQueue};
use crate::chat::matchmaker::Pairing;
use crate::chat::session::{self, ChatPhase};
use crate::http;
use crate::server::Shared;
use crate::ws::close;
use crate::xshard::{
    Accepted, ClusterSender, ConnId, Inbox, MatchReq, Peer, PeerMsg, ShardHandle, ShardMsg,
};
use conn::{flag, Conn, Phase};
use crossbeam_channel::Sender;
use log::{debug, error};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
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
/// How often shard 0 may give free heap back to the system, and the least free heap worth it.
const TRIM_EVERY_MS: u32 = 1000;
const TRIM_MIN_FREE: usize = 4 << 20;
/// Relay frames between pairs of this shard delivered mid-turn once this many are waiting.
const LOCAL_FLUSH_BYTES: usize = 1 << 20;
/// The timer sweep runs every tenth of the shortest configured timeout, within these bounds:
/// a deadline passes at most a tenth (and at most a second) late, and a sweep, which looks at
/// every connection, runs once a second with the default timeouts.
const SWEEP_MIN_MS: u32 = 100;
const SWEEP_MAX_MS: u32 = 1_000;
/// How long to read-and-discard after shutting down our write side.
const LINGER_MS: u32 = 2_000;
/// How long to wait for the peer's close frame after sending ours.
const CLOSE_WAIT_MS: u32 = 5_000;
/// How long a client closed for not reading may take to read its close frame.
const SLOW_CLOSE_MS: u32 = 1_000;
/// How long a non-101 response may take to be read.
const HTTP_REPLY_MS: u32 = 5_000;

/// The most a connection may take in the slab: 136 bytes in a release build (mio's socket
/// carries a selector id in debug builds, 12 bytes more).
const CONN_MAX: usize = if cfg!(debug_assertions) { 152 } else { 136 };
const _: () = assert!(
    std::mem::size_of::<Conn>() <= CONN_MAX,
    "Conn grew: idle connections must stay small"
);

/// What a timer sweep does to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    /// The request head did not arrive in time: 408, then close.
    Handshake,
    /// Silent for the idle time: ping it.
    Ping,
    /// No answer to the ping: close 1001 and drop.
    DeadPeer,
    /// A fragmented message was not completed in time: close 1008.
    Message,
    /// Output unsent with no progress for the stall time: drop with a reset.
    Stall,
    /// A deadline of a closing phase passed: drop.
    Drop,
}

/// A connection watched for a write stall: how much of its output has left the kernel's send
/// queue since the watch began, and when that last grew.
struct Stall {
    gen: u32,
    /// The kernel's send queue when the watch began, plus every byte written since.
    sent: u64,
    /// `sent` minus the queue at the last check: bytes the peer has acknowledged.
    acked: u64,
    since: u32,
}

pub struct Shard {
    poll: Poll,
    conns: Slab<Conn>,
    next_gen: u32,
    read_buf: Box<[u8]>,
    ready_again: Vec<usize>,
    inbox: Inbox,
    peers: Vec<ShardHandle>,
    matcher: Sender<MatchReq>,
    /// The Redis bridge, in cluster mode.
    cluster: Option<ClusterSender>,
    /// What connections touch while they handle input.
    core: Core,
    /// The batch of local messages being delivered (swapped with `core.local`).
    delivering: LocalQueue,
    epoch_start: Instant,
    last_sweep: u32,
    sweeps: u32,
    /// Connections watched for a write stall.
    stalls: HashMap<usize, Stall>,
    /// When shard 0 last looked for free heap to give back.
    last_trim: u32,
}

impl Shard {
    pub fn new(
        id: u16,
        poll: Poll,
        inbox: Inbox,
        peers: Vec<ShardHandle>,
        matcher: Sender<MatchReq>,
        cluster: Option<ClusterSender>,
        shared: Arc<Shared>,
    ) -> Shard {
        // The shard's share of every socket the server may hold, reserved once: the table never
        // moves (a growing one would leave its old copies resident), and the kernel backs
        // only the pages of slots in use.
        let share = shared.config.max_sockets().div_ceil(peers.len().max(1)) + 64;
        let mut core = Core::new(id, peers.len(), shared);
        let l = &core.limits;
        let shortest = [
            l.handshake_ms,
            l.idle_ping_ms,
            l.pong_ms,
            l.message_ms,
            l.stall_ms / 4,
        ]
        .into_iter()
        .min()
        .unwrap_or(SWEEP_MIN_MS);
        core.limits.sweep_ms = (shortest / 10).clamp(SWEEP_MIN_MS, SWEEP_MAX_MS);
        Shard {
            poll,
            conns: Slab::with_capacity(share),
            next_gen: 1,
            read_buf: vec![0u8; READ_BUF_BYTES].into_boxed_slice(),
            ready_again: Vec::new(),
            inbox,
            peers,
            matcher,
            cluster,
            core,
            delivering: LocalQueue::default(),
            epoch_start: Instant::now(),
            last_sweep: 0,
            sweeps: 0,
            stalls: HashMap::new(),
            last_trim: 0,
        }
    }

    fn stats(&self) -> &ShardStats {
        self.core.stats()
    }

    fn tick(&mut self) {
        self.core.now_ms = self.epoch_start.elapsed().as_millis() as u64;
        self.core.now = self.core.now_ms as u32;
    }

    fn elapsed(&self, since: u32) -> u32 {
        self.core.now.wrapping_sub(since)
    }

    /// The loop. Returns a non-zero exit code only on a fatal error.
    pub fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if !self.ready_again.is_empty() {
                Duration::ZERO
            } else if !self.core.outbox.is_empty() {
                Duration::from_millis(1)
            } else {
                let left = self
                    .core
                    .limits
                    .sweep_ms
                    .saturating_sub(self.elapsed(self.last_sweep));
                Duration::from_millis(u64::from(left.max(1)))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("shard {}: poll failed: {e}", self.core.id);
                return 1;
            }
            self.tick();
            let turn_start = Instant::now();
            ShardStats::inc(&self.stats().loop_turns);

            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER_TOKEN {
                    woken = true;
                    continue;
                }
                let slot = ev.token().0;
                if ev.is_writable() {
                    if let Some(c) = self.conns.get_mut(slot) {
                        c.io.flags |= flag::WRITABLE;
                        if c.io.pending_out() > 0 {
                            c.io.mark_dirty(slot, &mut self.core);
                        }
                    }
                }
                let hup = ev.is_read_closed() || ev.is_error();
                if hup {
                    if let Some(c) = self.conns.get_mut(slot) {
                        c.io.flags |= flag::HUP_SEEN;
                    }
                }
                if ev.is_readable() || hup {
                    self.on_readable(slot);
                    if self.core.outbox.is_empty() {
                        // Nothing waits for another thread: what this client's input caused
                        // goes out now, as uWebSockets uncorks after each socket, so the
                        // partners' answers arrive while the rest of the turn is read (and are
                        // read together with the next ones) instead of all at its end.
                        self.settle();
                        self.flush_dirty();
                    } else {
                        self.settle_if_large();
                    }
                }
            }
            if woken {
                ShardStats::inc(&self.stats().wakeups);
            }
            self.drain_inbox();
            for slot in std::mem::take(&mut self.ready_again) {
                self.on_readable(slot);
                self.settle_if_large();
            }
            self.drain_inbox();
            // Other threads first, sockets second: a client that reads `waiting` knows its
            // request is already in the matchmaker's queue, ahead of anything another client
            // sends after that.
            self.settle();
            if self.flush_outbox().is_err() {
                return 1;
            }
            self.flush_dirty();
            self.settle();
            if self.flush_outbox().is_err() {
                return 1;
            }
            if self.elapsed(self.last_sweep) >= self.core.limits.sweep_ms {
                self.last_sweep = self.core.now;
                self.sweep();
                self.settle();
                self.flush_dirty();
            }
            self.stats()
                .loop_time
                .observe(turn_start.elapsed().as_secs_f64());
        }
    }

    /// Send what the turn queued for other threads. `Err` when one of them died (fatal).
    fn flush_outbox(&mut self) -> Result<(), ()> {
        if self.core.outbox.is_empty() {
            self.relieve();
            return Ok(());
        }
        match self
            .core
            .outbox
            .flush(&self.peers, &self.matcher, self.cluster.as_ref())
        {
            Ok(_) => {
                if !self.core.outbox.is_empty() {
                    ShardStats::inc(&self.stats().outbox_full);
                }
                self.relieve();
                Ok(())
            }
            Err(_) => {
                error!("shard {}: another thread is gone", self.core.id);
                Err(())
            }
        }
    }

    /// Read paused clients again once the queues have drained to half their bounds; close
    /// them (1013, partner_left for their partners) if the queues stay full too long.
    fn relieve(&mut self) {
        if self.core.paused.is_empty() {
            self.core.congested_since = None;
            return;
        }
        let now = self.core.now;
        if !self.core.outbox.busy() {
            self.core.congested_since = None;
            for (slot, gen) in std::mem::take(&mut self.core.paused) {
                if let Some(c) = self.conns.get_mut(slot).filter(|c| c.io.gen == gen) {
                    c.io.flags &= !flag::PAUSED;
                    // The kernel will not report the data that waited again: read it now.
                    self.ready_again.push(slot);
                }
            }
            return;
        }
        let since = *self.core.congested_since.get_or_insert(now);
        if now.wrapping_sub(since) < self.core.limits.queue_full_ms {
            return;
        }
        self.core.congested_since = None;
        for (slot, gen) in std::mem::take(&mut self.core.paused) {
            let Some(c) = self.conns.get_mut(slot).filter(|c| c.io.gen == gen) else {
                continue;
            };
            c.io.flags &= !flag::PAUSED;
            ShardStats::inc(&self.core.stats().backpressure_closes);
            c.begin_close(
                close::TRY_AGAIN_LATER,
                "server busy",
                true,
                slot,
                &mut self.core,
            );
            c.io.flags |= flag::SHORT_CLOSE;
        }
    }

    // ----- messages ---------------------------------------------------------------------

    fn drain_inbox(&mut self) {
        if let Some(me) = self.peers.get(usize::from(self.core.id)) {
            me.begin_drain();
        }
        while let Ok(msg) = self.inbox.try_recv() {
            ShardStats::inc(&self.stats().xshard_received);
            if let Some(me) = self.peers.get(usize::from(self.core.id)) {
                me.taken(msg.weight());
            }
            match msg {
                ShardMsg::NewConn(a) => self.adopt(a),
                ShardMsg::PairMade(p) => self.pair_made(p),
                ShardMsg::Peer(Peer { to, msg }) => self.deliver(to, msg),
                ShardMsg::NodeDown { node } => {
                    for (slot, c) in self.conns.iter_mut() {
                        c.on_node_down(node, slot, &mut self.core);
                    }
                }
                ShardMsg::Drain => self.start_drain(),
            }
        }
    }

    fn deliver(&mut self, to: ConnId, msg: PeerMsg) {
        match self.conns.get_mut(to.slot as usize) {
            Some(c) if c.io.gen == to.gen => c.on_peer(msg, to.slot as usize, &mut self.core),
            _ => session::absent(msg, &mut self.core),
        }
    }

    /// The matchmaker paired our `a` with `b`: `a` takes it (if still waiting for it), then
    /// `Paired` goes to `b` from here, ahead of any relay from `a`.
    fn pair_made(&mut self, p: Pairing<ConnId>) {
        let live = match self.conns.get_mut(p.a.slot as usize) {
            Some(c) if c.io.gen == p.a.gen => c.take_pairing(&p, p.a.slot as usize, &mut self.core),
            _ => false,
        };
        session::forward_pairing(p, live, &mut self.core);
    }

    /// Deliver what connections of this shard sent each other during the last steps, and
    /// close what was doomed, until nothing is left (a delivery may cause more of both).
    fn settle(&mut self) {
        loop {
            self.process_doomed();
            if self.core.local.is_empty() {
                return;
            }
            std::mem::swap(&mut self.core.local, &mut self.delivering);
            while let Some(d) = self.delivering.pop() {
                match d {
                    Delivery::Frame { to, epoch, frame } => {
                        let slot = to.slot as usize;
                        match self.conns.get_mut(slot) {
                            Some(c) if c.io.gen == to.gen => {
                                c.on_relay(epoch, frame, slot, &mut self.core)
                            }
                            _ => {}
                        }
                    }
                    Delivery::Peer(Peer { to, msg }) => self.deliver(to, msg),
                }
            }
            self.delivering.clear();
        }
    }

    /// A turn may read up to a thousand sockets, each up to its read budget: under a flood
    /// between pairs of this shard the local queue would grow to hundreds of MiB before the
    /// turn's settle. Delivering it once it is about 1 MiB bounds it (the recipients' own
    /// outbound caps then bound the rest).
    fn settle_if_large(&mut self) {
        if self.core.local.bytes() >= LOCAL_FLUSH_BYTES {
            self.settle();
        }
    }

    fn adopt(&mut self, a: Accepted) {
        let Accepted {
            mut sock,
            via_proxy,
            key,
            refused,
        } = a;
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            debug!("register failed: {e}");
            let shared = &self.core.shared;
            shared.sockets.fetch_sub(1, Ordering::Relaxed);
            if key != 0 {
                shared.admission.release(key, shared.now_ms());
            }
            return;
        }
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let mut conn = Conn::new(sock, gen, &self.core);
        conn.io.admit_key = key;
        if via_proxy {
            conn.io.flags |= flag::VIA_PROXY;
        }
        if let Some(r) = refused {
            conn.io.refuse(r);
        }
        entry.insert(conn);
        ShardStats::inc(&self.stats().accepted);
        ShardStats::inc(&self.stats().open_sockets);
    }

    fn start_drain(&mut self) {
        self.core.draining = true;
        for (slot, c) in self.conns.iter_mut() {
            c.begin_close(
                close::GOING_AWAY,
                "server shutting down",
                false,
                slot,
                &mut self.core,
            );
        }
    }

    // ----- reading ----------------------------------------------------------------------

    fn on_readable(&mut self, slot: usize) {
        let mut reads = 0;
        while let Some(conn) = self.conns.get_mut(slot) {
            if conn.io.has(flag::DOOMED | flag::PAUSED) {
                break;
            }
            // After a hang-up or a failed write, read on to the EOF or error that ends the
            // connection, even past the read budget of an earlier turn.
            let hup = conn.io.has(flag::HUP_SEEN | flag::WRITE_DEAD);
            match conn.io.sock.read(&mut self.read_buf) {
                Ok(0) => {
                    // Send what we can (e.g. the close reply) before the socket goes.
                    self.flush(slot);
                    self.close_now(slot);
                    break;
                }
                Ok(n) => {
                    conn.io.last_rx = self.core.now;
                    conn.io.flags &= !flag::PING_SENT;
                    ShardStats::add(&self.core.stats().bytes_in, n as u64);
                    if let Some(data) = self.read_buf.get_mut(..n) {
                        conn.on_bytes(data, slot, &mut self.core);
                    }
                    if conn.io.has(flag::DROP) {
                        // Refused without an answer (far over a per-address limit).
                        self.close_now(slot);
                        break;
                    }
                    reads += 1;
                    // Linux reports new data on an edge-triggered socket at every arrival, so a
                    // short read means the socket is drained: skip the read that would only
                    // say WouldBlock (one syscall less per message). After a hang-up, read on
                    // to see the EOF.
                    if n < self.read_buf.len() && !hup {
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
    }

    // ----- writing ----------------------------------------------------------------------

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.core.dirty);
        for &slot in &dirty {
            if let Some(c) = self.conns.get_mut(slot) {
                c.io.flags &= !flag::DIRTY;
            }
            self.flush(slot);
        }
        dirty.clear();
        // Keep the allocation unless the list was filled during this flush.
        if self.core.dirty.is_empty() {
            self.core.dirty = dirty;
        }
    }

    /// The peer reset or stopped reading for good. Its last messages may still sit unread in
    /// the receive queue (Linux keeps them readable after an RST), and they must reach the
    /// partner before `partner_left`: drop our output, read what is left (the read path then
    /// meets the error or EOF and closes), and give up after the linger time.
    fn write_failed(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if c.io.has(flag::WRITE_DEAD) {
            return;
        }
        c.io.flags |= flag::WRITE_DEAD;
        c.io.since = self.core.now;
        self.core.queued = self.core.queued.saturating_sub(c.io.pending_out() as u64);
        c.io.out = None;
        self.ready_again.push(slot);
    }

    /// Write pending output (one `write` for everything queued this turn), then apply the
    /// phase change that waited for it.
    fn flush(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let io = &mut c.io;
        let watched = io.has(flag::STALL_WATCH);
        let mut written = 0u64;
        let mut blocked = false;
        if let Some(out) = io.out.as_deref_mut() {
            while out.pos < out.buf.len() {
                let chunk = out.buf.get(out.pos..).unwrap_or(&[]);
                match io.sock.write(chunk) {
                    Ok(0) => return self.write_failed(slot),
                    Ok(n) => {
                        out.pos += n;
                        written += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.write_failed(slot),
                }
            }
            if out.pos < out.buf.len() && out.pos > out.buf.len() / 2 {
                // Compact lazily: only when the sent prefix is most of the buffer.
                out.buf.drain(..out.pos);
                out.pos = 0;
            }
        }
        if blocked {
            io.flags &= !flag::WRITABLE;
        }
        if written > 0 {
            ShardStats::add(&self.core.stats().bytes_out, written);
            self.core.queued = self.core.queued.saturating_sub(written);
            io.flags |= flag::KERNEL_PENDING;
            if watched {
                if let Some(st) = self.stalls.get_mut(&slot) {
                    st.sent += written;
                }
            }
        }
        if io.pending_out() > 0 {
            return;
        }
        if let Some(done) = io.out.take() {
            self.core.recycle(done);
        }
        if io.has(flag::SHUT_AFTER_FLUSH) {
            io.flags &= !flag::SHUT_AFTER_FLUSH;
            let _ = io.sock.shutdown(Shutdown::Write);
            io.phase = Phase::Linger;
            io.since = self.core.now;
        }
    }

    // ----- closing ----------------------------------------------------------------------

    fn process_doomed(&mut self) {
        while let Some((slot, code)) = self.core.doomed.pop() {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            c.io.flags &= !flag::DOOMED;
            c.io.flags |= flag::SHORT_CLOSE;
            let slow = c.io.has(flag::SLOW);
            if slow {
                // It does not read: its close frame gets a second, then a reset frees the
                // kernel's buffers.
                c.io.flags |= flag::RESET_ON_CLOSE;
                ShardStats::inc(&self.core.stats().slow_consumer_closes);
            }
            let reason = if slow {
                "not reading"
            } else {
                "policy violation"
            };
            c.begin_close(code, reason, true, slot, &mut self.core);
        }
    }

    /// Drop the connection now: deregister, close the socket, and tell its partner.
    fn close_now(&mut self, slot: usize) {
        let Some(mut c) = self.conns.try_remove(slot) else {
            return;
        };
        if matches!(c.io.phase, Phase::Open(_)) {
            c.leave_chat(slot, &mut self.core);
        }
        let _ = self.poll.registry().deregister(&mut c.io.sock);
        if c.io.has(flag::RESET_ON_CLOSE) {
            let _ = crate::sys::set_linger_zero(c.io.sock.as_raw_fd());
        }
        if c.io.has(flag::STALL_WATCH) {
            self.stalls.remove(&slot);
        }
        self.core.queued = self.core.queued.saturating_sub(c.io.pending_out() as u64);
        let shared = &self.core.shared;
        shared.sockets.fetch_sub(1, Ordering::Relaxed);
        if c.io.admit_key != 0 {
            shared.admission.release(c.io.admit_key, shared.now_ms());
        }
        if c.io.has(flag::COUNTED_WS) {
            shared.ws_open.fetch_sub(1, Ordering::Relaxed);
        }
        if c.io.has(flag::COUNTED_ONLINE) {
            shared.online.fetch_sub(1, Ordering::Relaxed);
        }
        ShardStats::inc(&self.stats().closed);
        self.stats().open_sockets.fetch_sub(1, Ordering::Relaxed);
    }

    // ----- timers -----------------------------------------------------------------------

    /// The deadline that has passed for `c`, if any.
    fn timeout(&self, c: &Conn) -> Option<Timeout> {
        let limits = &self.core.limits;
        let io = &c.io;
        let since = self.elapsed(io.since);
        let close_wait = if io.has(flag::SLOW | flag::SHORT_CLOSE) {
            SLOW_CLOSE_MS
        } else if self.core.draining {
            // While draining, clients get the whole grace period to answer our close.
            limits.drain_close_ms.max(CLOSE_WAIT_MS)
        } else {
            CLOSE_WAIT_MS
        };
        let pinged = io.has(flag::PING_SENT);
        Some(match io.phase {
            _ if io.has(flag::WRITE_DEAD) && since >= LINGER_MS => Timeout::Drop,
            Phase::Handshake if since >= limits.handshake_ms => Timeout::Handshake,
            Phase::Open(_)
                if io
                    .assembly
                    .as_ref()
                    .is_some_and(|a| self.elapsed(a.started) >= limits.message_ms) =>
            {
                Timeout::Message
            }
            Phase::Open(_) if pinged && since >= limits.pong_ms => Timeout::DeadPeer,
            Phase::Open(_) if !pinged && self.elapsed(io.last_rx) >= limits.idle_ping_ms => {
                Timeout::Ping
            }
            Phase::HttpReply if since >= HTTP_REPLY_MS => Timeout::Drop,
            Phase::Closing(_) if since >= close_wait => Timeout::Drop,
            Phase::Linger if since >= LINGER_MS => Timeout::Drop,
            _ => return None,
        })
    }

    fn sweep(&mut self) {
        self.sweeps = self.sweeps.wrapping_add(1);
        // One shard is enough (the trim covers every thread's arena), and at most once a
        // second, as it locks each arena while it walks it.
        if self.core.id == 0 && self.elapsed(self.last_trim) >= TRIM_EVERY_MS {
            self.last_trim = self.core.now;
            crate::sys::trim_heap(TRIM_MIN_FREE);
        }
        // Each connection with unsent output is checked for a stall every quarter of the
        // stall time (one system call each), spread over the sweeps by slot.
        let every = (self.core.limits.stall_ms / 4 / self.core.limits.sweep_ms).max(1) as usize;
        let turn = self.sweeps as usize % every;
        let mut due: Vec<(usize, Timeout)> = Vec::new();
        let mut watch: Vec<usize> = Vec::new();
        let mut queued = 0u64;
        let mut paired = 0u64;
        for (slot, c) in self.conns.iter() {
            let pending = c.io.pending_out();
            queued += pending as u64;
            paired += u64::from(c.chat.phase() == ChatPhase::Paired);
            if let Some(t) = self.timeout(c) {
                due.push((slot, t));
            } else if (pending > 0 || c.io.has(flag::KERNEL_PENDING)) && slot % every == turn {
                watch.push(slot);
            }
        }
        self.stats()
            .out_queue_bytes
            .store(queued, Ordering::Relaxed);
        self.stats().paired_clients.store(paired, Ordering::Relaxed);
        for slot in watch {
            if self.stalled(slot) {
                due.push((slot, Timeout::Stall));
            }
        }
        for (slot, t) in due {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            let core = &mut self.core;
            match t {
                Timeout::Handshake => {
                    ShardStats::inc(&core.stats().handshake_timeouts);
                    let reply = http::timeout_response();
                    core.stats().count_http(&reply);
                    c.io.phase = Phase::HttpReply;
                    c.io.since = core.now;
                    c.io.flags |= flag::SHUT_AFTER_FLUSH;
                    c.io.assembly = None;
                    c.io.queue(&reply, slot, core);
                }
                Timeout::Ping => {
                    c.io.ping(slot, core);
                }
                Timeout::Message => {
                    ShardStats::inc(&core.stats().message_timeouts);
                    c.begin_close(
                        close::POLICY_VIOLATION,
                        "message not completed in time",
                        true,
                        slot,
                        core,
                    );
                    c.io.flags |= flag::SHORT_CLOSE;
                }
                Timeout::DeadPeer => {
                    ShardStats::inc(&core.stats().idle_timeouts);
                    c.begin_close(close::GOING_AWAY, "no response to ping", true, slot, core);
                    self.flush(slot);
                    self.close_now(slot);
                }
                Timeout::Stall => {
                    ShardStats::inc(&core.stats().write_stalls);
                    c.io.flags |= flag::RESET_ON_CLOSE;
                    self.close_now(slot);
                }
                Timeout::Drop => {
                    self.flush(slot);
                    self.close_now(slot);
                }
            }
        }
    }

    /// Has connection `slot` left output unsent, with no byte acknowledged by its peer, for
    /// the stall time? Starts, updates or ends its watch.
    fn stalled(&mut self, slot: usize) -> bool {
        let now = self.core.now;
        let Some(c) = self.conns.get_mut(slot) else {
            return false;
        };
        let Ok(queue) = crate::sys::unsent_bytes(c.io.sock.as_raw_fd()) else {
            return false;
        };
        let queue = u64::from(queue);
        if queue == 0 && c.io.pending_out() == 0 {
            c.io.flags &= !(flag::KERNEL_PENDING | flag::STALL_WATCH);
            self.stalls.remove(&slot);
            return false;
        }
        let gen = c.io.gen;
        let st = self.stalls.entry(slot).or_insert(Stall {
            gen,
            sent: queue,
            acked: 0,
            since: now,
        });
        if st.gen != gen || !c.io.has(flag::STALL_WATCH) {
            *st = Stall {
                gen,
                sent: queue,
                acked: 0,
                since: now,
            };
            c.io.flags |= flag::STALL_WATCH;
            return false;
        }
        let acked = st.sent.saturating_sub(queue);
        if acked > st.acked {
            st.acked = acked;
            st.since = now;
            return false;
        }
        now.wrapping_sub(st.since) >= self.core.limits.stall_ms
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conn_size() {
        use std::mem::size_of;
        eprintln!(
            "Conn = {} bytes (Io {}, Decoder {}, ChatSession {}, socket {} in Io)",
            size_of::<super::Conn>(),
            size_of::<super::conn::Io>(),
            size_of::<crate::ws::Decoder>(),
            size_of::<crate::chat::session::ChatSession>(),
            size_of::<mio::net::TcpStream>(),
        );
    }
}
