//! The bridge thread: this node's only Redis command connection. Each turn it takes every
//! pending [`ClusterMsg`] and runs them as one pipeline, in order: pairing scripts, avoid
//! relations, and one `PUBLISH` per destination node carrying all records for it. Between
//! turns it heartbeats, watches the other nodes, and reconnects with backoff after an outage.
use super::sentinel::Resolver;
use super::subscriber::{SubCtl, SubEvent};
use super::target::{self, Endpoint, Kind};
use super::wire::{self, Record};
use super::{parse_uid, uid, ClusterMsg, ClusterStats, NodeTable, HEARTBEAT, TTL};
use crate::server::Shared;
use crate::xshard::{ConnId, MatchReq, ShardHandle, ShardMsg, CLUSTER_EPOCH};
use crossbeam_channel::{Receiver, Sender};
use log::{error, info, warn};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Each script is one EVAL, with the shared helpers of lib.lua in front. Public so that
// tests/matching_table.rs runs the very text the bridge loads.
pub const PAIR_LUA: &str = concat!(include_str!("lib.lua"), include_str!("pair.lua"));
pub const WITHDRAW_LUA: &str = concat!(include_str!("lib.lua"), include_str!("withdraw.lua"));
pub const AVOID_LUA: &str = concat!(include_str!("lib.lua"), include_str!("avoid.lua"));
pub const PURGE_LUA: &str = concat!(include_str!("lib.lua"), include_str!("purge.lua"));

const IO_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Short enough that a node back from a partition pairs across nodes again within about 5 s
/// (PROTOCOL.md), long enough that a fleet does not hammer a Redis that is down.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Messages taken per turn (one pipeline).
const BATCH: usize = 4096;
/// A payload is published once it holds this much.
const PAYLOAD_MAX: usize = 256 * 1024;

pub struct Bridge {
    pub endpoint: Endpoint,
    /// Behind Sentinels: asks them for the master on every connection.
    pub resolver: Option<Resolver>,
    /// The Redis of the current (or last) link: behind Sentinels it changes on failover.
    pub client: Option<redis::Client>,
    /// How logs name the Redis (no password).
    pub target: String,
    /// Connect again at once instead of after the backoff: a failover is under way and the
    /// new master may already be there.
    pub retry_now: bool,
    pub name: String,
    pub from_shards: Receiver<ClusterMsg>,
    /// Bytes waiting in `from_shards` (the shards charge them; released here).
    pub from_shards_bytes: Arc<AtomicUsize>,
    /// Replies for the matchmaker that its full inbox did not take yet. While any wait, the
    /// bridge takes no new request from the matchmaker, so neither thread ever blocks on the
    /// other (the matchmaker's sends to us do block, ours to it never do).
    pub matcher_backlog: VecDeque<MatchReq>,
    pub from_matcher: Receiver<ClusterMsg>,
    pub matcher: Sender<MatchReq>,
    pub shards: Vec<ShardHandle>,
    pub sub_ctl: Sender<SubCtl>,
    pub sub_events: Receiver<SubEvent>,
    pub table: Arc<Mutex<NodeTable>>,
    pub stats: Arc<ClusterStats>,
    pub shared: Arc<Shared>,
    /// The incarnation of the last link, retired when the next one connects.
    pub previous_id: Option<String>,
    /// The Redis Cluster refusal was logged (once until a link comes up again).
    pub refusal_logged: bool,
}

