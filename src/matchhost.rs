//! The matchmaker thread: owns the pure [`Matchmaker`], takes requests from every shard, and
//! sends each new pair to the shard of its side `a`.
//!
//! In a cluster it also decides who goes to the cluster queue in Redis: a user with no partner
//! on this node waits here for `--cluster-hold`, then is handed to the bridge (`Enqueue`) and
//! from then on only the pairing script may claim it (see ARCHITECTURE.md, "Cluster").
use crate::chat::matchmaker::{Matchmaker, Pairing};
use crate::cluster::queue::ClusterQueue;
use crate::cluster::ClusterMsg;
use crate::xshard::ConnId;
use crate::xshard::{MatchReq, ShardHandle, ShardMsg};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters the metrics endpoint reads. (Clients in a chat are counted by the shards: the
/// matchmaker does not keep pairs.)
#[derive(Default)]
pub struct MatchStats {
    pub requests: AtomicU64,
    pub pairings: AtomicU64,
    pub waiting: AtomicU64,
}

impl MatchStats {
    /// Every counter and gauge with its field name (see `ShardStats::each`).
    pub fn each<'a>(&'a self, mut f: impl FnMut(&'static str, &'a AtomicU64)) {
        let MatchStats {
            requests,
            pairings,
            waiting,
        } = self;
        f("requests", requests);
        f("pairings", pairings);
        f("waiting", waiting);
    }
}

/// The matchmaker's side of cluster mode.
pub struct ClusterSide {
    pub bridge: Sender<ClusterMsg>,
    pub hold: Duration,
}

pub fn run(
    inbox: Receiver<MatchReq>,
    shards: Vec<ShardHandle>,
    interest_wait: Duration,
    stats: Arc<MatchStats>,
    cluster: Option<ClusterSide>,
) {
    let mut mm: Matchmaker<ConnId> = Matchmaker::new(interest_wait);
    let (bridge, mut cl) = match cluster {
        Some(c) => (Some(c.bridge), Some(ClusterQueue::new(c.hold))),
        None => (None, None),
    };
    let mut made: Vec<Pairing<ConnId>> = Vec::new();
    loop {
        let deadline = [
            mm.next_deadline(),
            cl.as_ref().and_then(ClusterQueue::next_deadline),
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
                    ended,
                } => {
                    if let Some(c) = cl.as_mut() {
                        c.forget(user);
                    }
                    let p = mm.find(user, ticket, interests, ended, now);
                    if let Some(c) = cl.as_mut() {
                        c.after_request(p.is_some(), user, ticket, now);
                    }
                    p
                }
                MatchReq::Next {
                    user,
                    ticket,
                    ended,
                } => {
                    if cl.as_ref().is_some_and(|c| c.is_waiting_there(user)) {
                        None
                    } else {
                        let p = mm.next(user, ticket, ended, now);
                        if let Some(c) = cl.as_mut() {
                            c.after_request(p.is_some(), user, ticket, now);
                        }
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
                    let p = Pairing {
                        a: user,
                        a_ticket: ticket,
                        b: partner,
                        b_ticket: partner_ticket,
                        epoch,
                        common,
                    };
                    Some(match cl.as_mut() {
                        Some(c) => c.on_cluster_paired(&mut mm, p),
                        None => p,
                    })
                }
                MatchReq::Claimed {
                    user,
                    ticket,
                    partner,
                    epoch: _,
                } => {
                    if let Some(c) = cl.as_mut() {
                        c.on_claimed(&mut mm, user, ticket, partner);
                    }
                    None
                }
                MatchReq::ClusterLink { up } => {
                    if let Some(c) = cl.as_mut() {
                        made.extend(c.on_link(&mut mm, up, now));
                    }
                    None
                }
            };
            made.extend(pairing);
        }
        let now = Instant::now();
        made.extend(mm.expire(now));
        if let (Some(c), Some(bridge)) = (cl.as_mut(), bridge.as_ref()) {
            made.extend(c.expire(&mut mm, now));
            for msg in c.take_out() {
                // The bridge's inbox from this thread is unbounded; it only fails when the
                // bridge is gone, which ends the process anyway.
                let _ = bridge.send(msg);
            }
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
        let in_cluster = cl.as_ref().map_or(0, ClusterQueue::queued);
        stats
            .waiting
            .store((mm.waiting_count() + in_cluster) as u64, Ordering::Relaxed);
    }
}
