//! The matchmaker thread: owns the pure [`Matchmaker`], takes requests from every shard, and
//! sends each new pair to the shard of its side `a`.
//!
//! In a cluster it also decides who goes to the cluster queue in Redis: a user with no partner
//! on this node waits here for `--cluster-hold`, then is handed to the bridge (`Enqueue`) and
//! from then on only the pairing script may claim it (see ARCHITECTURE.md, "Cluster").
use crate::chat::matchmaker::{Matchmaker, Pairing, Status};
use crate::cluster::bridge::{HEARTBEAT, TTL};
use crate::cluster::ClusterMsg;
use crate::xshard::{ConnId, MatchReq, ShardHandle, ShardMsg};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters the metrics endpoint reads.
#[derive(Default)]
pub struct MatchStats {
    pub requests: AtomicU64,
    pub pairings: AtomicU64,
    pub waiting: AtomicU64,
    pub paired: AtomicU64,
}

/// The matchmaker's side of cluster mode.
pub struct ClusterSide {
    pub bridge: Sender<ClusterMsg>,
    pub hold: Duration,
}

struct Cluster {
    bridge: Sender<ClusterMsg>,
    hold: Duration,
    up: bool,
    /// Users waiting here for a local partner before they are published, oldest first.
    holding: VecDeque<(Instant, ConnId, u32)>,
    /// Users in the cluster queue, with the ticket they were queued under. Their interests
    /// stay in the matchmaker (`last_interests`), which forgets nothing about a queued user.
    published: HashMap<ConnId, u32>,
    /// When published users' interest waits pass.
    open_timers: BTreeMap<(Instant, ConnId), u32>,
    /// After the link is lost, published users may still be claimed by other nodes until our
    /// heartbeat expires; only then do they come back to this node's queue.
    quarantine: HashMap<ConnId, u32>,
    quarantine_until: Option<Instant>,
}

impl Cluster {
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.holding.front().map(|h| h.0),
            self.open_timers.first_key_value().map(|(k, _)| k.0),
            self.quarantine_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// `user` asked for something new: take it out of the cluster queue if it is there.
    fn forget(&mut self, user: ConnId) {
        if self.published.remove(&user).is_some() {
            let _ = self.bridge.send(ClusterMsg::Withdraw { user });
        }
        self.quarantine.remove(&user);
    }

    fn is_waiting_here(&self, user: ConnId) -> bool {
        self.published.contains_key(&user) || self.quarantine.contains_key(&user)
    }

    /// Hand `user` (waiting in `mm`) to the cluster queue.
    fn publish(&mut self, mm: &mut Matchmaker<ConnId>, user: ConnId) {
        let Some(w) = mm.take_waiting(user) else {
            return;
        };
        log::debug!(
            "matchmaker: {user:?} joins the cluster queue (ticket {})",
            w.ticket
        );
        let _ = self.bridge.send(ClusterMsg::Enqueue {
            user,
            ticket: w.ticket,
            interests: mm.last_interests(user).to_vec(),
            open: w.open,
        });
        if let Some(at) = w.open_at {
            self.open_timers.insert((at, user), w.ticket);
        }
        self.published.insert(user, w.ticket);
    }
}

