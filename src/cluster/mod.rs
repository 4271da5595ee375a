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

/// The other nodes this process has heard of. Index 0 is this node; an index is never reused,
/// so a `ConnId` of a dead node never aliases a live one.
#[derive(Default)]
pub struct NodeTable {
    names: Vec<String>,
    alive: Vec<bool>,
    by_name: HashMap<String, u16>,
}

impl NodeTable {
    pub fn new() -> Self {
        NodeTable {
            names: vec![String::new()],
            alive: vec![true],
            by_name: HashMap::new(),
        }
    }

    /// The index of node `name`, adding it if new. `None` when the table is full.
    pub fn intern(&mut self, name: &str) -> Option<u16> {
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        let i = u16::try_from(self.names.len())
            .ok()
            .filter(|&i| i < u16::MAX)?;
        self.names.push(name.to_string());
        self.alive.push(true);
        self.by_name.insert(name.to_string(), i);
        Some(i)
    }

    pub fn name(&self, idx: u16) -> Option<&str> {
        if idx == 0 {
            return None;
        }
        self.names.get(usize::from(idx)).map(String::as_str)
    }

    pub fn lookup(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }

    /// Mark dead every known node not in `live`; returns the indexes that just died.
    pub fn reap(&mut self, live: &dyn Fn(&str) -> bool) -> Vec<u16> {
        let mut died = Vec::new();
        for (i, (name, alive)) in self.names.iter().zip(self.alive.iter_mut()).enumerate() {
            if i != 0 && *alive && !live(name) {
                *alive = false;
                died.extend(u16::try_from(i).ok());
            }
        }
        died
    }

    /// A node we had given up on talks again (its heartbeat came back).
    pub fn revive(&mut self, idx: u16) {
        if let Some(a) = self.alive.get_mut(usize::from(idx)) {
            *a = true;
        }
    }

    pub fn is_alive(&self, idx: u16) -> bool {
        self.alive.get(usize::from(idx)).copied().unwrap_or(false)
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
    fn node_indexes_are_never_reused() {
        let mut t = NodeTable::new();
        let a = t.intern("a").unwrap();
        let b = t.intern("b").unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(t.intern("a"), Some(1));
        assert_eq!(t.reap(&|n| n == "b"), vec![1]);
        assert!(!t.is_alive(1) && t.is_alive(2));
        assert_eq!(t.reap(&|n| n == "b"), Vec::<u16>::new());
        assert_eq!(t.intern("c"), Some(3));
        assert_eq!(t.name(0), None);
        assert_eq!(t.name(3), Some("c"));
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
