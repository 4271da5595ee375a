//! Cluster mode: several nodes share one Redis to pair and relay strangers across nodes.
//!
//! Two threads own the Redis I/O, so a shard never blocks on Redis:
//! - the **bridge** ([`bridge`]) owns the command connection. It takes [`ClusterMsg`]s from
//!   the shards (bounded channel, `try_send` + outbox, like cross-shard traffic) and from the
//!   matchmaker (unbounded), runs each batch as one pipeline (Lua pairing scripts, one
//!   `PUBLISH` per destination node carrying every record for it), heartbeats, watches the
//!   other nodes, and reconnects with backoff.
//! - the **subscriber** ([`subscriber`]) owns the pub/sub connection on this node's channel and
//!   hands decoded records to the shards as ordinary [`ShardMsg`](crate::xshard::ShardMsg)s.
//!
//! See ARCHITECTURE.md ("Cluster") for the design and its trade-offs.
pub mod bridge;
pub mod queue;
pub mod sentinel;
pub mod subscriber;
pub mod target;
pub mod wire;

use crate::shard::stats::{AtomicHistogram, MATCH_WAIT_BUCKETS};
use crate::xshard::{ConnId, Peer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Heartbeat period, and the lifetime of a heartbeat key: a node silent for `TTL` is dead.
/// A killed node's partners hear of it within TTL + HEARTBEAT (6 s; the protocol allows 10).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const TTL: Duration = Duration::from_secs(5);

/// Work for the Redis bridge.
pub enum ClusterMsg {
    /// A message for a connection on another node (the same messages shards exchange; the
    /// bridge publishes it to that node as one wire record).
    Deliver(Peer),
    /// Our `a` ended its chat with `b` by `next`/`find`: no re-pair for now.
    Avoid { a: ConnId, b: ConnId },
    /// Our `user` paired with someone else here, or disconnected: its avoid relation ends.
    ClearAvoid { user: ConnId },
    /// From the matchmaker: no partner on this node; pair `user` in the cluster queue or queue
    /// it there. Only the pairing script may claim it from now on.
    Enqueue {
        user: ConnId,
        ticket: u32,
        interests: Vec<String>,
        open: bool,
    },
    /// From the matchmaker: the interest wait of queued `user` passed.
    OpenUp { user: ConnId, ticket: u32 },
    /// From the matchmaker: `user` left the queue (`find` again, `leave`, gone).
    Withdraw { user: ConnId },
}

impl ClusterMsg {
    /// Its weight against the byte bound of the shards' queue to the bridge.
    pub fn weight(&self) -> usize {
        match self {
            ClusterMsg::Deliver(Peer {
                msg: crate::xshard::PeerMsg::Relay { frame, .. },
                ..
            }) => crate::xshard::MSG_BYTES + frame.len(),
            _ => crate::xshard::MSG_BYTES,
        }
    }
}

/// The other nodes this process has heard of. Index 0 is this node. An index is not reused
/// while anything may still name it: only after its node has been dead for
/// [`NodeTable::REUSE_AFTER`] (every pair with it ended when it died), so a `ConnId` of a dead
/// node never aliases a live one, and the table stays as small as the nodes of the last
/// minutes, however often nodes restart.
#[derive(Default)]
pub struct NodeTable {
    names: Vec<String>,
    alive: Vec<bool>,
    /// When each dead node was found dead.
    dead_since: Vec<Option<std::time::Instant>>,
    by_name: HashMap<String, u16>,
    /// Indexes free for reuse.
    free: Vec<u16>,
}

impl NodeTable {
    /// How long a dead node's index stays reserved.
    pub const REUSE_AFTER: Duration = Duration::from_secs(600);

    pub fn new() -> Self {
        NodeTable {
            names: vec![String::new()],
            alive: vec![true],
            dead_since: vec![None],
            by_name: HashMap::new(),
            free: Vec::new(),
        }
    }

    /// The index of node `name`, adding it if new. `None` when the table is full.
    pub fn intern(&mut self, name: &str) -> Option<u16> {
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u16::try_from(self.names.len())
                    .ok()
                    .filter(|&i| i < u16::MAX)?;
                self.names.push(String::new());
                self.alive.push(true);
                self.dead_since.push(None);
                i
            }
        };
        let at = usize::from(i);
        if let (Some(n), Some(a), Some(d)) = (
            self.names.get_mut(at),
            self.alive.get_mut(at),
            self.dead_since.get_mut(at),
        ) {
            *n = name.to_string();
            *a = true;
            *d = None;
        }
        self.by_name.insert(name.to_string(), i);
        Some(i)
    }

    pub fn name(&self, idx: u16) -> Option<&str> {
        if idx == 0 {
            return None;
        }
        self.names
            .get(usize::from(idx))
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    pub fn lookup(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }

    /// Mark dead every known node not in `live`; returns the indexes that just died.
    pub fn reap(&mut self, live: &dyn Fn(&str) -> bool, now: std::time::Instant) -> Vec<u16> {
        let mut died = Vec::new();
        for (i, ((name, alive), since)) in self
            .names
            .iter()
            .zip(self.alive.iter_mut())
            .zip(self.dead_since.iter_mut())
            .enumerate()
        {
            if i != 0 && *alive && !name.is_empty() && !live(name) {
                *alive = false;
                *since = Some(now);
                died.extend(u16::try_from(i).ok());
            }
        }
        died
    }

    /// Free the indexes of nodes dead for longer than [`Self::REUSE_AFTER`].
    pub fn forget_dead(&mut self, now: std::time::Instant) {
        for (i, (name, since)) in self.names.iter_mut().zip(&mut self.dead_since).enumerate() {
            if since.is_some_and(|t| now.duration_since(t) >= Self::REUSE_AFTER) {
                self.by_name.remove(name.as_str());
                name.clear();
                *since = None;
                self.free.extend(u16::try_from(i).ok());
            }
        }
    }

    /// A node we had given up on talks again (its heartbeat came back).
    pub fn revive(&mut self, idx: u16) {
        let at = usize::from(idx);
        if let (Some(a), Some(d)) = (self.alive.get_mut(at), self.dead_since.get_mut(at)) {
            *a = true;
            *d = None;
        }
    }

    pub fn is_alive(&self, idx: u16) -> bool {
        self.alive.get(usize::from(idx)).copied().unwrap_or(false)
    }

    /// Is `name` a node we know and believe alive?
    pub fn is_live_name(&self, name: &str) -> bool {
        self.lookup(name).is_some_and(|i| self.is_alive(i))
    }

    /// Nodes with an entry (alive or dead but not forgotten), for tests and metrics.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Counters and gauges of the cluster path, read by the metrics endpoint.
pub struct ClusterStats {
    pub up: AtomicU64,
    pub nodes: AtomicU64,
    /// Clients on every node at the last heartbeat, and this node's share of that.
    pub online_total: AtomicU64,
    pub online_local_at_beat: AtomicU64,
    pub connects: AtomicU64,
    pub link_losses: AtomicU64,
    pub roundtrips: AtomicU64,
    pub roundtrip_seconds: AtomicHistogram<12>,
    pub errors: AtomicU64,
    pub records_out: AtomicU64,
    pub records_in: AtomicU64,
    pub publishes: AtomicU64,
    pub payloads_in: AtomicU64,
    pub dropped_while_down: AtomicU64,
    pub pairs: AtomicU64,
    pub queued: AtomicU64,
    pub nodes_down: AtomicU64,
    pub gaps: AtomicU64,
}

impl Default for ClusterStats {
    fn default() -> Self {
        ClusterStats {
            up: AtomicU64::new(0),
            nodes: AtomicU64::new(0),
            online_total: AtomicU64::new(0),
            online_local_at_beat: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            link_losses: AtomicU64::new(0),
            roundtrips: AtomicU64::new(0),
            roundtrip_seconds: AtomicHistogram::new(&MATCH_WAIT_BUCKETS),
            errors: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            publishes: AtomicU64::new(0),
            payloads_in: AtomicU64::new(0),
            dropped_while_down: AtomicU64::new(0),
            pairs: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            nodes_down: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
        }
    }
}

impl ClusterStats {
    /// Every counter and gauge with its field name; destructured without `..` so that a new
    /// field must be listed (and, through the exposition test, exported).
    pub fn each<'a>(&'a self, mut f: impl FnMut(&'static str, &'a AtomicU64)) {
        let ClusterStats {
            up,
            nodes,
            online_total,
            online_local_at_beat,
            connects,
            link_losses,
            roundtrips,
            errors,
            records_out,
            records_in,
            publishes,
            payloads_in,
            dropped_while_down,
            pairs,
            queued,
            nodes_down,
            gaps,
            roundtrip_seconds: _,
        } = self;
        f("up", up);
        f("nodes", nodes);
        f("online_total", online_total);
        f("online_local_at_beat", online_local_at_beat);
        f("connects", connects);
        f("link_losses", link_losses);
        f("roundtrips", roundtrips);
        f("errors", errors);
        f("records_out", records_out);
        f("records_in", records_in);
        f("publishes", publishes);
        f("payloads_in", payloads_in);
        f("dropped_while_down", dropped_while_down);
        f("pairs", pairs);
        f("queued", queued);
        f("nodes_down", nodes_down);
        f("gaps", gaps);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed) == 1
    }
}

