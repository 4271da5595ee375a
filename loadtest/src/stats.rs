//! Counters and HDR histograms of one thread, merged per process and across processes.
//!
//! Latencies are recorded in microseconds (1 µs .. 1 h, 3 significant digits). Open-loop runs
//! record each message twice: from its intended send time (corrected for coordinated
//! omission, as wrk2 does) and from its actual send time (uncorrected). Histograms cross the
//! process boundary as raw `(value, count)` pairs of their non-empty buckets, which merge
//! exactly into a histogram of the same configuration.
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Highest latency the histograms track (1 hour in µs); larger values saturate.
const HIGHEST_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    pub fn new() -> Hist {
        // Bounds are constants known to be valid (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
        match Histogram::new_with_bounds(1, HIGHEST_US, 3) {
            Ok(h) => Hist(h),
            Err(_) => unreachable!("constant histogram bounds are valid"),
        }
    }
    /// Record a duration given in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.0.saturating_record((ns / 1000).max(1));
    }
    pub fn len(&self) -> u64 {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn add(&mut self, other: &Hist) {
        // Same bounds on both sides, so addition cannot fail.
        let _ = self.0.add(&other.0);
    }
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }
    pub fn max(&self) -> u64 {
        self.0.max()
    }
    /// Non-empty buckets as `(highest equivalent value, count)`.
    pub fn to_raw(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }
    pub fn from_raw(raw: &[(u64, u64)]) -> Hist {
        let mut h = Hist::new();
        for &(v, n) in raw {
            h.0.saturating_record_n(v, n);
        }
        h
    }
    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        LatencySummary {
            count: h.len(),
            min_us: if h.is_empty() { 0 } else { h.min() },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            stddev_us: if h.is_empty() { 0.0 } else { h.stdev() },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

/// Percentile summary of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub stddev_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub p99_99_us: u64,
    pub max_us: u64,
}

/// Kinds of error, counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    /// TCP connect failed (refused, unreachable, out of ports or fds).
    Connect,
    /// The upgrade was answered with something other than a valid 101.
    Handshake,
    /// A frame or message we could not accept (codec error, unexpected message, bad stamp).
    Protocol,
    /// The server answered with an `error` message.
    ServerError,
    /// The server closed (Close frame, EOF or reset) while we were not closing.
    UnexpectedClose,
    /// `partner_left` before the partner's last message.
    UnexpectedPartnerLeft,
    /// Connect + handshake did not finish within --timeout.
    TimeoutConnect,
    /// No `paired` within --timeout of `find`.
    TimeoutPair,
    /// A churn chat did not finish within --timeout.
    TimeoutChat,
    /// The partner's end marker (or the echoes) did not arrive within --timeout of the end.
    TimeoutDrain,
    /// No `partner_left` within --timeout after the partner's end marker (churn).
    TimeoutPartnerLeft,
    /// The server did not answer our Close within --timeout.
    TimeoutClose,
    /// `--pair-tags`: paired without the pair's tag as the one common interest, i.e. not with
    /// the intended partner.
    WrongPartner,
    /// `pairing`: a join fell due while the process already held `--max-open` connections
    /// (the server did not pair or close them as fast as strangers came).
    SkippedJoin,
}

pub const ERR_KINDS: usize = 14;

