//! Per-connection token bucket with injected time.
//!
//! PROTOCOL.md "Limits": more than `per_sec` messages/s sustained (token bucket, burst
//! `burst`; every client data message costs one token) → the message is dropped; a dropped
//! `message` gets `rate_limited` (at most 3 such errors per second); more than `abuse_drops`
//! drops within 10 s → close 1008.
//!
//! Everything is integer math on milliseconds:
//! - tokens are kept in milli-tokens; `elapsed_ms * per_sec` milli-tokens are added per
//!   check, so refill is exact (no rounding drift);
//! - the 3-notifies-per-second limit uses fixed one-second windows (`now_ms / 1000`);
//! - drops are counted in a ring of four 2.5-second buckets. The abuse test sums the
//!   current (partial) bucket and the three before it: a window between 7.5 s and 10 s
//!   long, so every drop it counts happened within the last 10 s (never a false positive)
//!   and a client dropping more than `abuse_drops / 7.5 s` per second is always caught.
//!
//! A clock going backwards is treated as no time passing.

#[derive(Debug, Clone, Copy)]
pub struct RateLimitConfig {
    /// Tokens added per second; 0 = no limit.
    pub per_sec: u32,
    /// Bucket size.
    pub burst: u32,
    /// Drops within 10 s that count as sustained abuse.
    pub abuse_drops: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    Allow,
    /// Dropped. `notify`: a `rate_limited` error may be sent if the message was a chat
    /// `message` (at most 3 such errors per second).
    Drop {
        notify: bool,
    },
    /// More than `abuse_drops` drops within 10 s: close 1008.
    Abuse,
}

/// At most this many `rate_limited` notifications per one-second window.
pub const NOTIFIES_PER_SEC: u8 = 3;
/// Length of one drop-count bucket; `DROP_BUCKETS` of them span the 10-s abuse window.
const DROP_BUCKET_MS: u64 = 2_500;
const DROP_BUCKETS: usize = 4;

/// Small (16 bytes) and `Copy`: lives inline in each connection.
///
/// Drop counts saturate at 255 per 2.5-s bucket, so `abuse_drops` is effective up to 1,020
/// (the configuration allows at most 1,000). The time of the last check is kept as the low
/// 32 bits of the millisecond clock: a check more than 24 days after the previous one would
/// be read as one from the past (no time passing); an idle connection is pinged and closed
/// long before that.
#[derive(Debug, Clone, Copy)]
pub struct RateLimiter {
    /// Time of the last check (or creation), milliseconds, low 32 bits; never decreases.
    last_ms: u32,
    /// Available milli-tokens, at most `burst * 1000` (clamped to `u32::MAX`).
    tokens_milli: u32,
    /// Drops per 2.5-s bucket, indexed by `(ms / 2500) % 4`, saturating.
    drops: [u8; DROP_BUCKETS],
    /// `rate_limited` notifications sent in the one-second window of `last_ms`.
    notified: u8,
}

impl RateLimiter {
    pub fn new(cfg: &RateLimitConfig, now_ms: u64) -> Self {
        RateLimiter {
            last_ms: now_ms as u32,
            tokens_milli: capacity_milli(cfg),
            drops: [0; DROP_BUCKETS],
            notified: 0,
        }
    }

    /// Charge one data message received at `now_ms` (milliseconds on any monotonic clock).
    pub fn check(
        &mut self,
        cfg: &RateLimitConfig,
        now_ms: u64,
        is_chat_message: bool,
    ) -> RateVerdict {
        if cfg.per_sec == 0 {
            return RateVerdict::Allow;
        }
        let (now, last) = self.clock(now_ms);
        let now = now.max(last);
        self.advance(cfg, now);

        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            return RateVerdict::Allow;
        }

