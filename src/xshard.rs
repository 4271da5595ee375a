//! Messages between threads: the acceptor, the shards, the matchmaker and (in a cluster) the
//! Redis bridge. The only module that touches crossbeam channels and `mio::Waker`.
//!
//! Ordering rule: a crossbeam channel is FIFO per sender, so everything one
//! shard sends to another for a pair (the forwarded `Paired`, then `Relay`s, then
//! `PartnerLeft`) arrives in the order it was sent. That is why the matchmaker tells only one
//! side of a new pair (`PairMade`), and that side's shard forwards `Paired` to the other.
use crate::chat::matchmaker::Pairing;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A connection anywhere in the cluster. `gen` changes whenever a slot is reused, so a message
/// for a connection that is gone never reaches its successor. `node` is 0 for this process, or
/// the index of another node in the bridge's node table (it fills what was padding: 12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub node: u16,
    pub shard: u16,
    pub slot: u32,
    pub gen: u32,
}

impl ConnId {
    pub fn local(shard: u16, slot: u32, gen: u32) -> Self {
        ConnId {
            node: 0,
            shard,
            slot,
            gen,
        }
    }

    pub fn is_remote(&self) -> bool {
        self.node != 0
    }
}

/// Pair epochs made by the cluster queue have this bit set, so they never equal an epoch of
/// this node's own matchmaker.
pub const CLUSTER_EPOCH: u64 = 1 << 62;

/// Everything addressed to one chat connection by another connection (its partner, or the
/// side of a new pair that learned of it first), wherever the two live: on one shard, on two
/// shards (`ShardMsg::Peer`), or on two nodes (`ClusterMsg::Deliver`, one wire record each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMsg {
    /// The recipient, waiting under `ticket`, is now chatting with `partner` in pair `epoch`.
    Paired {
        ticket: u32,
        partner: ConnId,
        epoch: u64,
        common: Vec<String>,
    },
    /// An encoded server frame (a chat line or typing indicator), valid only within `epoch`.
    Relay { epoch: u64, frame: Box<[u8]> },
    /// The partner in pair `epoch` left; sent after its last `Relay`. `avoid`: it left by
    /// `next`/`find`, so the two are not paired again for now.
    PartnerLeft { epoch: u64, avoid: bool },
}

/// A [`PeerMsg`] and the connection it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub to: ConnId,
    pub msg: PeerMsg,
}

/// A socket the acceptor took, and what admission decided about it at accept.
pub struct Accepted {
    pub sock: mio::net::TcpStream,
    /// The peer is a trusted proxy: the client's address comes with the request.
    pub via_proxy: bool,
    /// The address key the connection is counted under (0: not counted).
    pub key: u64,
    /// A per-address limit refused it: its request is answered with 429.
    pub refused: Option<crate::admission::Refusal>,
}

/// Work for a shard.
pub enum ShardMsg {
    /// A freshly accepted socket (non-blocking, not yet registered).
    NewConn(Accepted),
    /// The matchmaker paired `pairing.a` (on this shard) with `pairing.b`.
    PairMade(Pairing<ConnId>),
    /// For a connection of this shard.
    Peer(Peer),
    /// Every pair with a partner on node `node` is over (the node died, or messages from it
    /// may have been lost). `node == 0`: this node lost its Redis link, so every pair with a
    /// partner on another node is over.
    NodeDown { node: u16 },
    /// Start draining: close every WebSocket with 1001.
    Drain,
}

/// Requests to the matchmaker thread.
#[derive(Debug)]
pub enum MatchReq {
    /// `ended`: the partner of the chat this request ends (the user was chatting), which the
    /// matchmaker does not keep itself.
    Find {
        user: ConnId,
        ticket: u32,
        interests: Vec<String>,
        ended: Option<ConnId>,
    },
    Next {
        user: ConnId,
        ticket: u32,
        ended: Option<ConnId>,
    },
    Leave {
        user: ConnId,
    },
    Gone {
        user: ConnId,
    },
    /// From the Redis bridge: the cluster queue paired `user` (this node, queued under
    /// `ticket`) with `partner` (any node).
    ClusterPaired {
        user: ConnId,
        ticket: u32,
        partner: ConnId,
        partner_ticket: u32,
        epoch: u64,
        common: Vec<String>,
    },
    /// From a shard: our `user`, in the cluster queue under `ticket`, was claimed by a user of
    /// another node and is now chatting with `partner`.
    Claimed {
        user: ConnId,
        ticket: u32,
        partner: ConnId,
        epoch: u64,
    },
    /// From the Redis bridge: the link to Redis came up (true) or was lost (false).
    ClusterLink {
        up: bool,
    },
}

