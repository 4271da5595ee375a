//! One client connection and its phase machine: HTTP request head → a reply (then linger) or
//! an upgrade to one of two open phases, the chat (`/ws`) or the echo (`/echo`) → closing →
//! linger. It reacts to bytes the shard read for it, with the shard's [`Core`] borrowed
//! alongside; it never reads, writes or registers the socket itself (the shard does).
//!
//! The parts of a connection are separate fields, so the codec's callback borrows only what
//! it needs: the decoder runs over the bytes while the event handler has the I/O state, the
//! chat session and the core.
use super::core::Core;
use super::stats::ShardStats;
use crate::chat::matchmaker::Pairing;
use crate::chat::session::{ChatSession, Reply, Route, Sink, Stat};
use crate::config::ProxyHeader;
use crate::http::proxy::{self, ProxyParse};
use crate::http::{self, Endpoint, HttpContext, HttpOutcome};
use crate::ws::{self, close, Decoder, Event, OpCode};
use crate::xshard::{ConnId, MatchReq, PeerMsg};
use log::debug;
use mio::net::TcpStream;
use std::sync::atomic::Ordering;

/// Unsent output that makes a client one of those closed when the output budget is spent.
const BACKLOG: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP request head.
    Handshake,
    /// A non-101 response is queued; then shut down the write side and linger.
    HttpReply,
    /// WebSocket open on this endpoint.
    Open(Endpoint),
    /// We queued a close frame. With `SHUT_AFTER_FLUSH` we shut down the write side once it is
    /// sent; without it we keep decoding until the peer's close arrives (or the deadline).
    Closing(Endpoint),
    /// Write side shut down: read and discard until EOF or the linger deadline, so the peer
    /// reads our last bytes instead of a reset.
    Linger,
}

/// Flag bits in [`Io::flags`].
pub mod flag {
    // Bits 0 and 11-31 of the old 16-bit set were freed or are new: keep them dense.
    /// The kernel accepted our last write without `WouldBlock`.
    pub const WRITABLE: u32 = 1 << 1;
    /// On the shard's dirty list (output to flush at the end of the turn).
    pub const DIRTY: u32 = 1 << 2;
    /// An idle ping is outstanding.
    pub const PING_SENT: u32 = 1 << 3;
    /// Shut down the write side once the output queue is empty.
    pub const SHUT_AFTER_FLUSH: u32 = 1 << 4;
    /// Counted in `Shared::ws_open`.
    pub const COUNTED_WS: u32 = 1 << 5;
    /// Counted in `Shared::online`.
    pub const COUNTED_ONLINE: u32 = 1 << 6;
    /// The message being assembled is text.
    pub const ASSEMBLING_TEXT: u32 = 1 << 7;
    /// Closed for not reading: do not wait long for its output to drain.
    pub const SLOW: u32 = 1 << 8;
    /// Scheduled to be closed at the end of this turn.
    pub const DOOMED: u32 = 1 << 9;
    /// Writing failed (reset or broken pipe): no more output; read what is left, then close.
    pub const WRITE_DEAD: u32 = 1 << 10;
    /// The peer hung up (read side closed): read on until EOF even after short reads, since
    /// an edge-triggered hang-up is reported once.
    pub const HUP_SEEN: u32 = 1 << 11;
    /// Bytes were written to the kernel since its send queue was last seen empty: the stall
    /// check looks at this connection.
    pub const KERNEL_PENDING: u32 = 1 << 12;
    /// Watched for a write stall (has an entry in the shard's stall table).
    pub const STALL_WATCH: u32 = 1 << 13;
    /// Dropped for not reading (stall or outbound cap): reset the connection on close, so the
    /// kernel frees its buffers at once.
    pub const RESET_ON_CLOSE: u32 = 1 << 14;
    /// Closed for a policy violation: the client gets a short time to answer our close.
    pub const SHORT_CLOSE: u32 = 1 << 15;
    /// Not read until the shard's queues to other threads drain (back-pressure).
    pub const PAUSED: u32 = 1 << 16;
    /// The peer is a trusted proxy: the client's address comes with the request.
    pub const VIA_PROXY: u32 = 1 << 17;
    /// The PROXY header (or its absence) has been dealt with.
    pub const PROXY_DONE: u32 = 1 << 18;
    /// Refused by the per-address connection limit: the request gets 429.
    pub const REFUSED_CONNS: u32 = 1 << 19;
    /// Refused by the per-address rate (or a full address table): the request gets 429.
    pub const REFUSED_RATE: u32 = 1 << 20;
    /// Close at once, without an answer, with a reset.
    pub const DROP: u32 = 1 << 21;
}

