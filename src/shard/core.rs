//! What a connection may touch while it handles its input: everything of its shard except the
//! slab of connections and the poll. A connection borrows it alongside itself
//! (`conn.on_bytes(data, slot, &mut core)`), so the codec's callback needs nothing but the
//! connection and this.
//!
//! Messages for another connection of the same shard cannot be handed over while the sender
//! is borrowed; they wait in [`Core::local`] (in order, relays as encoded frames in one reused
//! buffer) and the shard delivers them right after the sender's input (`Shard::settle`).
use super::conn::OutBuf;
use super::stats::ShardStats;
use crate::chat::session::{Ctx, Reply, Route, SessionConfig, Stat};
use crate::cluster::ClusterMsg;
use crate::server::Shared;
use crate::ws::{self, OpCode};
use crate::xshard::{ConnId, MatchReq, Outbox, Peer, PeerMsg};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Output buffers kept for reuse, and the largest capacity worth keeping. A busy turn fills up
/// to one buffer per event (the poll returns up to 1024): fewer kept would mean a `malloc` and
/// a `free` per relayed message for the rest. Large buffers are kept only a few at a time, so
/// the pool holds at most about 1 MiB.
const POOL_MAX: usize = 1024;
const POOL_LARGE_MAX: usize = 32;
const POOL_SMALL_BUF: usize = 512;
const POOL_BUF_MAX: usize = 16 * 1024;

/// Limits in the units the loop uses (milliseconds, bytes), fixed at start.
pub struct Limits {
    pub session: SessionConfig,
    pub handshake_ms: u32,
    pub idle_ping_ms: u32,
    pub pong_ms: u32,
    /// How long clients may take to answer our close while draining.
    pub drain_close_ms: u32,
    /// A fragmented message must be complete this long after its first byte.
    pub message_ms: u32,
    /// Unsent output with no progress for this long drops the client.
    pub stall_ms: u32,
    /// This shard's share of --output-budget-bytes.
    pub output_budget: u64,
    /// How long clients may stay paused behind full queues before they are closed (1013).
    pub queue_full_ms: u32,
    /// How often the timer sweep runs (set by the shard from the timeouts above).
    pub sweep_ms: u32,
    /// SO_SNDBUF for /echo connections.
    pub echo_send_buffer: u32,
    pub max_message: usize,
    pub echo_max_message: usize,
    pub outbound_cap: usize,
    pub echo_outbound_cap: usize,
}

/// Milliseconds, clamped so that wrapping 32-bit differences stay meaningful.
pub fn ms(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX / 4)) as u32
}

impl Limits {
    /// The largest message an endpoint takes.
    pub fn max_message_for(&self, endpoint: crate::http::Endpoint) -> usize {
        match endpoint {
            crate::http::Endpoint::Chat => self.max_message,
            crate::http::Endpoint::Echo => self.echo_max_message,
        }
    }

    pub fn new(c: &crate::config::Config) -> Limits {
        Limits {
            session: SessionConfig {
                rate: crate::chat::ratelimit::RateLimitConfig {
                    per_sec: c.rate_limit_per_sec,
                    burst: c.rate_limit_burst,
                    abuse_drops: c.abuse_drops,
                },
                max_text_chars: c.max_text_chars as usize,
                cluster: c.cluster.is_some(),
            },
            handshake_ms: ms(c.handshake_timeout),
            idle_ping_ms: ms(c.idle_ping),
            pong_ms: ms(c.pong_timeout),
            drain_close_ms: ms(c.grace_period),
            message_ms: ms(c.message_timeout),
            stall_ms: ms(c.write_stall_timeout),
            output_budget: c.output_budget_bytes / (c.shard_count() as u64).max(1),
            queue_full_ms: ms(c.thread_queue_timeout),
            sweep_ms: 100,
            echo_send_buffer: c.send_buffer_bytes.saturating_mul(16),
            max_message: c.max_message_bytes as usize,
            echo_max_message: c.echo_max_message_bytes as usize,
            outbound_cap: c.outbound_cap_bytes as usize,
            echo_outbound_cap: c.echo_outbound_cap(),
        }
    }
}

/// A message for a connection of this shard, waiting for its sender to be done.
enum Local {
    /// An encoded relay frame: `LocalQueue::frames[start..end]`.
    Frame {
        to: ConnId,
        epoch: u64,
        start: usize,
        end: usize,
    },
    Peer(Peer),
}

/// Messages for connections of this shard, in the order they were sent.
#[derive(Default)]
pub struct LocalQueue {
    items: VecDeque<Local>,
    frames: Vec<u8>,
}

/// One message taken from a [`LocalQueue`] for delivery.
pub enum Delivery<'a> {
    Frame {
        to: ConnId,
        epoch: u64,
        frame: &'a [u8],
    },
    Peer(Peer),
}

impl LocalQueue {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of relay frames waiting.
    pub fn bytes(&self) -> usize {
        self.frames.len()
    }

    /// Forget a delivered batch, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.items.clear();
        self.frames.clear();
    }

    pub fn pop(&mut self) -> Option<Delivery<'_>> {
        Some(match self.items.pop_front()? {
            Local::Frame {
                to,
                epoch,
                start,
                end,
            } => Delivery::Frame {
                to,
                epoch,
                frame: self.frames.get(start..end).unwrap_or_default(),
            },
            Local::Peer(p) => Delivery::Peer(p),
        })
    }
}