/// What a message weighs against the byte bounds of the queues between threads: the frame it
/// carries, plus a fixed share for the message itself.
pub const MSG_BYTES: usize = 64;

impl ShardMsg {
    pub fn weight(&self) -> usize {
        match self {
            ShardMsg::Peer(Peer {
                msg: PeerMsg::Relay { frame, .. },
                ..
            }) => MSG_BYTES + frame.len(),
            _ => MSG_BYTES,
        }
    }
}

/// How other threads reach one shard. The inbox is bounded in messages (the channel) and in
/// bytes (`inbox_bytes`, charged by senders and released by the shard as it takes messages).
#[derive(Clone)]
pub struct ShardHandle {
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
    wake_pending: Arc<AtomicBool>,
    inbox_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// Why a send did not go through.
#[derive(Debug)]
pub enum SendError<T> {
    /// The inbox is full; the message is handed back.
    Full(T),
    /// The receiving thread is gone: fatal.
    Disconnected,
}

impl ShardHandle {
    pub fn new(tx: Sender<ShardMsg>, waker: Arc<Waker>, max_bytes: usize) -> Self {
        ShardHandle {
            tx,
            waker,
            wake_pending: Arc::new(AtomicBool::new(false)),
            inbox_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes,
        }
    }

    /// Is there room for `weight` more bytes? (A message always fits an empty inbox.)
    fn has_room(&self, weight: usize) -> bool {
        let held = self.inbox_bytes.load(Ordering::Relaxed);
        held == 0 || held + weight <= self.max_bytes
    }

    fn try_push(&self, msg: ShardMsg) -> Result<(), SendError<ShardMsg>> {
        let w = msg.weight();
        if !self.has_room(w) {
            return Err(SendError::Full(msg));
        }
        // Charged before the send: the shard may take the message (and release its bytes)
        // before this thread runs again.
        self.inbox_bytes.fetch_add(w, Ordering::Relaxed);
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inbox_bytes.fetch_sub(w, Ordering::Relaxed);
                match e {
                    TrySendError::Full(m) => Err(SendError::Full(m)),
                    TrySendError::Disconnected(_) => Err(SendError::Disconnected),
                }
            }
        }
    }

    /// Queue one message without blocking and wake the shard unless a wake is pending.
    pub fn try_send(&self, msg: ShardMsg) -> Result<(), SendError<ShardMsg>> {
        self.try_push(msg)?;
        self.wake();
        Ok(())
    }

    /// Blocking send, for threads that are not event loops (the matchmaker, the cluster
    /// threads): waits while the inbox is full in messages or in bytes. Shards never block on
    /// those threads, so this cannot deadlock.
    pub fn send_blocking(&self, msg: ShardMsg) -> Result<(), SendError<ShardMsg>> {
        let w = msg.weight();
        let mut pause = std::time::Duration::from_micros(50);
        while !self.has_room(w) {
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(5));
        }
        self.inbox_bytes.fetch_add(w, Ordering::Relaxed);
        if self.tx.send(msg).is_err() {
            self.inbox_bytes.fetch_sub(w, Ordering::Relaxed);
            return Err(SendError::Disconnected);
        }
        self.wake();
        Ok(())
    }

    /// Move as much of `lane` into the inbox as fits, in order; wake at most once.
    /// Returns the number of messages sent.
    pub fn send_batch(&self, lane: &mut Lane<ShardMsg>) -> Result<usize, SendError<()>> {
        let mut sent = 0;
        while let Some(msg) = lane.pop() {
            match self.try_push(msg) {
                Ok(()) => sent += 1,
                Err(SendError::Full(m)) => {
                    lane.push_front(m);
                    break;
                }
                Err(SendError::Disconnected) => return Err(SendError::Disconnected),
            }
        }
        if sent > 0 {
            self.wake();
        }
        Ok(sent)
    }

    /// The owning shard took a message of this weight from its inbox.
    pub fn taken(&self, weight: usize) {
        self.inbox_bytes.fetch_sub(weight, Ordering::Relaxed);
    }

    /// Wake the loop unless it already has a wake pending: one eventfd write per batch, not per
    /// message. The receiver clears the flag (`begin_drain`) before draining its inbox.
    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A failed wake means the loop's poll is gone; the channel send reports that.
            let _ = self.waker.wake();
        }
    }

    /// Called by the owning shard before it drains its inbox: a message sent during the drain
    /// then causes one more (harmless) wake instead of being stranded.
    pub fn begin_drain(&self) {
        self.wake_pending.swap(false, Ordering::AcqRel);
    }
}