impl ErrKind {
    pub const ALL: [ErrKind; ERR_KINDS] = [
        ErrKind::Connect,
        ErrKind::Handshake,
        ErrKind::Protocol,
        ErrKind::ServerError,
        ErrKind::UnexpectedClose,
        ErrKind::UnexpectedPartnerLeft,
        ErrKind::TimeoutConnect,
        ErrKind::TimeoutPair,
        ErrKind::TimeoutChat,
        ErrKind::TimeoutDrain,
        ErrKind::TimeoutPartnerLeft,
        ErrKind::TimeoutClose,
        ErrKind::WrongPartner,
        ErrKind::SkippedJoin,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ErrKind::Connect => "connect",
            ErrKind::Handshake => "handshake",
            ErrKind::Protocol => "protocol",
            ErrKind::ServerError => "server_error",
            ErrKind::UnexpectedClose => "unexpected_close",
            ErrKind::UnexpectedPartnerLeft => "unexpected_partner_left",
            ErrKind::TimeoutConnect => "timeout_connect",
            ErrKind::TimeoutPair => "timeout_pair",
            ErrKind::TimeoutChat => "timeout_chat",
            ErrKind::TimeoutDrain => "timeout_drain",
            ErrKind::TimeoutPartnerLeft => "timeout_partner_left",
            ErrKind::TimeoutClose => "timeout_close",
            ErrKind::WrongPartner => "wrong_partner",
            ErrKind::SkippedJoin => "skipped_join",
        }
    }
    pub fn index(self) -> usize {
        ErrKind::ALL.iter().position(|&k| k == self).unwrap_or(0)
    }
}

/// Plain counters of one thread / process / run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Sockets created (connect attempted).
    pub opened: u64,
    /// Upgrades answered with a valid 101.
    pub connected: u64,
    /// `paired` received (chat scenarios).
    pub paired: u64,
    /// Connections ended by an error.
    pub failed: u64,
    /// Connections ended by a clean close.
    pub closed_clean: u64,
    /// Data messages sent / received (end markers not included).
    pub sent: u64,
    pub received: u64,
    /// Messages received inside the measured window [go, stop).
    pub window_received: u64,
    pub window_sent: u64,
    /// Messages the partner (or the echo) reported sent but that never arrived.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Message texts or echoes that were not what was sent (length, padding, stamp).
    pub corrupt: u64,
    /// Churn: chats that completed (messages, end markers and the partner_left check).
    pub sessions: u64,
    /// Server pings answered.
    pub pings: u64,
    /// Upgrades answered with a valid 101, per target URL (index into the URL list).
    pub connected_per_url: Vec<u64>,
    /// `--pair-tags`: pairs formed with their own tag (counted once, by the pair's even
    /// client), and how many of them have their two clients on different URLs.
    pub pairs: u64,
    pub pairs_cross_url: u64,
    /// Error counts by kind (`ErrKind::ALL` order).
    pub errors: [u64; ERR_KINDS],
    /// `pairing`: joins scheduled inside the measured window (made or skipped), and
    /// `paired` received inside it.
    pub window_joins: u64,
    pub window_paired: u64,
    /// `pairing`: the latest a join was made after its scheduled instant (the generator
    /// falling behind), in ns.
    pub max_join_lag_ns: u64,
    /// `pairing`: the most connections a thread held at once, summed over threads (an upper
    /// bound of the run's peak).
    pub peak_open: u64,
    /// Time of the first connect and of the last completed setup step (CLOCK_MONOTONIC ns).
    pub first_connect_ns: u64,
    pub last_setup_ns: u64,
}

impl Counts {
    pub fn error(&mut self, kind: ErrKind) {
        if let Some(e) = self.errors.get_mut(kind.index()) {
            *e += 1;
        }
    }
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }
    pub fn errors_map(&self) -> BTreeMap<&'static str, u64> {
        ErrKind::ALL
            .iter()
            .zip(self.errors.iter())
            .map(|(k, &n)| (k.name(), n))
            .collect()
    }
    pub fn add(&mut self, o: &Counts) {
        self.opened += o.opened;
        self.connected += o.connected;
        self.paired += o.paired;
        self.failed += o.failed;
        self.closed_clean += o.closed_clean;
        self.sent += o.sent;
        self.received += o.received;
        self.window_received += o.window_received;
        self.window_sent += o.window_sent;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.corrupt += o.corrupt;
        self.sessions += o.sessions;
        self.pings += o.pings;
        if self.connected_per_url.len() < o.connected_per_url.len() {
            self.connected_per_url.resize(o.connected_per_url.len(), 0);
        }
        for (a, b) in self.connected_per_url.iter_mut().zip(&o.connected_per_url) {
            *a += b;
        }
        self.pairs += o.pairs;
        self.pairs_cross_url += o.pairs_cross_url;
        for (a, b) in self.errors.iter_mut().zip(o.errors.iter()) {
            *a += b;
        }
        self.window_joins += o.window_joins;
        self.window_paired += o.window_paired;
        self.max_join_lag_ns = self.max_join_lag_ns.max(o.max_join_lag_ns);
        self.peak_open += o.peak_open;
        self.first_connect_ns = match (self.first_connect_ns, o.first_connect_ns) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.last_setup_ns = self.last_setup_ns.max(o.last_setup_ns);
    }
}