/// The lanes' bounds from the configuration.
fn limits_bounds(c: &crate::config::Config) -> crate::xshard::LaneBounds {
    crate::xshard::LaneBounds {
        messages: c.thread_queue_messages as usize,
        bytes: usize::try_from(c.thread_queue_bytes).unwrap_or(usize::MAX),
    }
}

pub struct Core {
    pub id: u16,
    /// The shard clock at the start of this turn: milliseconds since the shard started.
    pub now_ms: u64,
    /// The same, as the wrapping 32-bit value connections keep.
    pub now: u32,
    pub limits: Limits,
    pub shared: Arc<Shared>,
    /// This shard received `Drain`.
    pub draining: bool,
    /// JSON of the server message being built.
    json: Vec<u8>,
    /// The frame being built.
    pub frame: Vec<u8>,
    /// Empty output buffers kept for reuse.
    pub pool: Vec<Box<OutBuf>>,
    /// Connections with output to write at the end of the turn.
    pub dirty: Vec<usize>,
    /// Connections to close at the end of the turn, with the close code.
    pub doomed: Vec<(usize, u16)>,
    pub outbox: Outbox,
    pub local: LocalQueue,
    /// Output queued on this shard's connections and not yet written (for the budget).
    pub queued: u64,
    /// Clients not read because their messages wait in a full queue (slot, generation).
    pub paused: Vec<(usize, u32)>,
    /// Since when the queues have held paused clients back.
    pub congested_since: Option<u32>,
}

impl Core {
    pub fn new(id: u16, shards: usize, shared: Arc<Shared>) -> Core {
        let bounds = limits_bounds(&shared.config);
        Core {
            id,
            now_ms: 0,
            now: 0,
            limits: Limits::new(&shared.config),
            shared,
            draining: false,
            json: Vec::with_capacity(4096),
            frame: Vec::with_capacity(4096),
            pool: Vec::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            outbox: Outbox::new(shards, bounds),
            local: LocalQueue::default(),
            queued: 0,
            paused: Vec::new(),
            congested_since: None,
        }
    }

    /// Keep an emptied output buffer for reuse, if it has room worth reusing.
    pub fn recycle(&mut self, mut out: Box<OutBuf>) {
        let cap = out.buf.capacity();
        let room = if cap <= POOL_SMALL_BUF {
            POOL_MAX
        } else {
            POOL_LARGE_MAX
        };
        if cap > 0 && cap <= POOL_BUF_MAX && self.pool.len() < room {
            out.buf.clear();
            out.pos = 0;
            self.pool.push(out);
        }
    }

    pub fn stats(&self) -> &ShardStats {
        // `id` indexes the vector the server built with one entry per shard.
        &self.shared.shards[usize::from(self.id)]
    }

    pub fn me(&self, slot: usize, gen: u32) -> ConnId {
        ConnId::local(self.id, slot as u32, gen)
    }

    /// The chat session context of connection (`slot`, `gen`) now.
    pub fn ctx(&self, slot: usize, gen: u32) -> Ctx {
        Ctx {
            me: self.me(slot, gen),
            now_ms: self.now_ms,
            cfg: self.limits.session,
        }
    }

    /// Is `to` a connection of this shard?
    pub fn is_here(&self, to: ConnId) -> bool {
        !to.is_remote() && to.shard == self.id
    }

    /// Encode `reply` as a text frame into the scratch frame buffer.
    pub fn encode(&mut self, reply: &Reply<'_>) {
        self.json.clear();
        reply.write(&mut self.json);
        self.frame.clear();
        ws::write_frame(&mut self.frame, OpCode::Text, &self.json);
    }

    /// A chat line or typing indicator for `to`: encoded once, then queued for this shard or
    /// boxed for another shard or node.
    pub fn relay(&mut self, to: ConnId, epoch: u64, reply: &Reply<'_>) {
        self.encode(reply);
        if self.is_here(to) {
            let start = self.local.frames.len();
            self.local.frames.extend_from_slice(&self.frame);
            self.local.items.push_back(Local::Frame {
                to,
                epoch,
                start,
                end: self.local.frames.len(),
            });
        } else {
            let frame = self.frame.as_slice().into();
            self.outbox.push_to(Peer {
                to,
                msg: PeerMsg::Relay { epoch, frame },
            });
            let path = if to.is_remote() {
                &self.stats().relayed_cluster
            } else {
                &self.stats().relayed_cross
            };
            ShardStats::inc(path);
        }
    }
}

impl Route for Core {
    fn peer(&mut self, to: ConnId, msg: PeerMsg) {
        let peer = Peer { to, msg };
        if self.is_here(to) {
            self.local.items.push_back(Local::Peer(peer));
        } else {
            self.outbox.push_to(peer);
        }
    }

    fn matcher(&mut self, req: MatchReq) {
        self.outbox.push_matcher(req);
    }

    fn avoid(&mut self, a: ConnId, b: ConnId) {
        self.outbox.push_cluster(ClusterMsg::Avoid { a, b });
    }

    fn clear_avoid(&mut self, user: ConnId) {
        self.outbox.push_cluster(ClusterMsg::ClearAvoid { user });
    }

    fn count(&mut self, stat: Stat) {
        let s = self.stats();
        match stat {
            Stat::RateLimited => ShardStats::inc(&s.rate_limited),
            Stat::MatchWait(ms) => s.match_wait.observe(f64::from(ms) / 1000.0),
            Stat::ClusterPairLost => ShardStats::inc(&s.cluster_pairs_lost),
        }
    }
}
