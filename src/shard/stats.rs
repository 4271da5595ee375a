//! Per-shard counters: written only by their shard (relaxed atomics), summed on scrape.
use crate::ws::close;
use std::sync::atomic::{AtomicU64, Ordering};

/// Close codes counted separately; anything else is counted as "other".
pub const CLOSE_CODES: [u16; 10] = [
    close::NORMAL,
    close::GOING_AWAY,
    close::PROTOCOL_ERROR,
    close::UNSUPPORTED_DATA,
    close::INVALID_PAYLOAD,
    close::POLICY_VIOLATION,
    close::MESSAGE_TOO_BIG,
    close::INTERNAL_ERROR,
    close::TRY_AGAIN_LATER,
    0,
];

/// HTTP statuses counted separately; anything else is counted as "other" (0).
pub const HTTP_CODES: [u16; 12] = [200, 304, 400, 403, 404, 405, 408, 426, 429, 431, 503, 0];

/// Upper bounds (seconds) of the time-to-match histogram buckets.
pub const MATCH_WAIT_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds (seconds) of the loop-iteration histogram buckets.
pub const LOOP_BUCKETS: [f64; 10] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
];

/// A fixed-bucket histogram written by one thread with relaxed atomics.
pub struct AtomicHistogram<const N: usize> {
    bounds: &'static [f64; N],
    /// Non-cumulative counts; index N is the +Inf bucket.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl<const N: usize> AtomicHistogram<N> {
    pub fn new(bounds: &'static [f64; N]) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, seconds: f64) {
        let idx = self.bounds.iter().position(|&b| seconds <= b).unwrap_or(N);
        if let Some(c) = self.counts.get(idx) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }
    pub fn bounds(&self) -> &'static [f64; N] {
        self.bounds
    }
    /// Non-cumulative bucket counts (last = +Inf) and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let counts = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        (counts, self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

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
    /// Connections refused (400) for a PROXY header from an untrusted peer, or a bad one.
    pub proxy_refused: AtomicU64,
    /// Request heads given to the HTTP parser.
    pub head_parses: AtomicU64,
    /// Fragmented messages not completed within --message-timeout.
    pub message_timeouts: AtomicU64,
    /// Clients dropped for unsent output with no progress for --write-stall-timeout.
    pub write_stalls: AtomicU64,
    /// Clients closed because the shard's share of --output-budget-bytes was used up.
    pub output_budget_closes: AtomicU64,
    /// Times a client was paused (not read) because a queue to another thread was full.
    pub backpressure_pauses: AtomicU64,
    /// Clients closed (1013) because a queue to another thread stayed full too long.
    pub backpressure_closes: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub relayed_local: AtomicU64,
    pub relayed_cross: AtomicU64,
    /// Chat frames handed to the Redis bridge for a partner on another node.
    pub relayed_cluster: AtomicU64,
    /// Pairs with a partner on another node ended because that node or the link failed.
    pub cluster_pairs_lost: AtomicU64,
    pub xshard_received: AtomicU64,
    pub wakeups: AtomicU64,
    pub outbox_full: AtomicU64,
    pub rate_limited: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub out_queue_bytes: AtomicU64,
    /// Chat clients in a chat (sampled every 100 ms).
    pub paired_clients: AtomicU64,
    pub closes_sent: [AtomicU64; CLOSE_CODES.len()],
    pub closes_received: [AtomicU64; CLOSE_CODES.len()],
    pub http_by_code: [AtomicU64; HTTP_CODES.len()],
    pub match_wait: AtomicHistogram<{ MATCH_WAIT_BUCKETS.len() }>,
    pub loop_time: AtomicHistogram<{ LOOP_BUCKETS.len() }>,
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            loop_turns: Default::default(),
            accepted: Default::default(),
            closed: Default::default(),
            open_sockets: Default::default(),
            upgrades_chat: Default::default(),
            upgrades_echo: Default::default(),
            http_responses: Default::default(),
            handshake_timeouts: Default::default(),
            proxy_refused: Default::default(),
            head_parses: Default::default(),
            message_timeouts: Default::default(),
            write_stalls: Default::default(),
            output_budget_closes: Default::default(),
            backpressure_pauses: Default::default(),
            backpressure_closes: Default::default(),
            bytes_in: Default::default(),
            bytes_out: Default::default(),
            messages_in: Default::default(),
            messages_out: Default::default(),
            relayed_local: Default::default(),
            relayed_cross: Default::default(),
            relayed_cluster: Default::default(),
            cluster_pairs_lost: Default::default(),
            xshard_received: Default::default(),
            wakeups: Default::default(),
            outbox_full: Default::default(),
            rate_limited: Default::default(),
            slow_consumer_closes: Default::default(),
            idle_timeouts: Default::default(),
            out_queue_bytes: Default::default(),
            paired_clients: Default::default(),
            closes_sent: Default::default(),
            closes_received: Default::default(),
            http_by_code: Default::default(),
            match_wait: AtomicHistogram::new(&MATCH_WAIT_BUCKETS),
            loop_time: AtomicHistogram::new(&LOOP_BUCKETS),
        }
    }
}