/// Another thread's inbox is closed: that thread died, which is fatal for the process.
#[derive(Debug)]
pub struct PeerGone;

/// The receiving end a shard keeps.
pub type Inbox = Receiver<ShardMsg>;

/// Messages waiting in a shard for one other thread, in order, with their total weight.
pub struct Lane<T> {
    q: VecDeque<T>,
    bytes: usize,
    weigh: fn(&T) -> usize,
}

impl<T> Lane<T> {
    pub fn new(weigh: fn(&T) -> usize) -> Self {
        Lane {
            q: VecDeque::new(),
            bytes: 0,
            weigh,
        }
    }
    pub fn push(&mut self, m: T) {
        self.bytes += (self.weigh)(&m);
        self.q.push_back(m);
    }
    fn push_front(&mut self, m: T) {
        self.bytes += (self.weigh)(&m);
        self.q.push_front(m);
    }
    pub fn pop(&mut self) -> Option<T> {
        let m = self.q.pop_front()?;
        self.bytes -= (self.weigh)(&m);
        Some(m)
    }
    pub fn len(&self) -> usize {
        self.q.len()
    }
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    fn clear(&mut self) {
        self.q.clear();
        self.bytes = 0;
    }
    /// Send what `try_send` accepts, in order.
    fn send_with(
        &mut self,
        mut try_send: impl FnMut(T) -> Result<(), TrySendError<T>>,
    ) -> Result<usize, PeerGone> {
        let mut sent = 0;
        while let Some(m) = self.pop() {
            match try_send(m) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(m)) => {
                    self.push_front(m);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return Err(PeerGone),
            }
        }
        Ok(sent)
    }
}

/// The bounds of every lane (from --thread-queue-messages and --thread-queue-bytes).
#[derive(Debug, Clone, Copy)]
pub struct LaneBounds {
    pub messages: usize,
    pub bytes: usize,
}

/// Outgoing cross-thread messages collected during one loop turn, sent at its end. A lane
/// past its bounds does not refuse messages (order and delivery must hold): it reports
/// `congested`, and the shard stops reading from the clients that sent them until the lanes
/// drain (see `Shard::flush_outbox`).
pub struct Outbox {
    pub to_shards: Vec<Lane<ShardMsg>>,
    pub to_matcher: Lane<MatchReq>,
    pub to_cluster: Lane<crate::cluster::ClusterMsg>,
    bounds: LaneBounds,
    /// A push since the last `take_congested` landed in a lane past its bounds.
    congested: bool,
}

impl Outbox {
    pub fn new(shards: usize, bounds: LaneBounds) -> Self {
        Outbox {
            to_shards: (0..shards).map(|_| Lane::new(ShardMsg::weight)).collect(),
            to_matcher: Lane::new(|_| MSG_BYTES),
            to_cluster: Lane::new(crate::cluster::ClusterMsg::weight),
            bounds,
            congested: false,
        }
    }