        let slot = bucket_slot(now);
        self.drops[slot] = self.drops[slot].saturating_add(1);
        if self.recent_drops() > u64::from(cfg.abuse_drops) {
            return RateVerdict::Abuse;
        }
        let notify = is_chat_message && self.notified < NOTIFIES_PER_SEC;
        if notify {
            self.notified += 1;
        }
        RateVerdict::Drop { notify }
    }

    /// Drops counted in the current abuse window (at most the last 10 s).
    pub fn recent_drops(&self) -> u64 {
        self.drops.iter().map(|&d| u64::from(d)).sum()
    }

    /// Whole tokens available as of the last check (for tests and metrics).
    pub fn tokens(&self) -> u32 {
        self.tokens_milli / 1000
    }

    /// `now_ms` and the full time of the last check, from its low 32 bits: the last check
    /// was at most 2^31 ms ago, or (a clock that went backwards) it is taken as now.
    fn clock(&self, now_ms: u64) -> (u64, u64) {
        let behind = (now_ms as u32).wrapping_sub(self.last_ms);
        if behind < 1 << 31 {
            (now_ms, now_ms.saturating_sub(u64::from(behind)))
        } else {
            let ahead = (1u64 << 32) - u64::from(behind);
            (now_ms, now_ms.saturating_add(ahead))
        }
    }

    /// Move the clock to `now` (>= the last check): refill, roll the notify window and the
    /// drop buckets.
    fn advance(&mut self, cfg: &RateLimitConfig, now: u64) {
        let (_, last) = self.clock(now);
        let elapsed = now - last;
        if elapsed == 0 {
            return;
        }
        let added = elapsed.saturating_mul(u64::from(cfg.per_sec));
        let tokens = u64::from(self.tokens_milli).saturating_add(added);
        self.tokens_milli = tokens.min(u64::from(capacity_milli(cfg))) as u32;

        if now / 1000 != last / 1000 {
            self.notified = 0;
        }

        let (from, to) = (last / DROP_BUCKET_MS, now / DROP_BUCKET_MS);
        if to - from >= DROP_BUCKETS as u64 {
            self.drops = [0; DROP_BUCKETS];
        } else {
            for b in from + 1..=to {
                self.drops[(b % DROP_BUCKETS as u64) as usize] = 0;
            }
        }
        self.last_ms = now as u32;
    }
}

fn capacity_milli(cfg: &RateLimitConfig) -> u32 {
    cfg.burst.saturating_mul(1000)
}