/// Why the link failed or could not be made.
#[derive(Debug)]
enum LinkError {
    /// Redis answered as a Redis Cluster endpoint, which cannot work (see
    /// [`target::cluster_refusal`]); the evidence.
    ClusterEndpoint(String),
    /// No connection (refused, timed out, dropped): worth retrying as it is.
    Unreachable(String),
    /// Redis answered but would not serve us (authentication, TLS, permissions, ...).
    Refused(String),
    /// The subscription to our channel failed (the subscriber's reason).
    Subscription(String),
    /// The subscriber did not confirm our channel in time.
    NoSubscription,
    /// The subscriber thread is gone.
    SubscriberGone,
    /// Our heartbeat key had expired: the other nodes may have ended our pairs and purged our
    /// queue entries, so this incarnation cannot go on.
    HeartbeatExpired,
    /// The node table's lock was poisoned by a panic elsewhere.
    TablePoisoned,
    /// The server is no longer the master (`READONLY`), or a Sentinel announced another one:
    /// ask the Sentinels again at once.
    Failover(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::ClusterEndpoint(e) | LinkError::Unreachable(e) | LinkError::Refused(e) => {
                f.write_str(e)
            }
            LinkError::Subscription(why) => write!(f, "relay subscription failed: {why}"),
            LinkError::NoSubscription => write!(f, "no pub/sub subscription within {IO_TIMEOUT:?}"),
            LinkError::SubscriberGone => f.write_str("subscriber thread gone"),
            LinkError::HeartbeatExpired => f.write_str("our heartbeat had expired"),
            LinkError::TablePoisoned => f.write_str("node table poisoned"),
            LinkError::Failover(e) => write!(f, "master changed: {e}"),
        }
    }
}

struct Shas {
    pair: String,
    withdraw: String,
    avoid: String,
    purge: String,
}

/// One incarnation's live link.
struct Link {
    con: redis::Connection,
    /// `name~random`: a node that restarts, or reconnects after an outage, is a new
    /// incarnation, so nothing addressed to the old one can reach the new one.
    id: String,
    shas: Shas,
    /// Next batch number per destination incarnation.
    seq_out: HashMap<String, u64>,
    next_beat: Instant,
    /// Heartbeats written by this incarnation.
    beats: u64,
}

/// What to do with the reply of one pipelined command.
enum Expect {
    Pair { user: ConnId, ticket: u32 },
}