/// The four histograms of a run.
#[derive(Debug, Clone, Default)]
pub struct Hists {
    /// Message latency: one-way for chat, round trip for echo; from the intended send time.
    pub latency: Hist,
    /// Open loop only: from the actual send time.
    pub latency_uncorrected: Hist,
    /// Socket creation to a valid 101.
    pub connect: Hist,
    /// `find` sent to `paired` received.
    pub pair_wait: Hist,
}

impl Hists {
    pub fn add(&mut self, o: &Hists) {
        self.latency.add(&o.latency);
        self.latency_uncorrected.add(&o.latency_uncorrected);
        self.connect.add(&o.connect);
        self.pair_wait.add(&o.pair_wait);
    }
    pub fn to_raw(&self) -> RawHists {
        RawHists {
            latency: self.latency.to_raw(),
            latency_uncorrected: self.latency_uncorrected.to_raw(),
            connect: self.connect.to_raw(),
            pair_wait: self.pair_wait.to_raw(),
        }
    }
    pub fn from_raw(r: &RawHists) -> Hists {
        Hists {
            latency: Hist::from_raw(&r.latency),
            latency_uncorrected: Hist::from_raw(&r.latency_uncorrected),
            connect: Hist::from_raw(&r.connect),
            pair_wait: Hist::from_raw(&r.pair_wait),
        }
    }
}

/// Histograms as raw bucket counts, for the pipe between child and parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawHists {
    pub latency: Vec<(u64, u64)>,
    pub latency_uncorrected: Vec<(u64, u64)>,
    pub connect: Vec<(u64, u64)>,
    pub pair_wait: Vec<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip_merges_exactly() {
        let mut a = Hist::new();
        let mut b = Hist::new();
        for i in 1..10_000u64 {
            a.record_ns(i * 1_337);
            b.record_ns(i * 7_919_000);
        }
        let mut direct = a.clone();
        direct.add(&b);
        let mut via = Hist::from_raw(&a.to_raw());
        via.add(&Hist::from_raw(&b.to_raw()));
        assert_eq!(direct.len(), via.len());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(direct.value_at_quantile(q), via.value_at_quantile(q));
        }
    }

    #[test]
    fn counts_merge() {
        let mut a = Counts::default();
        a.error(ErrKind::TimeoutPair);
        a.first_connect_ns = 50;
        let mut b = Counts::default();
        b.error(ErrKind::TimeoutPair);
        b.error(ErrKind::Connect);
        b.first_connect_ns = 40;
        b.sent = 3;
        a.connected_per_url = vec![1];
        b.connected_per_url = vec![2, 5];
        b.pairs = 4;
        b.pairs_cross_url = 3;
        a.max_join_lag_ns = 7;
        b.max_join_lag_ns = 5;
        b.window_paired = 9;
        a.add(&b);
        assert_eq!((a.max_join_lag_ns, a.window_paired), (7, 9));
        assert_eq!(a.connected_per_url, [3, 5]);
        assert_eq!((a.pairs, a.pairs_cross_url), (4, 3));
        assert_eq!(a.errors_total(), 3);
        assert_eq!(a.errors_map()["timeout_pair"], 2);
        assert_eq!(a.first_connect_ns, 40);
        assert_eq!(a.sent, 3);
    }
}