/// A connection's transport state: its phase, timers and queued output.
pub struct Io {
    /// The socket (here rather than beside the rest: it fills what would be padding).
    pub sock: TcpStream,
    pub gen: u32,
    pub phase: Phase,
    pub flags: u32,
    /// When the phase began, or the idle ping was sent (shard clock, ms, wrapping).
    pub since: u32,
    /// When the last bytes arrived.
    pub last_rx: u32,
    /// Pending output: none while idle (a buffer comes from the shard's pool when a frame is
    /// queued and goes back when the kernel has taken all of it).
    pub out: Option<Box<OutBuf>>,
    /// The partial request head, or the partial message being reassembled. Allocated only
    /// while one spans several reads.
    pub assembly: Option<Box<Assembly>>,
    /// The client address key this connection is counted under (0: none).
    pub admit_key: u64,
}

/// Output waiting for the socket; `pos` bytes of `buf` are already written.
#[derive(Default)]
pub struct OutBuf {
    pub buf: Vec<u8>,
    pub pos: usize,
}

impl OutBuf {
    pub fn pending(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// Bytes kept across reads: a request head, or a fragmented message.
#[derive(Default)]
pub struct Assembly {
    /// When the first byte arrived (shard clock, ms): the message deadline counts from here.
    pub started: u32,
    /// Heads: the length at the last parse (a head is parsed again once it may be complete,
    /// or has doubled, not at every piece).
    pub parsed: u32,
    pub buf: Vec<u8>,
}

pub struct Conn {
    pub dec: Decoder,
    pub chat: ChatSession,
    pub io: Io,
}

impl Io {
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    pub fn pending_out(&self) -> usize {
        self.out.as_deref().map_or(0, OutBuf::pending)
    }

    /// The output buffer, taken from the pool if there is none.
    fn out_buf(&mut self, core: &mut Core) -> &mut OutBuf {
        self.out
            .get_or_insert_with(|| core.pool.pop().unwrap_or_default())
    }

    fn enter(&mut self, phase: Phase, core: &Core) {
        self.phase = phase;
        self.since = core.now;
    }

    /// A per-address limit refused this connection: its request is answered with 429.
    pub fn refuse(&mut self, r: crate::admission::Refusal) {
        self.flags |= match r {
            crate::admission::Refusal::Connections => flag::REFUSED_CONNS,
            _ => flag::REFUSED_RATE,
        };
    }

    /// Admit the client at `ip` now (its address came through a trusted proxy).
    fn admit(&mut self, ip: std::net::IpAddr, core: &mut Core) {
        let shared = &core.shared;
        let key = crate::http::proxy::ip_key(ip);
        match shared.admission.admit(key, shared.now_ms()) {
            crate::admission::Verdict::Admit => self.admit_key = key,
            crate::admission::Verdict::Refuse { reason, .. } => self.refuse(reason),
            crate::admission::Verdict::Drop { .. } => {
                self.flags |= flag::DROP | flag::RESET_ON_CLOSE;
            }
        }
    }

    pub fn mark_dirty(&mut self, slot: usize, core: &mut Core) {
        if !self.has(flag::DIRTY) {
            self.flags |= flag::DIRTY;
            core.dirty.push(slot);
        }
    }

    /// Close at the end of this turn (never from inside a send or a decode: closing inside a
    /// send is how uWebSockets issue #1056 crashed).
    pub fn doom(&mut self, slot: usize, code: u16, core: &mut Core) {
        if !self.has(flag::DOOMED) {
            self.flags |= flag::DOOMED;
            core.doomed.push((slot, code));
        }
    }

    /// Append bytes to the output, enforcing the outbound cap of an open connection: one past
    /// it is marked slow and doomed (closed with 1008 at the end of the turn).
    pub fn queue(&mut self, bytes: &[u8], slot: usize, core: &mut Core) {
        if self.has(flag::DOOMED | flag::WRITE_DEAD) {
            return;
        }
        let cap = match self.phase {
            Phase::Open(Endpoint::Chat) => Some(core.limits.outbound_cap),
            Phase::Open(Endpoint::Echo) => Some(core.limits.echo_outbound_cap),
            _ => None,
        };
        if cap.is_some_and(|cap| self.pending_out() + bytes.len() > cap) {
            self.flags |= flag::SLOW;
            self.doom(slot, close::POLICY_VIOLATION, core);
            return;
        }
        // The shard's share of the output budget is spent: whoever holds a backlog of its own
        // goes, as a slow consumer would (clients that read keep their queues near empty).
        if cap.is_some()
            && core.queued + bytes.len() as u64 > core.limits.output_budget
            && self.pending_out() >= BACKLOG
        {
            ShardStats::inc(&core.stats().output_budget_closes);
            self.flags |= flag::SLOW;
            self.doom(slot, close::POLICY_VIOLATION, core);
            return;
        }
        core.queued += bytes.len() as u64;
        self.out_buf(core).buf.extend_from_slice(bytes);
        self.mark_dirty(slot, core);
    }

    /// Queue the frame built in the core's scratch buffer.
    fn queue_built(&mut self, slot: usize, core: &mut Core) {
        let frame = std::mem::take(&mut core.frame);
        self.queue(&frame, slot, core);
        core.frame = frame;
    }

    fn queue_frame(&mut self, opcode: OpCode, payload: &[u8], slot: usize, core: &mut Core) {
        core.frame.clear();
        ws::write_frame(&mut core.frame, opcode, payload);
        self.queue_built(slot, core);
    }

    /// Send an idle ping; the answer (any frame) is due within the pong timeout.
    pub fn ping(&mut self, slot: usize, core: &mut Core) {
        self.queue_frame(OpCode::Ping, b"", slot, core);
        self.flags |= flag::PING_SENT;
        self.since = core.now;
    }

    /// Queue our close frame and enter `Closing`. `shut`: shut the write side once it is sent
    /// (errors); otherwise wait for the peer's close (a graceful close such as shutdown's).
    /// The close frame goes out even past the outbound cap (the cap guards data, not this).
    fn queue_close(&mut self, code: u16, reason: &str, shut: bool, slot: usize, core: &mut Core) {
        let endpoint = match self.phase {
            Phase::Open(e) | Phase::Closing(e) => e,
            _ => Endpoint::Chat,
        };
        core.stats().count_close(code);
        self.enter(Phase::Closing(endpoint), core);
        self.assembly = None;
        if shut {
            self.flags |= flag::SHUT_AFTER_FLUSH;
        }
        if !self.has(flag::WRITE_DEAD) {
            let out = &mut self.out_buf(core).buf;
            let before = out.len();
            ws::write_close(out, code, reason);
            let added = (out.len() - before) as u64;
            core.queued += added;
        }
        self.mark_dirty(slot, core);
    }
}

/// Does a connection from an untrusted peer start with a PROXY header (v1 or v2)?
fn looks_like_proxy_header(data: &[u8], assembled: Option<&Assembly>) -> bool {
    let start = match assembled {
        Some(a) if !a.buf.is_empty() => &a.buf,
        _ => data,
    };
    matches!(
        proxy::parse_proxy_header(start),
        ProxyParse::Done { .. } | ProxyParse::Invalid(_)
    ) && (start.starts_with(b"PROXY ") || start.starts_with(b"\r\n\r\n\0\r\nQUIT\n"))
}

/// A session's effects, applied to its connection and shard.
struct ConnSink<'a> {
    io: &'a mut Io,
    slot: usize,
    core: &'a mut Core,
}

impl<'a> ConnSink<'a> {
    fn new(io: &'a mut Io, slot: usize, core: &'a mut Core) -> Self {
        ConnSink { io, slot, core }
    }
}

impl ConnSink<'_> {
    /// A message of this client's landed in a full queue to another thread: read nothing more
    /// from it until the queues drain, so its kernel buffers push back on the sender.
    fn back_pressure(&mut self) {
        if self.core.outbox.take_congested() && !self.io.has(flag::PAUSED) {
            self.io.flags |= flag::PAUSED;
            self.core.paused.push((self.slot, self.io.gen));
            ShardStats::inc(&self.core.stats().backpressure_pauses);
        }
    }
}

