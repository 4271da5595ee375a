//! Per-client-address admission: how many connections an address holds, and how fast it may
//! open new ones (a token bucket). Shared by the acceptor and every shard; consulted once per
//! connection (when its address is known) and once when it closes, never on the message path.
//!
//! Addresses are keys from `http::proxy::ip_key` (IPv4 alone, IPv6 by /64). The table is
//! split into stripes, each a small hash map behind its own mutex, so admissions on different
//! threads rarely meet. Memory is bounded: an address has an entry only while it holds a
//! connection, or its bucket has not refilled since its last new connection (at most
//! burst ÷ rate seconds), or it was refused lately; `sweep` drops the rest, and the table
//! never holds more than `max_entries` (a full table refuses new addresses: fail closed).
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const STRIPES: usize = 64;

/// The limits, from the configuration (0 = off).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    pub max_conns_per_ip: u32,
    /// New connections per second per address.
    pub rate_per_sec: u32,
    pub burst: u32,
    /// The most addresses tracked at once.
    pub max_entries: usize,
}

/// What to do with a new connection from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: the connection is counted against the address until `release`.
    Admit,
    /// Over a limit: answer `429 Too Many Requests` with `Retry-After` (seconds).
    Refuse { reason: Refusal, retry_after: u32 },
    /// Far over a limit (it kept coming after refusals): close at once, no answer.
    Drop { reason: Refusal },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections-per-ip`.
    Connections,
    /// `--handshake-rate-per-ip`.
    Rate,
    /// The table is full of other addresses.
    TableFull,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Connections, Refusal::Rate, Refusal::TableFull];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "connections_per_ip",
            Refusal::Rate => "handshake_rate_per_ip",
            Refusal::TableFull => "address_table_full",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    conns: u32,
    /// Milli-tokens as of `last_ms`.
    tokens_milli: u64,
    last_ms: u64,
    /// Refusals since the last admission: past the burst, refusals become drops.
    refused: u32,
}

/// Counters by refusal reason: answered (429) and dropped.
#[derive(Default)]
pub struct AdmissionStats {
    pub refused: [AtomicU64; 3],
    pub dropped: [AtomicU64; 3],
    pub tracked: AtomicU64,
}

pub struct Admission {
    cfg: AdmissionConfig,
    stripes: Box<[Mutex<HashMap<u64, Entry>>]>,
    pub stats: AdmissionStats,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Admission {
        Admission {
            cfg,
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            stats: AdmissionStats::default(),
        }
    }

    pub fn is_off(&self) -> bool {
        self.cfg.max_conns_per_ip == 0 && self.cfg.rate_per_sec == 0
    }

    fn stripe(&self, key: u64) -> &Mutex<HashMap<u64, Entry>> {
        // Keys of neighbouring addresses differ in their low bits: mix before picking.
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        &self.stripes[h as usize % STRIPES]
    }

    fn capacity_milli(&self) -> u64 {
        u64::from(self.cfg.burst) * 1000
    }

    /// A new connection from address `key` at `now_ms` (any monotonic clock).
    pub fn admit(&self, key: u64, now_ms: u64) -> Verdict {
        if self.is_off() {
            return Verdict::Admit;
        }
        let Ok(mut map) = self.stripe(key).lock() else {
            // A panic elsewhere poisoned the lock; admission must not take the server down.
            return Verdict::Admit;
        };
        if !map.contains_key(&key)
            && self.stats.tracked.load(Ordering::Relaxed) as usize >= self.cfg.max_entries
        {
            drop(map);
            return self.refused(Refusal::TableFull, 1, false);
        }
        let full = self.capacity_milli();
        let e = map.entry(key).or_insert_with(|| {
            self.stats.tracked.fetch_add(1, Ordering::Relaxed);
            Entry {
                conns: 0,
                tokens_milli: full,
                last_ms: now_ms,
                refused: 0,
            }
        });
        let rate = u64::from(self.cfg.rate_per_sec);
        if rate > 0 {
            let elapsed = now_ms.saturating_sub(e.last_ms);
            e.tokens_milli = (e.tokens_milli + elapsed * rate).min(full);
        }
        e.last_ms = e.last_ms.max(now_ms);
        let far = e.refused >= self.cfg.burst.max(self.cfg.max_conns_per_ip);
        let over_conns = self.cfg.max_conns_per_ip > 0 && e.conns >= self.cfg.max_conns_per_ip;
        if over_conns {
            e.refused = e.refused.saturating_add(1);
            drop(map);
            return self.refused(Refusal::Connections, 10, far);
        }
        if rate > 0 {
            if e.tokens_milli < 1000 {
                e.refused = e.refused.saturating_add(1);
                // Until one token is back, rounded up to whole seconds.
                let wait_ms = (1000 - e.tokens_milli).div_ceil(rate);
                drop(map);
                return self.refused(Refusal::Rate, wait_ms.div_ceil(1000).max(1) as u32, far);
            }
            e.tokens_milli -= 1000;
        }
        e.conns += 1;
        e.refused = 0;
        Verdict::Admit
    }

    fn refused(&self, reason: Refusal, retry_after: u32, far: bool) -> Verdict {
        let i = reason as usize;
        if far {
            if let Some(c) = self.stats.dropped.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Drop { reason }
        } else {
            if let Some(c) = self.stats.refused.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Refuse {
                reason,
                retry_after,
            }
        }
    }

    /// An admitted connection of `key` closed.
    pub fn release(&self, key: u64, now_ms: u64) {
        if self.is_off() {
            return;
        }
        let Ok(mut map) = self.stripe(key).lock() else {
            return;
        };
        if let Some(e) = map.get_mut(&key) {
            e.conns = e.conns.saturating_sub(1);
            if self.idle(e, now_ms) {
                map.remove(&key);
                self.stats.tracked.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// An entry with nothing to remember: no connection, a full bucket, no recent refusal.
    fn idle(&self, e: &Entry, now_ms: u64) -> bool {
        let rate = u64::from(self.cfg.rate_per_sec);
        let refilled = rate == 0
            || e.tokens_milli + now_ms.saturating_sub(e.last_ms) * rate >= self.capacity_milli();
        e.conns == 0 && refilled && (e.refused == 0 || now_ms.saturating_sub(e.last_ms) > 60_000)
    }

    /// Forget addresses with nothing to remember (called about once a second).
    pub fn sweep(&self, now_ms: u64) {
        if self.is_off() {
            return;
        }
        for stripe in self.stripes.iter() {
            let Ok(mut map) = stripe.lock() else {
                continue;
            };
            let before = map.len();
            map.retain(|_, e| !self.idle(e, now_ms));
            self.stats
                .tracked
                .fetch_sub((before - map.len()) as u64, Ordering::Relaxed);
        }
    }

    /// Connections an address holds (for tests and metrics).
    pub fn connections_of(&self, key: u64) -> u32 {
        self.stripe(key)
            .lock()
            .ok()
            .and_then(|m| m.get(&key).map(|e| e.conns))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(conns: u32, rate: u32, burst: u32) -> Admission {
        Admission::new(AdmissionConfig {
            max_conns_per_ip: conns,
            rate_per_sec: rate,
            burst,
            max_entries: 1000,
        })
    }

    #[test]
    fn connections_per_address_are_capped_and_released() {
        let a = table(3, 0, 10);
        for _ in 0..3 {
            assert_eq!(a.admit(7, 0), Verdict::Admit);
        }
        assert!(matches!(
            a.admit(7, 0),
            Verdict::Refuse {
                reason: Refusal::Connections,
                ..
            }
        ));
        assert_eq!(
            a.admit(8, 0),
            Verdict::Admit,
            "another address is not affected"
        );
        a.release(7, 10);
        assert_eq!(a.admit(7, 10), Verdict::Admit);
        assert_eq!(a.connections_of(7), 3);
    }

    #[test]
    fn the_rate_is_a_token_bucket_with_retry_after() {
        let a = table(0, 2, 4);
        for _ in 0..4 {
            assert_eq!(a.admit(1, 0), Verdict::Admit);
        }
        assert_eq!(
            a.admit(1, 0),
            Verdict::Refuse {
                reason: Refusal::Rate,
                retry_after: 1
            }
        );
        // Half a second later one token (2/s) is back.
        assert_eq!(a.admit(1, 500), Verdict::Admit);
        assert!(matches!(a.admit(1, 500), Verdict::Refuse { .. }));
    }

    #[test]
    fn an_address_that_keeps_coming_after_refusals_is_dropped() {
        let a = table(1, 0, 3);
        assert_eq!(a.admit(1, 0), Verdict::Admit);
        for _ in 0..3 {
            assert!(matches!(a.admit(1, 0), Verdict::Refuse { .. }));
        }
        assert_eq!(
            a.admit(1, 0),
            Verdict::Drop {
                reason: Refusal::Connections
            }
        );
        assert_eq!(a.stats.refused[0].load(Ordering::Relaxed), 3);
        assert_eq!(a.stats.dropped[0].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn memory_is_bounded_and_idle_addresses_are_forgotten() {
        let a = Admission::new(AdmissionConfig {
            max_conns_per_ip: 10,
            rate_per_sec: 10,
            burst: 10,
            max_entries: 100,
        });
        for k in 0..100 {
            assert_eq!(a.admit(k, 0), Verdict::Admit);
        }
        assert_eq!(
            a.admit(1000, 0),
            Verdict::Refuse {
                reason: Refusal::TableFull,
                retry_after: 1
            },
            "a full table refuses new addresses"
        );
        for k in 0..100 {
            a.release(k, 0);
        }
        // The buckets are not full yet: the entries stay until they are.
        assert_eq!(a.stats.tracked.load(Ordering::Relaxed), 100);
        a.sweep(50);
        assert_eq!(a.stats.tracked.load(Ordering::Relaxed), 100);
        a.sweep(100);
        assert_eq!(a.stats.tracked.load(Ordering::Relaxed), 0);
        assert_eq!(a.admit(1000, 100), Verdict::Admit);
    }

    #[test]
    fn zero_turns_both_limits_off() {
        let a = table(0, 0, 1);
        for _ in 0..1000 {
            assert_eq!(a.admit(1, 0), Verdict::Admit);
        }
        assert_eq!(a.stats.tracked.load(Ordering::Relaxed), 0);
    }
}
