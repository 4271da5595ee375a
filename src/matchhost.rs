//! The matchmaker thread: owns the pure [`Matchmaker`], takes requests from every shard, and
//! sends each new pair to the shard of its side `a`.
use crate::chat::matchmaker::{Matchmaker, Pairing};
use crate::xshard::{ConnId, MatchReq, ShardHandle, ShardMsg};
use crossbeam_channel::{Receiver, RecvTimeoutError};
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

pub fn run(
    inbox: Receiver<MatchReq>,
    shards: Vec<ShardHandle>,
    interest_wait: Duration,
    stats: Arc<MatchStats>,
) {
    let mut mm: Matchmaker<ConnId> = Matchmaker::new(interest_wait);
    let mut made: Vec<Pairing<ConnId>> = Vec::new();
    loop {
        let timeout = mm
            .next_deadline()
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
                } => mm.find(user, ticket, interests, now),
                MatchReq::Next { user, ticket } => mm.next(user, ticket, now),
                MatchReq::Leave { user } => {
                    mm.leave(user);
                    None
                }
                MatchReq::Gone { user } => {
                    mm.remove(user);
                    None
                }
            };
            made.extend(pairing);
        }
        made.extend(mm.expire(Instant::now()));
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
        stats
            .waiting
            .store(mm.waiting_count() as u64, Ordering::Relaxed);
        stats
            .paired
            .store(mm.paired_count() as u64, Ordering::Relaxed);
    }
}