impl Route for ConnSink<'_> {
    fn peer(&mut self, to: ConnId, msg: PeerMsg) {
        self.core.peer(to, msg);
        self.back_pressure();
    }
    fn matcher(&mut self, req: MatchReq) {
        self.core.matcher(req);
        self.back_pressure();
    }
    fn avoid(&mut self, a: ConnId, b: ConnId) {
        self.core.avoid(a, b);
        self.back_pressure();
    }
    fn clear_avoid(&mut self, user: ConnId) {
        self.core.clear_avoid(user);
        self.back_pressure();
    }
    fn count(&mut self, stat: Stat) {
        self.core.count(stat);
    }
}

impl Sink for ConnSink<'_> {
    fn send(&mut self, reply: Reply<'_>) {
        self.core.encode(&reply);
        self.io.queue_built(self.slot, self.core);
        ShardStats::inc(&self.core.stats().messages_out);
    }
    fn forward(&mut self, frame: &[u8]) {
        ShardStats::inc(&self.core.stats().messages_out);
        self.io.queue(frame, self.slot, self.core);
    }
    fn relay(&mut self, to: ConnId, epoch: u64, reply: Reply<'_>) {
        self.core.relay(to, epoch, &reply);
        self.back_pressure();
    }
    fn close(&mut self, code: u16) {
        self.io.doom(self.slot, code, self.core);
    }
}