fn bucket_slot(now: u64) -> usize {
    ((now / DROP_BUCKET_MS) % DROP_BUCKETS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: RateLimitConfig = RateLimitConfig {
        per_sec: 20,
        burst: 40,
        abuse_drops: 100,
    };
    const T0: u64 = 1_000_000;

    fn drop(notify: bool) -> RateVerdict {
        RateVerdict::Drop { notify }
    }

    #[test]
    fn small_and_copy() {
        assert_eq!(std::mem::size_of::<RateLimiter>(), 16);
        fn is_copy<T: Copy>() {}
        is_copy::<RateLimiter>();
    }

    #[test]
    fn burst_then_drop() {
        for start in [0, T0] {
            let mut rl = RateLimiter::new(&CFG, start);
            for i in 0..40 {
                assert_eq!(
                    rl.check(&CFG, start, true),
                    RateVerdict::Allow,
                    "message {i}"
                );
            }
            assert_eq!(rl.check(&CFG, start, true), drop(true));
        }
    }

    #[test]
    fn refills_at_per_sec() {
        let mut rl = RateLimiter::new(&CFG, T0);
        for _ in 0..40 {
            assert_eq!(rl.check(&CFG, T0, false), RateVerdict::Allow);
        }
        assert_eq!(rl.check(&CFG, T0, false), drop(false));
        // 20/s = one token per 50 ms.
        assert_eq!(rl.check(&CFG, T0 + 49, false), drop(false));
        assert_eq!(rl.check(&CFG, T0 + 50, false), RateVerdict::Allow);
        assert_eq!(rl.check(&CFG, T0 + 50, false), drop(false));
        // Partial refills accumulate exactly: 25 ms + 25 ms = one token.
        assert_eq!(rl.check(&CFG, T0 + 75, false), drop(false));
        assert_eq!(rl.check(&CFG, T0 + 100, false), RateVerdict::Allow);
        // After a second, 20 more.
        let t = T0 + 1100;
        for _ in 0..20 {
            assert_eq!(rl.check(&CFG, t, false), RateVerdict::Allow);
        }
        assert_eq!(rl.check(&CFG, t, false), drop(false));
        // The bucket never holds more than the burst.
        let t = t + 3_600_000;
        for _ in 0..40 {
            assert_eq!(rl.check(&CFG, t, false), RateVerdict::Allow);
        }
        assert_eq!(rl.check(&CFG, t, false), drop(false));
    }

    #[test]
    fn sustained_20_per_sec_is_never_dropped() {
        let mut rl = RateLimiter::new(&CFG, 0);
        for i in 0..100_000u64 {
            assert_eq!(rl.check(&CFG, i * 50, true), RateVerdict::Allow);
        }
    }

    #[test]
    fn at_most_three_notifies_per_second() {
        let mut rl = RateLimiter::new(&CFG, T0);
        for _ in 0..40 {
            rl.check(&CFG, T0, true);
        }
        // Non-chat drops never notify and do not use the allowance.
        assert_eq!(rl.check(&CFG, T0, false), drop(false));
        assert_eq!(rl.check(&CFG, T0, true), drop(true));
        assert_eq!(rl.check(&CFG, T0 + 1, true), drop(true));
        assert_eq!(rl.check(&CFG, T0 + 2, true), drop(true));
        assert_eq!(rl.check(&CFG, T0 + 3, true), drop(false));
        assert_eq!(rl.check(&CFG, T0 + 4, true), drop(false));
        // Next second (T0 is a whole second): three more. Use up the refilled tokens first.
        let t = T0 + 1000;
        for _ in 0..20 {
            assert_eq!(rl.check(&CFG, t, false), RateVerdict::Allow);
        }
        assert_eq!(rl.check(&CFG, t, true), drop(true));
        assert_eq!(rl.check(&CFG, t, true), drop(true));
        assert_eq!(rl.check(&CFG, t, true), drop(true));
        assert_eq!(rl.check(&CFG, t, true), drop(false));
    }

    #[test]
    fn abuse_after_more_than_100_drops_in_10s() {
        let mut rl = RateLimiter::new(&CFG, T0);
        for _ in 0..40 {
            rl.check(&CFG, T0, false);
        }
        for i in 0..100 {
            assert!(
                matches!(rl.check(&CFG, T0, false), RateVerdict::Drop { .. }),
                "{i}"
            );
        }
        assert_eq!(rl.recent_drops(), 100);
        assert_eq!(rl.check(&CFG, T0, false), RateVerdict::Abuse);
    }

    #[test]
    fn abuse_when_drops_spread_over_the_window() {
        // A flood at 40 msgs/s: 20 allowed, 20 dropped per second → >100 drops within 10 s.
        let mut rl = RateLimiter::new(&CFG, T0);
        let mut t = T0;
        let mut abused_at = None;
        for i in 0..2000u64 {
            t = T0 + i * 25;
            if rl.check(&CFG, t, true) == RateVerdict::Abuse {
                abused_at = Some(t);
                break;
            }
        }
        let at = abused_at.expect("flood detected");
        // 40 burst + (101 drops at 20/s) ≈ 7 s; the window guarantees detection within 10 s.
        assert!(at - T0 <= 10_000, "detected after {} ms", at - T0);
        assert!(t >= T0 + 5_000);
    }

    #[test]
    fn slow_drops_are_not_abuse() {
        // 30 messages each second: 20 allowed, 10 dropped, so exactly 100 drops in any
        // 10 s: never more than the limit.
        let mut rl = RateLimiter::new(&CFG, 0);
        for _ in 0..40 {
            rl.check(&CFG, 0, false);
        }
        for s in 1..=100u64 {
            let t = s * 1000;
            for _ in 0..20 {
                assert_eq!(rl.check(&CFG, t, false), RateVerdict::Allow);
            }
            for _ in 0..10 {
                assert!(
                    matches!(rl.check(&CFG, t, false), RateVerdict::Drop { .. }),
                    "second {s}"
                );
            }
        }
    }

    #[test]
    fn old_drops_expire() {
        let mut rl = RateLimiter::new(&CFG, T0);
        for _ in 0..40 {
            rl.check(&CFG, T0, false);
        }
        for _ in 0..100 {
            assert!(matches!(
                rl.check(&CFG, T0, false),
                RateVerdict::Drop { .. }
            ));
        }
        let t = T0 + 10_000;
        for _ in 0..40 {
            assert_eq!(rl.check(&CFG, t, false), RateVerdict::Allow);
        }
        assert_eq!(rl.recent_drops(), 0);
        assert_eq!(rl.check(&CFG, t, true), drop(true));
    }

    #[test]
    fn unlimited_when_per_sec_is_zero() {
        let cfg = RateLimitConfig { per_sec: 0, ..CFG };
        let mut rl = RateLimiter::new(&cfg, 0);
        for _ in 0..100_000 {
            assert_eq!(rl.check(&cfg, 0, true), RateVerdict::Allow);
        }
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut rl = RateLimiter::new(&CFG, T0);
        for _ in 0..40 {
            assert_eq!(rl.check(&CFG, T0, false), RateVerdict::Allow);
        }
        // Going back does not refill, does not panic.
        assert_eq!(rl.check(&CFG, 0, false), drop(false));
        assert_eq!(rl.check(&CFG, T0 - 500, false), drop(false));
        assert_eq!(rl.check(&CFG, T0 + 50, false), RateVerdict::Allow);
        // And from a limiter created "in the future".
        let mut rl = RateLimiter::new(&CFG, u64::MAX);
        assert_eq!(rl.check(&CFG, 5, false), RateVerdict::Allow);
        assert_eq!(rl.check(&CFG, u64::MAX, false), RateVerdict::Allow);
    }

    #[test]
    fn extreme_configs_do_not_overflow() {
        let cfg = RateLimitConfig {
            per_sec: u32::MAX,
            burst: u32::MAX,
            abuse_drops: u32::MAX,
        };
        let mut rl = RateLimiter::new(&cfg, 0);
        assert_eq!(rl.check(&cfg, u64::MAX, true), RateVerdict::Allow);
        let cfg = RateLimitConfig {
            per_sec: 1,
            burst: 0,
            abuse_drops: 0,
        };
        let mut rl = RateLimiter::new(&cfg, 0);
        assert_eq!(rl.check(&cfg, 0, true), RateVerdict::Abuse);
        let cfg = RateLimitConfig {
            per_sec: 1,
            burst: 1,
            abuse_drops: 5,
        };
        let mut rl = RateLimiter::new(&cfg, 0);
        assert_eq!(rl.check(&cfg, 0, true), RateVerdict::Allow);
        assert_eq!(rl.check(&cfg, 999, true), drop(true));
        assert_eq!(rl.check(&cfg, 1000, true), RateVerdict::Allow);
        assert_eq!(rl.tokens(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Over any run, allowed messages never exceed burst + per_sec * elapsed, and drops
        /// never trigger abuse while the true count of drops in every 10-s window is at
        /// most `abuse_drops`.
        #[test]
        fn never_more_than_the_bucket_allows(gaps in proptest::collection::vec(0u64..120, 1..600)) {
            let mut rl = RateLimiter::new(&CFG, 0);
            let mut t = 0u64;
            let mut allowed = 0u64;
            let mut drop_times: Vec<u64> = Vec::new();
            for g in gaps {
                t += g;
                match rl.check(&CFG, t, true) {
                    RateVerdict::Allow => allowed += 1,
                    RateVerdict::Drop { .. } => drop_times.push(t),
                    RateVerdict::Abuse => {
                        drop_times.push(t);
                        let in_window = drop_times.iter().filter(|&&d| d + 10_000 > t).count();
                        proptest::prop_assert!(in_window > 100, "false abuse: {} drops", in_window);
                        break;
                    }
                }
                proptest::prop_assert!(allowed <= 40 + t * 20 / 1000);
            }
        }
    }
}