/// The default node name: the host name plus a random suffix.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .take(48)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    format!("{host}-{:04x}", random_u64() & 0xffff)
}

/// Random enough for names and incarnations (not for secrets): std's per-process random hash
/// keys mixed with the time and pid.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// How a connection is named in Redis: `NODE/shard.slot.gen`.
pub fn uid(node: &str, c: ConnId) -> String {
    format!("{node}/{}.{}.{}", c.shard, c.slot, c.gen)
}

/// Parse a uid into its node name and the connection on that node.
pub fn parse_uid(uid: &str) -> Option<(&str, u16, u32, u32)> {
    let (node, conn) = uid.rsplit_once('/')?;
    let mut it = conn.split('.');
    let shard = it.next()?.parse().ok()?;
    let slot = it.next()?.parse().ok()?;
    let gen = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((node, shard, slot, gen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_round_trip() {
        let c = ConnId::local(3, 70_000, u32::MAX);
        let u = uid("web-1~00ff00ff", c);
        assert_eq!(u, "web-1~00ff00ff/3.70000.4294967295");
        assert_eq!(parse_uid(&u), Some(("web-1~00ff00ff", 3, 70_000, u32::MAX)));
        assert_eq!(parse_uid("x/1.2"), None);
        assert_eq!(parse_uid("x/1.2.3.4"), None);
        assert_eq!(parse_uid("1.2.3"), None);
        assert_eq!(parse_uid("a/b/1.2.3"), Some(("a/b", 1, 2, 3)));
    }

    #[test]
    fn node_indexes_are_not_reused_while_they_may_be_named() {
        let t0 = std::time::Instant::now();
        let mut t = NodeTable::new();
        let a = t.intern("a").unwrap();
        let b = t.intern("b").unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(t.intern("a"), Some(1));
        assert_eq!(t.reap(&|n| n == "b", t0), vec![1]);
        assert!(!t.is_alive(1) && t.is_alive(2));
        assert_eq!(t.reap(&|n| n == "b", t0), Vec::<u16>::new());
        assert_eq!(t.intern("c"), Some(3));
        assert_eq!(t.name(0), None);
        assert_eq!(t.name(3), Some("c"));
        // Dead for less than the grace period: still reserved.
        t.forget_dead(t0 + NodeTable::REUSE_AFTER / 2);
        assert_eq!(t.intern("d"), Some(4));
        assert_eq!(t.name(1), Some("a"));
        // After it, forgotten, and the index serves the next new node.
        t.forget_dead(t0 + NodeTable::REUSE_AFTER);
        assert_eq!(t.name(1), None);
        assert_eq!(t.lookup("a"), None);
        assert_eq!(t.intern("e"), Some(1));
        assert!(t.is_alive(1));
    }

    #[test]
    fn the_node_table_stays_small_however_many_incarnations_come_and_go() {
        let mut now = std::time::Instant::now();
        let mut t = NodeTable::new();
        for i in 0..100_000u32 {
            let name = format!("n~{i}");
            assert!(
                t.intern(&name).is_some(),
                "table full after {i} incarnations"
            );
            t.reap(&|n| n != name, now);
            now += Duration::from_secs(1);
            t.forget_dead(now);
        }
        assert!(t.len() <= 601, "{} entries", t.len());
    }

    #[test]
    fn default_names_are_valid_and_differ() {
        let a = default_node_name();
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
        assert_ne!(random_u64(), random_u64());
    }
}