impl Conn {
    pub fn new(sock: TcpStream, gen: u32, core: &Core) -> Conn {
        Conn {
            dec: Decoder::default(),
            chat: ChatSession::new(&core.limits.session, core.now_ms),
            io: Io {
                sock,
                gen,
                phase: Phase::Handshake,
                flags: 0,
                since: core.now,
                last_rx: core.now,
                out: None,
                assembly: None,
                admit_key: 0,
            },
        }
    }

    /// Bytes the shard read from the socket.
    pub fn on_bytes(&mut self, data: &mut [u8], slot: usize, core: &mut Core) {
        match self.io.phase {
            Phase::Handshake => self.on_head_bytes(data, slot, core),
            Phase::Open(_) | Phase::Closing(_) => self.decode(data, slot, core),
            Phase::HttpReply | Phase::Linger => {}
        }
    }

    fn on_head_bytes(&mut self, data: &mut [u8], slot: usize, core: &mut Core) {
        if self.io.has(flag::VIA_PROXY) {
            if !self.io.has(flag::PROXY_DONE)
                && core.shared.config.proxy_header == ProxyHeader::ProxyProtocol
            {
                return self.on_proxy_bytes(data, slot, core);
            }
        } else if looks_like_proxy_header(data, self.io.assembly.as_deref()) {
            // Only a trusted proxy may say who the client is.
            ShardStats::inc(&core.stats().proxy_refused);
            return self.reply(http::response::error_response(400, false), slot, core);
        }
        self.on_request_bytes(data, slot, core);
    }

    /// Bytes from a trusted proxy before its PROXY header is complete.
    fn on_proxy_bytes(&mut self, data: &mut [u8], slot: usize, core: &mut Core) {
        let mut asm = self.io.assembly.take().unwrap_or_else(|| {
            Box::new(Assembly {
                started: core.now,
                ..Assembly::default()
            })
        });
        asm.buf.extend_from_slice(data);
        let peer = self.io.sock.peer_addr().map(|a| a.ip());
        let (len, client) = match proxy::parse_proxy_header(&asm.buf) {
            ProxyParse::Incomplete => {
                self.io.assembly = Some(asm);
                return;
            }
            // No header: the proxy's own request (a health check); it is the client.
            ProxyParse::NotProxy => (0, peer.ok()),
            ProxyParse::Done { len, source } => (len, source.map(|s| s.ip()).or(peer.ok())),
            ProxyParse::Invalid(e) => {
                debug!("shard {}: slot {slot}: bad PROXY header: {e}", core.id);
                ShardStats::inc(&core.stats().proxy_refused);
                return self.reply(http::response::error_response(400, false), slot, core);
            }
        };
        self.io.flags |= flag::PROXY_DONE;
        if let Some(ip) = client {
            self.io.admit(ip, core);
        }
        if self.io.has(flag::DROP) {
            return;
        }
        let mut rest = asm.buf.split_off(len.min(asm.buf.len()));
        if !rest.is_empty() {
            self.on_request_bytes(&mut rest, slot, core);
        }
    }