impl Bridge {
    pub fn run(mut self) {
        let mut link: Option<Link> = None;
        let mut backoff = BACKOFF_MIN;
        let mut next_try = Instant::now();
        let mut down_logged = false;
        let mut batch: Vec<ClusterMsg> = Vec::with_capacity(BATCH);
        loop {
            if link.is_none() && Instant::now() >= next_try {
                let began = Instant::now();
                match self.connect() {
                    Ok(l) => {
                        let at = match (&self.endpoint, &self.client) {
                            (Endpoint::Sentinel(_), Some(c)) => {
                                format!(" (master {})", super::sentinel::addr_of(c))
                            }
                            _ => String::new(),
                        };
                        info!(
                            "cluster: connected to Redis at {}{at} as node {} (node name {})",
                            self.target, l.id, self.name
                        );
                        self.set_up(true);
                        backoff = BACKOFF_MIN;
                        down_logged = false;
                        self.refusal_logged = false;
                        link = Some(l);
                    }
                    Err(e) => {
                        ClusterStats::add(&self.stats.errors, 1);
                        // Only the first failure of an outage is a warning; the retries are
                        // here for whoever debugs one.
                        log::debug!("cluster: connecting failed: {e}");
                        match &e {
                            LinkError::ClusterEndpoint(evidence) => {
                                self.log_refusal(evidence);
                                down_logged = true;
                            }
                            LinkError::Unreachable(_) | LinkError::Failover(_) if !down_logged => {
                                warn!(
                                    "cluster: Redis unreachable at {} ({e}); pairing on this node only, retrying with backoff",
                                    self.target
                                );
                                down_logged = true;
                            }
                            _ if !down_logged => {
                                error!(
                                    "cluster: cannot use Redis at {} ({e}); pairing on this node only, retrying with backoff",
                                    self.target
                                );
                                down_logged = true;
                            }
                            _ => {}
                        }
                        // From the start of the attempt: time spent waiting for an unreachable Redis or
                        // Sentinel is part of the wait, so a node back from a partition retries
                        // within one backoff of the heal.
                        next_try = began + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            let wake_at = match &link {
                Some(l) => l.next_beat,
                None => next_try,
            };
            let timeout = wake_at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(5));
            if !self.flush_to_matcher() {
                return;
            }
            // While replies for the matchmaker wait, take none of its requests (they would
            // make more replies); wake up soon to retry.
            let matcher_open = self.matcher_backlog.is_empty();
            let never = crossbeam_channel::never();
            let from_matcher = if matcher_open {
                &self.from_matcher
            } else {
                &never
            };
            let timeout = if matcher_open {
                timeout
            } else {
                timeout.min(Duration::from_millis(1))
            };
            // Wait for work from the shards, the matchmaker or the subscriber.
            crossbeam_channel::select! {
                recv(self.from_shards) -> m => match m {
                    Ok(m) => {
                        self.from_shards_bytes.fetch_sub(m.weight(), Ordering::Relaxed);
                        batch.push(m)
                    }
                    Err(_) => return,
                },
                recv(from_matcher) -> m => match m {
                    Ok(m) => batch.push(m),
                    Err(_) => return,
                },
                recv(self.sub_events) -> ev => match ev {
                    Ok(ev) => self.on_sub_event(ev, &mut link),
                    Err(_) => return,
                },
                default(timeout) => {}
            }
            while let Ok(ev) = self.sub_events.try_recv() {
                self.on_sub_event(ev, &mut link);
            }
            if std::mem::take(&mut self.retry_now) && link.is_none() {
                next_try = Instant::now();
                backoff = BACKOFF_MIN;
            }
            if link.is_none() && !down_logged {
                // The subscriber reported the loss (and logged it): retry quietly.
                down_logged = true;
                next_try = Instant::now() + backoff;
            }
            // Shard messages first: a shard queues `Avoid` before it tells the matchmaker
            // about the `next` whose `Enqueue` follows.
            for m in self.from_shards.try_iter().take(BATCH) {
                self.from_shards_bytes
                    .fetch_sub(m.weight(), Ordering::Relaxed);
                batch.push(m);
            }
            if matcher_open {
                batch.extend(self.from_matcher.try_iter().take(BATCH));
            }
            let failed = match link.as_mut() {
                Some(l) => {
                    let r = if batch.is_empty() {
                        Ok(())
                    } else {
                        self.execute(l, &mut batch)
                    };
                    match r {
                        Ok(()) if Instant::now() >= l.next_beat => self.heartbeat(l),
                        other => other,
                    }
                }
                None => {
                    // Pairs across nodes were ended when the link went down; queue requests
                    // are the matchmaker's to retry.
                    ClusterStats::add(&self.stats.dropped_while_down, batch.len() as u64);
                    batch.clear();
                    Ok(())
                }
            };
            if let Err(e) = failed {
                ClusterStats::add(&self.stats.errors, 1);
                if let LinkError::ClusterEndpoint(evidence) = &e {
                    self.log_refusal(evidence);
                }
                warn!("cluster: lost the Redis link ({e}); ending cross-node chats, pairing on this node only");
                link = None;
                self.go_down();
                next_try = Instant::now() + backoff;
                if matches!(e, LinkError::Failover(_)) {
                    next_try = Instant::now();
                    backoff = BACKOFF_MIN;
                }
                down_logged = true;
            }
        }
    }

    fn on_sub_event(&mut self, ev: SubEvent, link: &mut Option<Link>) {
        match ev {
            SubEvent::Lost { channel, why } => {
                if let Some(l) = link {
                    if channel == channel_name(&l.id) {
                        ClusterStats::add(&self.stats.errors, 1);
                        warn!("cluster: relay subscription lost ({why}); ending cross-node chats, pairing on this node only");
                        *link = None;
                        self.go_down();
                    }
                }
            }
            SubEvent::Gap { node } => {
                // Tell the sender to end its side of our pairs too.
                if let Some(l) = link {
                    let name = self
                        .table
                        .lock()
                        .ok()
                        .and_then(|t| t.name(node).map(str::to_string));
                    if let Some(name) = name {
                        let mut payload = Vec::new();
                        let seq = next_seq(&mut l.seq_out, &name);
                        wire::begin(&mut payload, &l.id, seq);
                        wire::push(&mut payload, &Record::Reset);
                        let r: redis::RedisResult<()> = redis::cmd("PUBLISH")
                            .arg(channel_name(&name))
                            .arg(payload)
                            .query(&mut l.con);
                        if r.is_err() {
                            ClusterStats::add(&self.stats.errors, 1);
                        }
                    }
                }
            }
            SubEvent::Subscribed { .. } => {}
            SubEvent::SwitchMaster { to } => {
                let now_at = self.client.as_ref().map(super::sentinel::addr_of);
                match (link.as_ref(), &to) {
                    (Some(_), Some(t)) if now_at.as_deref() == Some(t.as_str()) => {
                        // Already on the new master (we reconnected before the announcement).
                    }
                    (Some(_), _) => {
                        ClusterStats::add(&self.stats.errors, 1);
                        warn!(
                            "cluster: the Sentinels moved the master to {}; reconnecting, ending cross-node chats",
                            to.as_deref().unwrap_or("another server")
                        );
                        *link = None;
                        self.go_down();
                        self.retry_now = true;
                    }
                    (None, _) => {
                        info!(
                            "cluster: the Sentinels moved the master to {}; connecting",
                            to.as_deref().unwrap_or("another server")
                        );
                        self.retry_now = true;
                    }
                }
            }
        }
    }

    fn log_refusal(&mut self, evidence: &str) {
        if !self.refusal_logged {
            error!(
                "cluster: {}. This node pairs its own clients only and keeps retrying; point \
                 --cluster at a standalone primary",
                target::cluster_refusal(&self.target, evidence)
            );
            self.refusal_logged = true;
        }
    }

    /// A Redis error as the link reports it: cluster replies recognised, the rest explained.
    fn link_err(&self, e: redis::RedisError) -> LinkError {
        if let Some(evidence) = target::cluster_evidence(&e) {
            return LinkError::ClusterEndpoint(evidence);
        }
        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) {
            // A demoted master (failover, or an operator's REPLICAOF): the data are elsewhere
            // now. Behind one managed endpoint the DNS name moves; behind Sentinels, ask them.
            return LinkError::Failover(e.to_string());
        }
        let x = target::explain(&e, self.endpoint.tls());
        if x.unreachable {
            LinkError::Unreachable(x.text)
        } else {
            LinkError::Refused(x.text)
        }
    }

    /// Hand waiting replies to the matchmaker without blocking. `false`: it is gone.
    fn flush_to_matcher(&mut self) -> bool {
        while let Some(req) = self.matcher_backlog.pop_front() {
            match self.matcher.try_send(req) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(r)) => {
                    self.matcher_backlog.push_front(r);
                    return true;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => return false,
            }
        }
        true
    }