    fn over<T>(bounds: &LaneBounds, lane: &Lane<T>) -> bool {
        lane.len() > bounds.messages || lane.bytes() > bounds.bytes
    }

    /// Queue `peer` for the thread that reaches its connection: that connection's shard, or
    /// the Redis bridge when it lives on another node. (A message for the sending shard itself
    /// is delivered by that shard, not queued here.)
    pub fn push_to(&mut self, peer: Peer) {
        if peer.to.is_remote() {
            self.push_cluster(crate::cluster::ClusterMsg::Deliver(peer));
        } else if let Some(lane) = self.to_shards.get_mut(usize::from(peer.to.shard)) {
            lane.push(ShardMsg::Peer(peer));
            self.congested |= Self::over(&self.bounds, lane);
        }
    }

    pub fn push_matcher(&mut self, req: MatchReq) {
        self.to_matcher.push(req);
        self.congested |= Self::over(&self.bounds, &self.to_matcher);
    }

    pub fn push_cluster(&mut self, msg: crate::cluster::ClusterMsg) {
        self.to_cluster.push(msg);
        self.congested |= Self::over(&self.bounds, &self.to_cluster);
    }

    /// Did a push since the last call land in a lane past its bounds? (Reset by the call.)
    pub fn take_congested(&mut self) -> bool {
        std::mem::take(&mut self.congested)
    }

    /// Is any lane past half its bounds? (Paused clients are read again once none is.)
    pub fn busy(&self) -> bool {
        let half = LaneBounds {
            messages: self.bounds.messages / 2,
            bytes: self.bounds.bytes / 2,
        };
        Self::over(&half, &self.to_matcher)
            || Self::over(&half, &self.to_cluster)
            || self.to_shards.iter().any(|l| Self::over(&half, l))
    }

    pub fn is_empty(&self) -> bool {
        self.to_matcher.is_empty()
            && self.to_cluster.is_empty()
            && self.to_shards.iter().all(|q| q.is_empty())
    }

    pub fn queued(&self) -> usize {
        self.to_matcher.len()
            + self.to_cluster.len()
            + self.to_shards.iter().map(|q| q.len()).sum::<usize>()
    }

    /// Send what fits. `Err` when a receiving thread died.
    pub fn flush(
        &mut self,
        shards: &[ShardHandle],
        matcher: &Sender<MatchReq>,
        cluster: Option<&ClusterSender>,
    ) -> Result<usize, PeerGone> {
        let mut sent = 0;
        for (lane, handle) in self.to_shards.iter_mut().zip(shards) {
            if !lane.is_empty() {
                sent += handle.send_batch(lane).map_err(|_| PeerGone)?;
            }
        }
        sent += self.to_matcher.send_with(|m| matcher.try_send(m))?;
        match cluster {
            Some(c) => sent += self.to_cluster.send_with(|m| c.try_send(m))?,
            None => self.to_cluster.clear(),
        }
        Ok(sent)
    }
}

/// The shards' way to the Redis bridge: a bounded channel, also bounded in bytes (the bridge
/// releases what it takes).
#[derive(Clone)]
pub struct ClusterSender {
    tx: Sender<crate::cluster::ClusterMsg>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl ClusterSender {
    pub fn new(
        tx: Sender<crate::cluster::ClusterMsg>,
        bytes: Arc<AtomicUsize>,
        max_bytes: usize,
    ) -> Self {
        ClusterSender {
            tx,
            bytes,
            max_bytes,
        }
    }

    pub fn try_send(
        &self,
        msg: crate::cluster::ClusterMsg,
    ) -> Result<(), TrySendError<crate::cluster::ClusterMsg>> {
        let w = msg.weight();
        let held = self.bytes.load(Ordering::Relaxed);
        if held != 0 && held + w > self.max_bytes {
            return Err(TrySendError::Full(msg));
        }
        // Charged before the send: the bridge may take the message (and release its bytes)
        // before this thread runs again.
        self.bytes.fetch_add(w, Ordering::Relaxed);
        self.tx.try_send(msg).inspect_err(|_| {
            self.bytes.fetch_sub(w, Ordering::Relaxed);
        })
    }
}
