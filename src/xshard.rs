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
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Work for a shard.
pub enum ShardMsg {
    /// A freshly accepted socket (non-blocking, not yet registered).
    NewConn(mio::net::TcpStream),
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
    Find {
        user: ConnId,
        ticket: u32,
        interests: Vec<String>,
    },
    Next {
        user: ConnId,
        ticket: u32,
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

/// How other threads reach one shard.
#[derive(Clone)]
pub struct ShardHandle {
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
    wake_pending: Arc<AtomicBool>,
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
    pub fn new(tx: Sender<ShardMsg>, waker: Arc<Waker>) -> Self {
        ShardHandle {
            tx,
            waker,
            wake_pending: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Queue one message without blocking and wake the shard unless a wake is pending.
    pub fn try_send(&self, msg: ShardMsg) -> Result<(), SendError<ShardMsg>> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.wake();
                Ok(())
            }
            Err(TrySendError::Full(m)) => Err(SendError::Full(m)),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Disconnected),
        }
    }

    /// Blocking send, for threads that are not event loops (the matchmaker).
    pub fn send_blocking(&self, msg: ShardMsg) -> Result<(), SendError<ShardMsg>> {
        self.tx.send(msg).map_err(|_| SendError::Disconnected)?;
        self.wake();
        Ok(())
    }

    /// Move as much of `queue` into the inbox as fits, in order; wake at most once.
    /// Returns the number of messages sent.
    pub fn send_batch(&self, queue: &mut VecDeque<ShardMsg>) -> Result<usize, SendError<()>> {
        let mut sent = 0;
        while let Some(msg) = queue.pop_front() {
            match self.tx.try_send(msg) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(m)) => {
                    queue.push_front(m);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return Err(SendError::Disconnected),
            }
        }
        if sent > 0 {
            self.wake();
        }
        Ok(sent)
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

/// Outgoing cross-thread messages collected during one loop turn, sent at its end.
pub struct Outbox {
    pub to_shards: Vec<VecDeque<ShardMsg>>,
    pub to_matcher: VecDeque<MatchReq>,
    pub to_cluster: VecDeque<crate::cluster::ClusterMsg>,
}

impl Outbox {
    pub fn new(shards: usize) -> Self {
        Outbox {
            to_shards: (0..shards).map(|_| VecDeque::new()).collect(),
            to_matcher: VecDeque::new(),
            to_cluster: VecDeque::new(),
        }
    }

    /// Queue `peer` for the thread that reaches its connection: that connection's shard, or
    /// the Redis bridge when it lives on another node. (A message for the sending shard itself
    /// is delivered by that shard, not queued here.)
    pub fn push_to(&mut self, peer: Peer) {
        if peer.to.is_remote() {
            self.to_cluster
                .push_back(crate::cluster::ClusterMsg::Deliver(peer));
        } else if let Some(q) = self.to_shards.get_mut(usize::from(peer.to.shard)) {
            q.push_back(ShardMsg::Peer(peer));
        }
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
        cluster: Option<&Sender<crate::cluster::ClusterMsg>>,
    ) -> Result<usize, PeerGone> {
        let mut sent = 0;
        for (queue, handle) in self.to_shards.iter_mut().zip(shards) {
            if !queue.is_empty() {
                sent += handle.send_batch(queue).map_err(|_| PeerGone)?;
            }
        }
        while let Some(req) = self.to_matcher.pop_front() {
            match matcher.try_send(req) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(r)) => {
                    self.to_matcher.push_front(r);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return Err(PeerGone),
            }
        }
        match cluster {
            Some(tx) => {
                while let Some(msg) = self.to_cluster.pop_front() {
                    match tx.try_send(msg) {
                        Ok(()) => sent += 1,
                        Err(TrySendError::Full(m)) => {
                            self.to_cluster.push_front(m);
                            break;
                        }
                        Err(TrySendError::Disconnected(_)) => return Err(PeerGone),
                    }
                }
            }
            None => self.to_cluster.clear(),
        }
        Ok(sent)
    }
}