    /// Send a non-101 response, then close gracefully.
    fn reply(&mut self, bytes: Vec<u8>, slot: usize, core: &mut Core) {
        self.io.assembly = None;
        self.io.enter(Phase::HttpReply, core);
        self.io.flags |= flag::SHUT_AFTER_FLUSH;
        core.stats().count_http(&bytes);
        self.io.queue(&bytes, slot, core);
    }

    fn on_request_bytes(&mut self, data: &mut [u8], slot: usize, core: &mut Core) {
        let shared = core.shared.clone();
        let cfg = &shared.config;
        let ctx = HttpContext {
            max_head_bytes: cfg.max_head_bytes as usize,
            echo_enabled: cfg.enable_echo,
            draining: core.draining || shared.draining.load(Ordering::Relaxed),
            at_capacity: shared.ws_open.load(Ordering::Relaxed) >= cfg.max_connections,
            allowed_origins: &cfg.allowed_origins,
        };
        let mut assembled = self.io.assembly.take();
        let outcome = match assembled.as_mut() {
            None => {
                ShardStats::inc(&core.stats().head_parses);
                http::handle_request(data, &ctx)
            }
            Some(head) => {
                // The whole read is kept: bytes after the head may already be WebSocket
                // frames. Bounded: a partial head is only kept below --max-head-bytes (431
                // beyond), so this holds at most that plus one read.
                let from = head.buf.len().saturating_sub(2);
                head.buf.extend_from_slice(data);
                // Parse again only when the head may have ended, has doubled since the last
                // parse (so a bad request line is still refused early), or is at the limit:
                // a head sent a byte at a time costs O(n), not O(n²).
                let ended = head.buf.get(from..).is_some_and(http::may_end_head);
                let len = head.buf.len();
                if ended || len >= ctx.max_head_bytes || len >= 2 * head.parsed as usize {
                    head.parsed = len as u32;
                    ShardStats::inc(&core.stats().head_parses);
                    http::handle_request(&head.buf, &ctx)
                } else {
                    HttpOutcome::Incomplete
                }
            }
        };
        let outcome = match outcome {
            HttpOutcome::Incomplete => outcome,
            complete => {
                let head = match assembled.as_deref() {
                    Some(a) => a.buf.as_slice(),
                    None => &*data,
                };
                self.admit_forwarded(head, core);
                if self.io.has(flag::DROP) {
                    return;
                }
                match self.refusal(core) {
                    Some(reply) => HttpOutcome::Reply(reply),
                    None => complete,
                }
            }
        };
        match outcome {
            HttpOutcome::Incomplete => {
                self.io.assembly = Some(assembled.unwrap_or_else(|| {
                    Box::new(Assembly {
                        started: core.now,
                        parsed: data.len() as u32,
                        buf: data.to_vec(),
                    })
                }));
            }
            HttpOutcome::Reply(bytes) => self.reply(bytes, slot, core),
            HttpOutcome::Upgrade {
                endpoint,
                head_len,
                response,
            } => {
                self.upgrade(endpoint, &response, slot, core);
                // Bytes after the head already belong to the WebSocket stream.
                let rest = match assembled.as_deref_mut() {
                    Some(head) => head.buf.get_mut(head_len..),
                    None => data.get_mut(head_len..),
                };
                if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                    self.decode(rest, slot, core);
                }
            }
        }
    }

    /// Behind a trusted proxy that sends X-Forwarded-For: admit the client it names (the
    /// rightmost untrusted entry), or the proxy itself when it names none.
    fn admit_forwarded(&mut self, head: &[u8], core: &mut Core) {
        if !self.io.has(flag::VIA_PROXY)
            || core.shared.config.proxy_header != ProxyHeader::XForwardedFor
        {
            return;
        }
        let Ok(peer) = self.io.sock.peer_addr().map(|a| a.ip()) else {
            return;
        };
        let values = http::header_values(head, "x-forwarded-for");
        let client = proxy::client_from_forwarded_for(&values, peer, &core.shared.trusted);
        self.io.admit(client.unwrap_or(peer), core);
    }

    /// The 429 for a connection a per-address limit refused.
    fn refusal(&self, core: &Core) -> Option<Vec<u8>> {
        let retry_after = if self.io.has(flag::REFUSED_CONNS) {
            10
        } else if self.io.has(flag::REFUSED_RATE) {
            let rate = core.shared.config.handshake_rate_per_ip.max(1);
            1000u32.div_ceil(rate).div_ceil(1000).max(1)
        } else {
            return None;
        };
        Some(http::too_many_requests(retry_after))
    }

    fn upgrade(&mut self, endpoint: Endpoint, response: &[u8], slot: usize, core: &mut Core) {
        let shared = core.shared.clone();
        self.io.enter(Phase::Open(endpoint), core);
        self.dec = Decoder::new();
        self.chat = ChatSession::new(&core.limits.session, core.now_ms);
        self.io.flags |= flag::COUNTED_WS;
        shared.ws_open.fetch_add(1, Ordering::Relaxed);
        self.io.queue(response, slot, core);
        match endpoint {
            Endpoint::Chat => {
                self.io.flags |= flag::COUNTED_ONLINE;
                shared.online.fetch_add(1, Ordering::Relaxed);
                ShardStats::inc(&core.stats().upgrades_chat);
                let online = shared.online_count();
                ConnSink::new(&mut self.io, slot, core).send(Reply::Hello { online });
            }
            Endpoint::Echo => {
                // Conformance suites and benchmarks send megabytes at once: give the kernel
                // room for them (the outbound cap still bounds what waits in our queue).
                let fd = std::os::fd::AsRawFd::as_raw_fd(&self.io.sock);
                let _ = crate::sys::set_send_buffer(fd, core.limits.echo_send_buffer);
                ShardStats::inc(&core.stats().upgrades_echo);
            }
        }
    }

    fn decode(&mut self, data: &mut [u8], slot: usize, core: &mut Core) {
        let max = match self.io.phase {
            Phase::Open(e) | Phase::Closing(e) => core.limits.max_message_for(e),
            _ => core.limits.max_message,
        };
        let Conn { dec, chat, io, .. } = self;
        // A stopped decoder ignores the rest of the stream (a fresh one would read the middle
        // of a frame as a header), so it stays in place after an error.
        if let Err(e) = dec.decode(data, max, |ev| io.on_event(ev, chat, slot, core)) {
            debug!("shard {}: slot {slot}: {e:?}", core.id);
            self.fail(e.close_code(), slot, core);
        }
    }

    /// Fail the connection after a protocol error: close frame, then shut down.
    pub fn fail(&mut self, code: u16, slot: usize, core: &mut Core) {
        self.begin_close(code, close::reason(code), true, slot, core);
    }

    /// Leave the chat and send a close frame (`Io::queue_close`). Only an open
    /// connection starts a close.
    pub fn begin_close(
        &mut self,
        code: u16,
        reason: &str,
        shut: bool,
        slot: usize,
        core: &mut Core,
    ) {
        if !matches!(self.io.phase, Phase::Open(_)) {
            return;
        }
        self.leave_chat(slot, core);
        self.io.queue_close(code, reason, shut, slot, core);
    }

    /// The connection leaves the chat for good.
    pub fn leave_chat(&mut self, slot: usize, core: &mut Core) {
        leave(&mut self.chat, self.io.gen, slot, core);
    }

    /// A message for this connection from another one.
    pub fn on_peer(&mut self, msg: PeerMsg, slot: usize, core: &mut Core) {
        let cx = core.ctx(slot, self.io.gen);
        self.chat
            .on_peer(msg, &cx, &mut ConnSink::new(&mut self.io, slot, core));
    }

    /// A relay frame from a partner on this shard.
    pub fn on_relay(&mut self, epoch: u64, frame: &[u8], slot: usize, core: &mut Core) {
        let accepted = self.chat.accepts(epoch);
        self.chat
            .on_relay(epoch, frame, &mut ConnSink::new(&mut self.io, slot, core));
        if accepted {
            ShardStats::inc(&core.stats().relayed_local);
        }
    }

    /// The matchmaker paired this connection (side `a` of `p`); see `ChatSession::take_pairing`.
    pub fn take_pairing(&mut self, p: &Pairing<ConnId>, slot: usize, core: &mut Core) -> bool {
        let cx = core.ctx(slot, self.io.gen);
        self.chat
            .take_pairing(p, &cx, &mut ConnSink::new(&mut self.io, slot, core))
    }

    pub fn on_node_down(&mut self, node: u16, slot: usize, core: &mut Core) {
        let cx = core.ctx(slot, self.io.gen);
        self.chat
            .on_node_down(node, &cx, &mut ConnSink::new(&mut self.io, slot, core));
    }
}