impl ShardStats {
    /// Every counter and gauge with the name of its field (array fields once per element).
    /// The struct is destructured without `..`, so a new field does not compile until it is
    /// listed here, and the exposition test in metrics.rs then checks that `/metrics` shows
    /// it. The two histograms are rendered (and tested) on their own.
    pub fn each<'a>(&'a self, mut f: impl FnMut(&'static str, &'a AtomicU64)) {
        let ShardStats {
            loop_turns,
            accepted,
            closed,
            open_sockets,
            upgrades_chat,
            upgrades_echo,
            http_responses,
            handshake_timeouts,
            proxy_refused,
            head_parses,
            message_timeouts,
            write_stalls,
            output_budget_closes,
            backpressure_pauses,
            backpressure_closes,
            bytes_in,
            bytes_out,
            messages_in,
            messages_out,
            relayed_local,
            relayed_cross,
            relayed_cluster,
            cluster_pairs_lost,
            xshard_received,
            wakeups,
            outbox_full,
            rate_limited,
            slow_consumer_closes,
            idle_timeouts,
            out_queue_bytes,
            paired_clients,
            closes_sent,
            closes_received,
            http_by_code,
            match_wait: _,
            loop_time: _,
        } = self;
        f("loop_turns", loop_turns);
        f("accepted", accepted);
        f("closed", closed);
        f("open_sockets", open_sockets);
        f("upgrades_chat", upgrades_chat);
        f("upgrades_echo", upgrades_echo);
        f("http_responses", http_responses);
        f("handshake_timeouts", handshake_timeouts);
        f("proxy_refused", proxy_refused);
        f("head_parses", head_parses);
        f("message_timeouts", message_timeouts);
        f("write_stalls", write_stalls);
        f("output_budget_closes", output_budget_closes);
        f("backpressure_pauses", backpressure_pauses);
        f("backpressure_closes", backpressure_closes);
        f("bytes_in", bytes_in);
        f("bytes_out", bytes_out);
        f("messages_in", messages_in);
        f("messages_out", messages_out);
        f("relayed_local", relayed_local);
        f("relayed_cross", relayed_cross);
        f("relayed_cluster", relayed_cluster);
        f("cluster_pairs_lost", cluster_pairs_lost);
        f("xshard_received", xshard_received);
        f("wakeups", wakeups);
        f("outbox_full", outbox_full);
        f("rate_limited", rate_limited);
        f("slow_consumer_closes", slow_consumer_closes);
        f("idle_timeouts", idle_timeouts);
        f("out_queue_bytes", out_queue_bytes);
        f("paired_clients", paired_clients);
        for c in closes_sent {
            f("closes_sent", c);
        }
        for c in closes_received {
            f("closes_received", c);
        }
        for c in http_by_code {
            f("http_by_code", c);
        }
    }
}

impl ShardStats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn slot_of(codes: &[u16], code: u16) -> usize {
        codes
            .iter()
            .position(|&c| c == code)
            .unwrap_or(codes.len() - 1)
    }
    pub fn count_close(&self, code: u16) {
        if let Some(c) = self.closes_sent.get(Self::slot_of(&CLOSE_CODES, code)) {
            Self::inc(c);
        }
    }
    /// `None`: a close frame without a status code (counted as other).
    pub fn count_close_received(&self, code: Option<u16>) {
        if let Some(c) = self
            .closes_received
            .get(Self::slot_of(&CLOSE_CODES, code.unwrap_or(0)))
        {
            Self::inc(c);
        }
    }
    /// Count a non-101 response by the status in its first line.
    pub fn count_http(&self, response: &[u8]) {
        let code = response
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        Self::inc(&self.http_responses);
        if let Some(c) = self.http_by_code.get(Self::slot_of(&HTTP_CODES, code)) {
            Self::inc(c);
        }
    }
}
