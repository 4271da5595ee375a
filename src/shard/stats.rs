//! Per-shard counters: written only by their shard (relaxed atomics), summed on scrape.
use std::sync::atomic::{AtomicU64, Ordering};

/// Close codes counted separately; anything else is counted as "other".
pub const CLOSE_CODES: [u16; 9] = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 0];

#[derive(Default)]
#[repr(align(64))]
pub struct ShardStats {
    pub loop_turns: AtomicU64,
    pub accepted: AtomicU64,
    pub closed: AtomicU64,
    pub open_sockets: AtomicU64,
    pub upgrades_chat: AtomicU64,
    pub upgrades_echo: AtomicU64,
    pub http_responses: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub relayed_local: AtomicU64,
    pub relayed_cross: AtomicU64,
    pub xshard_received: AtomicU64,
    pub wakeups: AtomicU64,
    pub outbox_full: AtomicU64,
    pub rate_limited: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub out_queue_bytes: AtomicU64,
    pub closes_sent: [AtomicU64; CLOSE_CODES.len()],
}

impl ShardStats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn count_close(&self, code: u16) {
        let idx = CLOSE_CODES.iter().position(|&c| c == code).unwrap_or(CLOSE_CODES.len() - 1);
        if let Some(c) = self.closes_sent.get(idx) {
            Self::inc(c);
        }
    }
}