impl Io {
    /// One decoded event. Returns whether to keep decoding this input.
    fn on_event(
        &mut self,
        ev: Event<'_>,
        chat: &mut ChatSession,
        slot: usize,
        core: &mut Core,
    ) -> bool {
        if self.has(flag::DOOMED) {
            return false;
        }
        let endpoint = match self.phase {
            Phase::Open(e) => e,
            Phase::Closing(_) => {
                // After our close frame nothing more is sent; we only wait for the peer's.
                if let Event::Close { code, .. } = ev {
                    self.flags |= flag::SHUT_AFTER_FLUSH;
                    core.stats().count_close_received(code);
                    self.mark_dirty(slot, core);
                    return false;
                }
                return true;
            }
            _ => return false,
        };
        match ev {
            Event::Data {
                payload,
                text,
                first,
                last,
            } => {
                if first && !text && endpoint == Endpoint::Chat {
                    // Binary messages are not part of the chat protocol.
                    self.leave_and_close(close::UNSUPPORTED_DATA, chat, slot, core);
                    return false;
                }
                if first && last {
                    self.on_message(payload, text, endpoint, chat, slot, core);
                } else {
                    if first {
                        self.assembly = Some(Box::new(Assembly {
                            started: core.now,
                            ..Assembly::default()
                        }));
                        if text {
                            self.flags |= flag::ASSEMBLING_TEXT;
                        } else {
                            self.flags &= !flag::ASSEMBLING_TEXT;
                        }
                    }
                    let text = self.has(flag::ASSEMBLING_TEXT);
                    let max = core.limits.max_message_for(endpoint);
                    let asm = self.assembly.get_or_insert_with(Box::default);
                    // Grow by doubling, but never past the message limit: the decoder has
                    // already refused a message that would exceed it.
                    let need = asm.buf.len() + payload.len();
                    if need > asm.buf.capacity() {
                        let cap = (asm.buf.capacity() * 2).clamp(need, max.max(need));
                        asm.buf.reserve_exact(cap - asm.buf.len());
                    }
                    asm.buf.extend_from_slice(payload);
                    if last {
                        if let Some(whole) = self.assembly.take() {
                            self.on_message(&whole.buf, text, endpoint, chat, slot, core);
                        }
                    }
                }
                matches!(self.phase, Phase::Open(_)) && !self.has(flag::DOOMED)
            }
            Event::Ping(payload) => {
                // One pong per ping, in order (Autobahn 2.10/2.11).
                self.queue_frame(OpCode::Pong, payload, slot, core);
                true
            }
            Event::Pong(_) => true,
            Event::Close { code, .. } => {
                core.stats().count_close_received(code);
                // Echo the peer's code (RFC 6455 §5.5.1), then close TCP ourselves.
                let reply = code.unwrap_or(close::NORMAL);
                leave(chat, self.gen, slot, core);
                core.frame.clear();
                ws::write_close(&mut core.frame, reply, "");
                self.queue_built(slot, core);
                self.enter(Phase::Closing(endpoint), core);
                self.flags |= flag::SHUT_AFTER_FLUSH;
                self.assembly = None;
                core.stats().count_close(reply);
                false
            }
        }
    }

    /// The same as `Conn::fail` from inside the decoder's callback.
    fn leave_and_close(&mut self, code: u16, chat: &mut ChatSession, slot: usize, core: &mut Core) {
        leave(chat, self.gen, slot, core);
        self.queue_close(code, close::reason(code), true, slot, core);
    }

    fn on_message(
        &mut self,
        payload: &[u8],
        text: bool,
        endpoint: Endpoint,
        chat: &mut ChatSession,
        slot: usize,
        core: &mut Core,
    ) {
        ShardStats::inc(&core.stats().messages_in);
        match endpoint {
            Endpoint::Echo => {
                let opcode = if text { OpCode::Text } else { OpCode::Binary };
                self.queue_frame(opcode, payload, slot, core);
                ShardStats::inc(&core.stats().messages_out);
            }
            Endpoint::Chat => {
                let cx = core.ctx(slot, self.gen);
                chat.on_text(payload, &cx, &mut ConnSink::new(self, slot, core));
            }
        }
    }
}

/// The chat session of connection (`slot`, `gen`) leaves for good.
fn leave(chat: &mut ChatSession, gen: u32, slot: usize, core: &mut Core) {
    let cx = core.ctx(slot, gen);
    chat.leave(&cx, core);
}