    fn set_up(&mut self, up: bool) {
        self.stats.up.store(u64::from(up), Ordering::Relaxed);
        self.matcher_backlog.push_back(MatchReq::ClusterLink { up });
    }

    /// The link is gone: every cross-node pair ends now (we can no longer prove their messages
    /// arrive), and the matchmaker takes its queued users back after the heartbeat expires.
    fn go_down(&mut self) {
        ClusterStats::add(&self.stats.link_losses, 1);
        let _ = self.sub_ctl.send(SubCtl::Unsubscribe);
        for h in &self.shards {
            let _ = h.send_blocking(ShardMsg::NodeDown { node: 0 });
        }
        self.stats.nodes.store(0, Ordering::Relaxed);
        self.set_up(false);
    }

    fn connect(&mut self) -> Result<Link, LinkError> {
        ClusterStats::add(&self.stats.connects, 1);
        let client = match (&self.endpoint, self.resolver.as_mut()) {
            (Endpoint::Direct(c), _) => c.clone(),
            (Endpoint::Sentinel(_), Some(r)) => {
                r.master(IO_TIMEOUT).map_err(LinkError::Unreachable)?
            }
            (Endpoint::Sentinel(_), None) => {
                return Err(LinkError::Unreachable("no Sentinel lookup thread".into()))
            }
        };
        self.client = Some(client.clone());
        let mut con = client
            .get_connection_with_timeout(IO_TIMEOUT)
            .map_err(|e| self.link_err(e))?;
        con.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| self.link_err(e))?;
        con.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| self.link_err(e))?;
        // Checked on every connection: the endpoint may have been replaced since the last.
        match target::probe_kind(&mut con) {
            Ok(Kind::Standalone) => {}
            Ok(Kind::Cluster(evidence)) => return Err(LinkError::ClusterEndpoint(evidence)),
            Err(e) => return Err(self.link_err(e)),
        }
        let id = format!("{}~{:08x}", self.name, super::random_u64() as u32);
        // One round trip for the four scripts, not four: on a link with 80 ms round trips
        // (another zone) that is a quarter of a second sooner back after an outage or a
        // failover.
        let mut pipe = redis::pipe();
        for src in [PAIR_LUA, WITHDRAW_LUA, AVOID_LUA, PURGE_LUA] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(src);
        }
        let (pair, withdraw, avoid, purge): (String, String, String, String) =
            pipe.query(&mut con).map_err(|e| self.link_err(e))?;
        let shas = Shas {
            pair,
            withdraw,
            avoid,
            purge,
        };
        // Named, so an operator's CLIENT LIST shows which node each connection belongs to;
        // on its own, because a Redis that refuses the name must still be usable.
        let _: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("roulette-{id}-cmd"))
            .query(&mut con);
        // Listen before anyone can learn our id, so nothing sent to us is missed.
        let channel = channel_name(&id);
        self.sub_ctl
            .send(SubCtl::Subscribe {
                channel: channel.clone(),
                client: Box::new(client),
                tls: self.endpoint.tls(),
            })
            .map_err(|_| LinkError::SubscriberGone)?;
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.sub_events.recv_timeout(left) {
                Ok(SubEvent::Subscribed { channel: c }) if c == channel => break,
                Ok(SubEvent::Lost { channel: c, why }) if c == channel => {
                    return Err(LinkError::Subscription(why))
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = self.sub_ctl.send(SubCtl::Unsubscribe);
                    return Err(LinkError::NoSubscription);
                }
            }
        }
        let mut link = Link {
            con,
            id,
            shas,
            seq_out: HashMap::new(),
            next_beat: Instant::now(),
            beats: 0,
        };
        // Our previous incarnation (before an outage) is over: say so now, so the other nodes
        // end their pairs with it at their next scan instead of when its heartbeat expires.
        if let Some(prev) = self.previous_id.take() {
            let r: redis::RedisResult<u64> = redis::cmd("EVALSHA")
                .arg(&link.shas.purge)
                .arg(0)
                .arg(&prev)
                .query(&mut link.con);
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(format!("rl:node:{prev}"))
                .query(&mut link.con);
            if let Ok(n) = r {
                info!("cluster: retired our previous incarnation {prev} ({n} queue entries)");
            }
        }
        self.heartbeat(&mut link)?;
        self.previous_id = Some(link.id.clone());
        Ok(link)
    }

    /// Run one batch as a single pipeline, in the order the messages were sent.
    ///
    /// That single pipeline on the single command connection is what orders "avoid" before
    /// `partner_left`: a shard that ends a chat by `next`/`find` queues `Avoid` and then the
    /// `partner_left` for a remote partner, in that order, on its one channel to this thread;
    /// here the `EVALSHA avoid` comes before the `PUBLISH` that carries the record, and Redis
    /// runs a connection's commands in order. So by the time the partner can act on
    /// `partner_left` (say, `find` again), the relation is stored and the pairing script
    /// honours it. Shard messages are taken before the matchmaker's in each turn for the same
    /// reason: the `Avoid` of a `next` precedes the `Enqueue` that follows it.
    fn execute(&mut self, l: &mut Link, batch: &mut Vec<ClusterMsg>) -> Result<(), LinkError> {
        let mut pipe = redis::pipe();
        let mut expect: Vec<Expect> = Vec::new();
        // Payloads being built, by destination node index.
        let mut payloads: Vec<(u16, Vec<u8>)> = Vec::new();
        let mut records = 0u64;
        let mut publishes = 0u64;
        let table = match self.table.lock() {
            Ok(t) => t,
            Err(_) => return Err(LinkError::TablePoisoned),
        };
        let mut flush = |pipe: &mut redis::Pipeline, payloads: &mut Vec<(u16, Vec<u8>)>| {
            for (node, payload) in payloads.drain(..) {
                if let Some(name) = table.name(node) {
                    pipe.cmd("PUBLISH")
                        .arg(channel_name(name))
                        .arg(payload)
                        .ignore();
                    publishes += 1;
                }
            }
        };
        for msg in batch.drain(..) {
            let (to, rec) = match &msg {
                ClusterMsg::Deliver(peer) => (peer.to, Record::of(peer)),
                other => {
                    // Commands keep their place relative to the records around them.
                    flush(&mut pipe, &mut payloads);
                    match other {
                        ClusterMsg::Avoid { a, b } => {
                            let Some(bu) = conn_uid(&table, &l.id, *b) else {
                                continue;
                            };
                            pipe.cmd("EVALSHA")
                                .arg(&l.shas.avoid)
                                .arg(0)
                                .arg("set")
                                .arg(uid(&l.id, *a))
                                .arg(bu)
                                .ignore();
                        }
                        ClusterMsg::ClearAvoid { user } => {
                            pipe.cmd("EVALSHA")
                                .arg(&l.shas.avoid)
                                .arg(0)
                                .arg("clear")
                                .arg(uid(&l.id, *user))
                                .ignore();
                        }
                        ClusterMsg::Enqueue {
                            user,
                            ticket,
                            interests,
                            open,
                        } => {
                            let tags =
                                serde_json::to_string(interests).unwrap_or_else(|_| "[]".into());
                            pipe.cmd("EVALSHA")
                                .arg(&l.shas.pair)
                                .arg(0)
                                .arg("q")
                                .arg(uid(&l.id, *user))
                                .arg(&l.id)
                                .arg(*ticket)
                                .arg(if *open { "1" } else { "0" })
                                .arg(tags);
                            expect.push(Expect::Pair {
                                user: *user,
                                ticket: *ticket,
                            });
                        }
                        ClusterMsg::OpenUp { user, ticket } => {
                            pipe.cmd("EVALSHA")
                                .arg(&l.shas.pair)
                                .arg(0)
                                .arg("o")
                                .arg(uid(&l.id, *user))
                                .arg(&l.id)
                                .arg(*ticket)
                                .arg("1")
                                .arg("[]");
                            expect.push(Expect::Pair {
                                user: *user,
                                ticket: *ticket,
                            });
                        }
                        ClusterMsg::Withdraw { user } => {
                            pipe.cmd("EVALSHA")
                                .arg(&l.shas.withdraw)
                                .arg(0)
                                .arg(uid(&l.id, *user))
                                .ignore();
                        }
                        _ => {}
                    }
                    continue;
                }
            };
            if !table.is_alive(to.node) {
                continue;
            }
            let Some(name) = table.name(to.node) else {
                continue;
            };
            let idx = match payloads.iter().position(|(n, _)| *n == to.node) {
                Some(i) => i,
                None => {
                    let mut p = Vec::with_capacity(256);
                    wire::begin(&mut p, &l.id, next_seq(&mut l.seq_out, name));
                    payloads.push((to.node, p));
                    payloads.len() - 1
                }
            };
            if let Some((_, p)) = payloads.get_mut(idx) {
                wire::push(p, &rec);
                records += 1;
                if p.len() >= PAYLOAD_MAX {
                    let full = payloads.swap_remove(idx);
                    flush(&mut pipe, &mut vec![full]);
                }
            }
        }
        flush(&mut pipe, &mut payloads);
        drop(table);
        if pipe.cmd_iter().next().is_none() {
            return Ok(());
        }
        let t0 = Instant::now();
        let replies: Vec<redis::Value> = pipe.query(&mut l.con).map_err(|e| self.link_err(e))?;
        self.stats
            .roundtrip_seconds
            .observe(t0.elapsed().as_secs_f64());
        ClusterStats::add(&self.stats.roundtrips, 1);
        ClusterStats::add(&self.stats.records_out, records);
        ClusterStats::add(&self.stats.publishes, publishes);
        for (e, v) in expect.into_iter().zip(replies) {
            match e {
                Expect::Pair { user, ticket } => self.on_pair_reply(l, user, ticket, v),
            }
        }
        Ok(())
    }

    fn on_pair_reply(&mut self, l: &Link, user: ConnId, ticket: u32, v: redis::Value) {
        let parts: Vec<String> = match redis::from_redis_value(v) {
            Ok(p) => p,
            Err(_) => {
                ClusterStats::add(&self.stats.errors, 1);
                return;
            }
        };
        log::debug!("cluster: pairing script for {user:?} ticket {ticket}: {parts:?}");
        match parts.first().map(String::as_str) {
            Some("paired") => {}
            Some("queued") => {
                ClusterStats::add(&self.stats.queued, 1);
                return;
            }
            _ => return,
        }
        let (Some(puid), Some(pticket), Some(epoch), Some(common)) =
            (parts.get(1), parts.get(2), parts.get(3), parts.get(4))
        else {
            ClusterStats::add(&self.stats.errors, 1);
            return;
        };
        let Some((node, shard, slot, gen)) = parse_uid(puid) else {
            ClusterStats::add(&self.stats.errors, 1);
            return;
        };
        let node = if node == l.id {
            Some(0)
        } else {
            self.table.lock().ok().and_then(|mut t| t.intern(node))
        };
        let (Some(node), Ok(pticket), Ok(epoch)) = (node, pticket.parse(), epoch.parse::<u64>())
        else {
            ClusterStats::add(&self.stats.errors, 1);
            return;
        };
        let common: Vec<String> = serde_json::from_str(common).unwrap_or_default();
        ClusterStats::add(&self.stats.pairs, 1);
        self.matcher_backlog.push_back(MatchReq::ClusterPaired {
            user,
            ticket,
            partner: ConnId {
                node,
                shard,
                slot,
                gen,
            },
            partner_ticket: pticket,
            epoch: epoch | CLUSTER_EPOCH,
            common,
        });
    }

    /// Refresh our heartbeat (with this node's client count), read everyone's, purge the
    /// dead, end our pairs with them, prove our own channel still delivers.
    fn heartbeat(&self, l: &mut Link) -> Result<(), LinkError> {
        l.next_beat = Instant::now() + HEARTBEAT;
        let local = self.shared.online.load(Ordering::Relaxed) as u64;
        let mut tick = Vec::with_capacity(32);
        wire::begin(&mut tick, &l.id, 0);
        wire::push(&mut tick, &Record::Tick);
        let t0 = Instant::now();
        let (previous, _, _, members): (Option<String>, (), (), Vec<String>) = redis::pipe()
            .cmd("SET")
            .arg(format!("rl:node:{}", l.id))
            .arg(local)
            .arg("PX")
            .arg(TTL.as_millis() as u64)
            .arg("GET")
            .cmd("SADD")
            .arg("rl:nodes")
            .arg(&l.id)
            .cmd("PUBLISH")
            .arg(channel_name(&l.id))
            .arg(tick)
            .cmd("SMEMBERS")
            .arg("rl:nodes")
            .query(&mut l.con)
            .map_err(|e| self.link_err(e))?;
        self.stats
            .roundtrip_seconds
            .observe(t0.elapsed().as_secs_f64());
        ClusterStats::add(&self.stats.roundtrips, 1);
        if previous.is_none() && l.beats > 0 {
            // Our heartbeat expired (Redis stalled, or restarted and came back within a
            // beat): the other nodes may have ended our pairs and purged our queue entries.
            // Start over as a new incarnation rather than guess what survived.
            return Err(LinkError::HeartbeatExpired);
        }
        l.beats += 1;
        let t0 = Instant::now();
        let keys: Vec<String> = members.iter().map(|m| format!("rl:node:{m}")).collect();
        // Read as text: one malformed value (written by anything but a roulette node) must not
        // make every heartbeat fail. A heartbeat key that exists is a live node, whatever it
        // holds; its client count counts only when it is a number.
        let counts: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            redis::cmd("MGET")
                .arg(&keys)
                .query(&mut l.con)
                .map_err(|e| self.link_err(e))?
        };
        if !keys.is_empty() {
            self.stats
                .roundtrip_seconds
                .observe(t0.elapsed().as_secs_f64());
            ClusterStats::add(&self.stats.roundtrips, 1);
        }
        let mut total = local;
        let mut live = HashSet::new();
        let mut dead = Vec::new();
        for (m, c) in members.iter().zip(&counts) {
            match c {
                Some(n) => {
                    if *m != l.id {
                        total += n.trim().parse::<u64>().unwrap_or(0);
                        live.insert(m.clone());
                    }
                }
                None => dead.push(m.clone()),
            }
        }
        for m in &dead {
            let removed: Result<u64, _> = redis::cmd("EVALSHA")
                .arg(&l.shas.purge)
                .arg(0)
                .arg(m)
                .query(&mut l.con);
            match removed {
                Ok(n) => {
                    info!("cluster: node {m} stopped heartbeating; purged its {n} queue entries")
                }
                Err(e) => return Err(self.link_err(e)),
            }
        }
        self.stats
            .nodes
            .store(live.len() as u64 + 1, Ordering::Relaxed);
        self.stats.online_total.store(total, Ordering::Relaxed);
        self.stats
            .online_local_at_beat
            .store(local, Ordering::Relaxed);
        let died = match self.table.lock() {
            Ok(mut t) => {
                for m in &live {
                    if let Some(i) = t.lookup(m) {
                        t.revive(i);
                    }
                }
                let now = Instant::now();
                let died = t.reap(&|n| live.contains(n), now);
                t.forget_dead(now);
                died
            }
            Err(_) => Vec::new(),
        };
        for node in died {
            ClusterStats::add(&self.stats.nodes_down, 1);
            for h in &self.shards {
                let _ = h.send_blocking(ShardMsg::NodeDown { node });
            }
        }
        Ok(())
    }
}

/// The pub/sub channel of node incarnation `id`.
pub fn channel_name(id: &str) -> String {
    format!("{CHANNEL_PREFIX}{id}")
}

/// Channel names are this plus the incarnation id.
pub const CHANNEL_PREFIX: &str = "rl:n:";

fn next_seq(seqs: &mut HashMap<String, u64>, dest: &str) -> u64 {
    let s = seqs.entry(dest.to_string()).or_insert(0);
    *s += 1;
    *s
}

fn conn_uid(table: &NodeTable, self_id: &str, c: ConnId) -> Option<String> {
    if c.is_remote() {
        table.name(c.node).map(|n| uid(n, c))
    } else {
        Some(uid(self_id, c))
    }
}