pub fn run(
    inbox: Receiver<MatchReq>,
    shards: Vec<ShardHandle>,
    interest_wait: Duration,
    stats: Arc<MatchStats>,
    cluster: Option<ClusterSide>,
) {
    let mut mm: Matchmaker<ConnId> = Matchmaker::new(interest_wait);
    let mut cl = cluster.map(|c| Cluster {
        bridge: c.bridge,
        hold: c.hold,
        up: false,
        holding: VecDeque::new(),
        published: HashMap::new(),
        open_timers: BTreeMap::new(),
        quarantine: HashMap::new(),
        quarantine_until: None,
    });
    let mut made: Vec<Pairing<ConnId>> = Vec::new();
    loop {
        let deadline = [
            mm.next_deadline(),
            cl.as_ref().and_then(Cluster::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let first = match inbox.recv_timeout(timeout) {
            Ok(req) => Some(req),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let now = Instant::now();
        // Handle everything that is queued in one go.
        for req in first.into_iter().chain(inbox.try_iter()) {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let pairing = match req {
                MatchReq::Find {
                    user,
                    ticket,
                    interests,
                } => {
                    if let Some(c) = cl.as_mut() {
                        c.forget(user);
                    }
                    let p = mm.find(user, ticket, interests, now);
                    hold_if_unpaired(&mut cl, &p, user, ticket, now);
                    p
                }
                MatchReq::Next { user, ticket } => {
                    if cl.as_ref().is_some_and(|c| c.is_waiting_here(user)) {
                        None
                    } else {
                        let p = mm.next(user, ticket, now);
                        hold_if_unpaired(&mut cl, &p, user, ticket, now);
                        p
                    }
                }
                MatchReq::Leave { user } => {
                    if let Some(c) = cl.as_mut() {
                        c.forget(user);
                    }
                    mm.leave(user);
                    None
                }
                MatchReq::Gone { user } => {
                    if let Some(c) = cl.as_mut() {
                        c.forget(user);
                    }
                    mm.remove(user);
                    None
                }
                MatchReq::ClusterPaired {
                    user,
                    ticket,
                    partner,
                    partner_ticket,
                    epoch,
                    common,
                } => {
                    if let Some(c) = cl.as_mut() {
                        let current = c.published.get(&user) == Some(&ticket);
                        if current {
                            c.published.remove(&user);
                        }
                        if !partner.is_remote()
                            && c.published.get(&partner) == Some(&partner_ticket)
                        {
                            c.published.remove(&partner);
                        }
                        if current {
                            mm.pair_external(user, partner, epoch);
                        }
                    }
                    // A stale `user` is the shard's to notice: it tells the partner.
                    Some(Pairing {
                        a: user,
                        a_ticket: ticket,
                        b: partner,
                        b_ticket: partner_ticket,
                        epoch,
                        common,
                    })
                }
                MatchReq::Claimed {
                    user,
                    ticket,
                    partner,
                    epoch,
                } => {
                    if let Some(c) = cl.as_mut() {
                        if c.published.get(&user) == Some(&ticket) {
                            c.published.remove(&user);
                            mm.pair_external(user, partner, epoch);
                        }
                    }
                    None
                }
                MatchReq::ClusterLink { up } => {
                    if let Some(c) = cl.as_mut() {
                        made.extend(on_link(c, &mut mm, up, now));
                    }
                    None
                }
            };
            made.extend(pairing);
        }
        let now = Instant::now();
        made.extend(mm.expire(now));
        if let Some(c) = cl.as_mut() {
            made.extend(cluster_timers(c, &mut mm, now));
        }
        for p in made.drain(..) {
            stats.pairings.fetch_add(1, Ordering::Relaxed);
            let Some(handle) = shards.get(usize::from(p.a.shard)) else {
                continue;
            };
            // Blocking is safe here: shards never block on us (they use try_send + outbox).
            if handle.send_blocking(ShardMsg::PairMade(p)).is_err() {
                return;
            }
        }
        let in_cluster = cl
            .as_ref()
            .map_or(0, |c| c.published.len() + c.quarantine.len());
        stats
            .waiting
            .store((mm.waiting_count() + in_cluster) as u64, Ordering::Relaxed);
        stats
            .paired
            .store(mm.paired_count() as u64, Ordering::Relaxed);
    }
}

/// A user the local queue could not pair waits here for `hold`, then goes to the cluster.
fn hold_if_unpaired(
    cl: &mut Option<Cluster>,
    p: &Option<Pairing<ConnId>>,
    user: ConnId,
    ticket: u32,
    now: Instant,
) {
    if let (Some(c), None) = (cl.as_mut(), p) {
        if c.up {
            c.holding.push_back((now + c.hold, user, ticket));
        }
    }
}

fn on_link(
    c: &mut Cluster,
    mm: &mut Matchmaker<ConnId>,
    up: bool,
    now: Instant,
) -> Vec<Pairing<ConnId>> {
    c.up = up;
    let mut made = Vec::new();
    if up {
        // A new incarnation: whoever waits here, or waited in the old incarnation's queue
        // (dead with it), joins the cluster queue now.
        c.holding.clear();
        c.quarantine_until = None;
        made.extend(release_quarantine(c, mm, now));
        for user in mm.waiting_users() {
            c.publish(mm, user);
        }
    } else {
        c.holding.clear();
        c.open_timers.clear();
        c.quarantine.extend(c.published.drain());
        if !c.quarantine.is_empty() {
            c.quarantine_until = Some(now + TTL + HEARTBEAT);
        }
    }
    made
}

/// Quarantined users wait in this node's queue again (and may pair here at once).
fn release_quarantine(
    c: &mut Cluster,
    mm: &mut Matchmaker<ConnId>,
    now: Instant,
) -> Vec<Pairing<ConnId>> {
    let mut back: Vec<(ConnId, u32)> = c.quarantine.drain().collect();
    // In a fixed order (by connection), not the hash map's.
    back.sort_unstable();
    let mut made = Vec::new();
    for (user, ticket) in back {
        if matches!(mm.status(user), Status::Idle) {
            let interests = mm.last_interests(user).to_vec();
            made.extend(mm.find(user, ticket, interests, now));
        }
    }
    made
}

fn cluster_timers(
    c: &mut Cluster,
    mm: &mut Matchmaker<ConnId>,
    now: Instant,
) -> Vec<Pairing<ConnId>> {
    let mut made = Vec::new();
    while let Some(&(at, user, ticket)) = c.holding.front() {
        if at > now {
            break;
        }
        c.holding.pop_front();
        if c.up && matches!(mm.status(user), Status::Waiting { ticket: t, .. } if t == ticket) {
            c.publish(mm, user);
        }
    }
    while let Some((&(at, user), &ticket)) = c.open_timers.first_key_value() {
        if at > now {
            break;
        }
        c.open_timers.remove(&(at, user));
        if c.published.get(&user) == Some(&ticket) {
            let _ = c.bridge.send(ClusterMsg::OpenUp { user, ticket });
        }
    }
    if c.quarantine_until.is_some_and(|t| t <= now) {
        // Our heartbeat has expired: nobody can claim these any more. They wait here now.
        c.quarantine_until = None;
        made.extend(release_quarantine(c, mm, now));
    }
    made
}
