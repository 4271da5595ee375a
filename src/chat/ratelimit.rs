//! Per-connection token bucket with injected time.

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
    Drop { notify: bool },
    /// More than `abuse_drops` drops within 10 s: close 1008.
    Abuse,
}

/// Small (a few words) and `Copy`: lives inline in each connection.
#[derive(Debug, Clone, Copy)]
pub struct RateLimiter {
    _todo: u8,
}

impl RateLimiter {
    pub fn new(cfg: &RateLimitConfig, now_ms: u64) -> Self {
        let _ = (cfg, now_ms);
        todo!()
    }
    /// Charge one data message received at `now_ms` (milliseconds on any monotonic clock).
    pub fn check(&mut self, cfg: &RateLimitConfig, now_ms: u64, is_chat_message: bool) -> RateVerdict {
        let _ = (cfg, now_ms, is_chat_message);
        todo!()
    }
}
