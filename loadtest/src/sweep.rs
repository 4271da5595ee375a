//! The `pairing` sweep: its rates, the verdict on each step, the knee, the summary and the
//! plot. Running a step is `main.rs`'s business (it owns the fleets); everything here is pure,
//! so that the knee and the plot are tested without a server.
//!
//! Definitions (also in `loadtest pairing --help` and the JSON's `knee_definition`):
//! - offered: the step's scheduled rate, in pairings/s (2 × offered strangers join per second);
//! - achieved: strangers that received `paired` inside the measured window / 2 / window;
//! - time to pair: `find` sent → `paired` received, over the strangers that joined inside the
//!   window, a timed-out stranger counted with the time it waited;
//! - a step is sustained when achieved ≥ min-ratio × offered, p99 ≤ p99-limit and
//!   errors ≤ max-errors;
//! - the knee is the highest step such that it and every lower step are sustained.
use crate::report::xml_escape;
use crate::stats::LatencySummary;
use crate::sys::Cpu;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The sweep's own settings (`loadtest pairing`).
#[derive(Debug, Clone)]
pub struct SweepCfg {
    /// Offered pairings/s of each step, increasing.
    pub rates: Vec<f64>,
    pub warmup: f64,
    pub step_duration: f64,
    pub pair_timeout: f64,
    pub limits: Limits,
    pub keep_going: bool,
    /// Connections per process (None: the open-file limit minus a reserve).
    pub max_open: Option<usize>,
    pub redis_pid: Option<u32>,
    /// Child processes: the step they run.
    pub step_index: Option<usize>,
}

/// What a step must meet to be sustained.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    pub min_ratio: f64,
    pub p99_limit_us: u64,
    pub max_errors: u64,
}

/// The sentence that defines the knee, for the JSON summary and the human report.
pub fn knee_definition(l: &Limits) -> String {
    format!(
        "a step is sustained when achieved pairings/s >= {} x offered, p99 time to pair \
         (find sent -> paired received, strangers that joined inside the measured window, a \
         timeout counted with the time it waited) <= {} and errors <= {}; the knee is the \
         highest step such that it and every lower step are sustained",
        l.min_ratio,
        fmt_us(l.p99_limit_us),
        l.max_errors
    )
}

/// `steps` rates from `from` to `to`, evenly spaced on a log scale (rounded to whole
/// pairings/s from 10 up, to hundredths below).
pub fn geometric(from: f64, to: f64, steps: usize) -> Result<Vec<f64>, String> {
    if !(from.is_finite() && to.is_finite() && from > 0.0 && to >= from) {
        return Err("--from and --to must be positive, with --to >= --from".into());
    }
    if steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    if steps == 1 {
        return Ok(vec![round_rate(from)]);
    }
    let ratio = to / from;
    let mut v: Vec<f64> = (0..steps)
        .map(|i| round_rate(from * ratio.powf(i as f64 / (steps - 1) as f64)))
        .collect();
    v.dedup();
    Ok(v)
}

fn round_rate(r: f64) -> f64 {
    if r >= 10.0 {
        r.round()
    } else {
        (r * 100.0).round() / 100.0
    }
}

/// Check explicit `--rates`: positive, finite, strictly increasing.
pub fn check_rates(rates: &[f64]) -> Result<(), String> {
    if rates.is_empty() {
        return Err("--rates needs at least one rate".into());
    }
    if rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        return Err("--rates must be positive numbers (pairings/s)".into());
    }
    if rates.windows(2).any(|w| w.first() >= w.get(1)) {
        return Err("--rates must increase (the knee is found from the lowest rate up)".into());
    }
    Ok(())
}

/// CPU time of one process inside a step's window.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PidCpu {
    pub pid: u32,
    /// None when /proc could not be read at both ends of the window.
    pub cpu: Option<Cpu>,
    /// CPU seconds / pairings achieved in the window, in µs.
    pub per_pairing_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct StepCpu {
    /// One per `--server-pid`, in order.
    pub servers: Vec<PidCpu>,
    /// Sum over the servers.
    pub server_total_s: Option<f64>,
    pub server_per_pairing_us: Option<f64>,
    pub redis: Option<PidCpu>,
    /// The load generator (every process) inside the window.
    pub loadtest: Cpu,
    pub loadtest_per_pairing_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Strangers {
    /// Joins made (sockets opened) in the whole step, warm-up and drain included.
    pub joined: u64,
    /// Joins scheduled inside the window (made or skipped).
    pub joined_in_window: u64,
    /// `paired` received, whole step.
    pub paired: u64,
    /// Strangers that received their partner's message (the pair worked).
    pub proved: u64,
    pub failed: u64,
    pub closed_clean: u64,
    /// Sum over threads of the most connections a thread held at once.
    pub peak_open: u64,
    /// The latest a join was made after its scheduled instant (generator behind), in ms.
    pub max_join_lag_ms: f64,
}

/// One step of the sweep, as reported.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StepRecord {
    pub index: usize,
    /// Scheduled pairings/s.
    pub offered_per_s: f64,
    /// Joins scheduled inside the window / 2 / window (the schedule after rounding it into
    /// whole joins per thread).
    pub offered_scheduled_per_s: f64,
    pub achieved_per_s: f64,
    /// achieved / offered.
    pub ratio: f64,
    pub warmup_s: f64,
    pub window_s: f64,
    pub strangers: Strangers,
    /// `--pair-tags`: pairs formed by their tag in the whole step, and those whose two
    /// strangers were on different URLs (null without it).
    pub pairs: Option<u64>,
    pub pairs_cross_url: Option<u64>,
    pub time_to_pair: LatencySummary,
    pub connect_latency: LatencySummary,
    pub message_latency: LatencySummary,
    pub errors_total: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub error_samples: Vec<String>,
    pub cpu: StepCpu,
    pub lost_children: u64,
    pub aborted: bool,
    /// errors ≤ --max-errors, no child lost, not aborted.
    pub clean: bool,
    pub sustained: bool,
    /// Why the step is not sustained (empty when it is).
    pub why_not: Vec<String>,
}

impl StepRecord {
    /// Set `clean`, `sustained` and `why_not` against `l`.
    pub fn judge(&mut self, l: &Limits) {
        let mut why = Vec::new();
        if self.offered_per_s > 0.0 && self.achieved_per_s < l.min_ratio * self.offered_per_s {
            why.push(format!(
                "achieved {:.1}/s < {} x offered {}/s",
                self.achieved_per_s,
                l.min_ratio,
                fmt_rate(self.offered_per_s)
            ));
        }
        if self.time_to_pair.count == 0 {
            why.push("no stranger of the window was paired".into());
        } else if self.time_to_pair.p99_us > l.p99_limit_us {
            why.push(format!(
                "p99 time to pair {} > {}",
                fmt_us(self.time_to_pair.p99_us),
                fmt_us(l.p99_limit_us)
            ));
        }
        self.clean = self.errors_total <= l.max_errors && self.lost_children == 0 && !self.aborted;
        if self.errors_total > l.max_errors {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            why.push(format!(
                "{} errors ({})",
                self.errors_total,
                kinds.join(" ")
            ));
        }
        if self.lost_children > 0 {
            why.push(format!("{} child processes lost", self.lost_children));
        }
        if self.aborted {
            why.push("aborted".into());
        }
        self.sustained = why.is_empty();
        self.why_not = why;
    }
}

/// Index of the knee: the last of the leading run of sustained steps.
pub fn knee(steps: &[StepRecord]) -> Option<usize> {
    steps
        .iter()
        .take_while(|s| s.sustained)
        .count()
        .checked_sub(1)
}

/// The knee as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Knee {
    pub index: usize,
    pub offered_per_s: f64,
    pub achieved_per_s: f64,
    pub time_to_pair_p50_us: u64,
    pub time_to_pair_p99_us: u64,
    pub server_cpu_per_pairing_us: Option<f64>,
    pub redis_cpu_per_pairing_us: Option<f64>,
}

impl Knee {
    pub fn of(s: &StepRecord) -> Knee {
        Knee {
            index: s.index,
            offered_per_s: s.offered_per_s,
            achieved_per_s: s.achieved_per_s,
            time_to_pair_p50_us: s.time_to_pair.p50_us,
            time_to_pair_p99_us: s.time_to_pair.p99_us,
            server_cpu_per_pairing_us: s.cpu.server_per_pairing_us,
            redis_cpu_per_pairing_us: s.cpu.redis.as_ref().and_then(|r| r.per_pairing_us),
        }
    }
}

/// The JSON summary of a sweep (`--json`).
#[derive(Debug, Serialize)]
pub struct SweepSummary {
    pub scenario: &'static str,
    /// Every step that ran was clean.
    pub ok: bool,
    pub url: String,
    pub urls: Vec<String>,
    pub pair_tags: bool,
    pub params: Value,
    pub processes: usize,
    pub threads_per_process: usize,
    pub sources: Vec<IpAddr>,
    pub date_utc: String,
    pub limits: Limits,
    pub knee_definition: String,
    /// Null when the first step is not sustained.
    pub knee: Option<Knee>,
    /// Rates that were planned but not run (the sweep stops after the first step that is
    /// not sustained, unless --keep-going).
    pub not_run: Vec<f64>,
    pub total_s: f64,
    pub steps: Vec<StepRecord>,
}

fn fmt_rate(r: f64) -> String {
    if r >= 10.0 || r == r.round() {
        format!("{r:.0}")
    } else {
        format!("{r:.2}")
    }
}

/// Microseconds as µs, ms or s.
pub fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn fmt_opt_us(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into())
}

/// The progress line of one finished step.
pub fn step_line(s: &StepRecord, steps: usize) -> String {
    let mut o = format!(
        "step {}/{}: offered {}/s, achieved {:.1}/s ({:.1} %), time to pair p50 {} p99 {}, errors {}",
        s.index + 1,
        steps,
        fmt_rate(s.offered_per_s),
        s.achieved_per_s,
        s.ratio * 100.0,
        fmt_us(s.time_to_pair.p50_us),
        fmt_us(s.time_to_pair.p99_us),
        s.errors_total
    );
    if let Some(v) = s.cpu.server_per_pairing_us {
        let _ = write!(o, ", server {v:.1} µs CPU/pairing");
    }
    if let Some(v) = s.cpu.redis.as_ref().and_then(|r| r.per_pairing_us) {
        let _ = write!(o, ", Redis {v:.1} µs CPU/pairing");
    }
    if s.sustained {
        o.push_str(" — sustained");
    } else {
        let _ = write!(o, " — NOT sustained: {}", s.why_not.join("; "));
    }
    o
}

/// The human report of the whole sweep.
pub fn human(s: &SweepSummary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "pairing sweep: {}{} — {} steps run{}",
        s.url,
        if s.pair_tags { " (pair tags)" } else { "" },
        s.steps.len(),
        if s.not_run.is_empty() {
            String::new()
        } else {
            format!(
                ", not run: {}",
                s.not_run
                    .iter()
                    .map(|r| fmt_rate(*r))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(
        o,
        "  {:>9} {:>10} {:>6} {:>9} {:>9} {:>7} {:>8} {:>9} {:>9} {:>6}  verdict",
        "offered/s",
        "achieved/s",
        "ratio",
        "p50",
        "p99",
        "errors",
        "timeouts",
        "srv µs/p",
        "redis µs/p",
        "cross"
    );
    for st in &s.steps {
        let timeouts = st.errors.get("timeout_pair").copied().unwrap_or(0);
        let cross = match (st.pairs, st.pairs_cross_url) {
            (Some(p), Some(x)) => format!("{x}/{p}"),
            _ => "–".into(),
        };
        let _ = writeln!(
            o,
            "  {:>9} {:>10.1} {:>5.1}% {:>9} {:>9} {:>7} {:>8} {:>9} {:>9} {:>6}  {}",
            fmt_rate(st.offered_per_s),
            st.achieved_per_s,
            st.ratio * 100.0,
            fmt_us(st.time_to_pair.p50_us),
            fmt_us(st.time_to_pair.p99_us),
            st.errors_total,
            timeouts,
            fmt_opt_us(st.cpu.server_per_pairing_us),
            fmt_opt_us(st.cpu.redis.as_ref().and_then(|r| r.per_pairing_us)),
            cross,
            if st.sustained {
                "sustained"
            } else {
                "NOT sustained"
            }
        );
        if st.strangers.max_join_lag_ms > 100.0 {
            let _ = writeln!(
                o,
                "  {:>9} the load generator fell behind its schedule by up to {:.0} ms: it may be the bottleneck",
                "",
                st.strangers.max_join_lag_ms
            );
        }
        for e in st.error_samples.iter().take(3) {
            let _ = writeln!(o, "  {:>9} {e}", "");
        }
    }
    let _ = writeln!(o, "  knee: {}", s.knee_definition);
    match &s.knee {
        Some(k) => {
            let _ = writeln!(
                o,
                "  KNEE                   {} pairings/s offered, {:.1}/s achieved, time to pair p50 {} p99 {}{}{}",
                fmt_rate(k.offered_per_s),
                k.achieved_per_s,
                fmt_us(k.time_to_pair_p50_us),
                fmt_us(k.time_to_pair_p99_us),
                k.server_cpu_per_pairing_us
                    .map(|v| format!(", server {v:.1} µs CPU/pairing"))
                    .unwrap_or_default(),
                k.redis_cpu_per_pairing_us
                    .map(|v| format!(", Redis {v:.1} µs CPU/pairing"))
                    .unwrap_or_default()
            );
            if s.knee.as_ref().map(|k| k.index + 1) == Some(s.steps.len()) && s.not_run.is_empty() {
                let _ = writeln!(
                    o,
                    "  {:>22} every step was sustained: the capacity is above the highest rate tried",
                    ""
                );
            }
        }
        None => {
            let _ = writeln!(
                o,
                "  KNEE                   none: the first step is not sustained"
            );
        }
    }
    let _ = writeln!(
        o,
        "  result                 {}",
        if s.ok {
            "OK (every step clean)"
        } else {
            "FAILED (a step had errors)"
        }
    );
    o
}

/// One axis of the plot: data range [lo, hi] onto pixels [p0, p1], linear or log.
#[derive(Debug, Clone, Copy)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    p0: f64,
    p1: f64,
}

impl Axis {
    fn at(&self, v: f64) -> f64 {
        let f = if self.log {
            let v = v.max(self.lo);
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.p0 + (self.p1 - self.p0) * f.clamp(0.0, 1.0)
    }
    /// Tick values: 1-2-5 on a log axis, about five round steps on a linear one.
    fn ticks(&self) -> Vec<f64> {
        let mut v = Vec::new();
        if self.log {
            let mut mag = 10f64.powf(self.lo.log10().floor());
            while mag <= self.hi {
                for m in [1.0, 2.0, 5.0] {
                    let t = m * mag;
                    if t >= self.lo * 0.999 && t <= self.hi * 1.001 {
                        v.push(t);
                    }
                }
                mag *= 10.0;
            }
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let mut t = (self.lo / step).ceil() * step;
            while t <= self.hi + step * 1e-9 {
                v.push(t);
                t += step;
            }
        }
        v
    }
}

fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_tick_rate(v: f64) -> String {
    if v >= 1000.0 {
        let k = v / 1000.0;
        if k == k.round() {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else {
        fmt_rate(v)
    }
}

fn fmt_tick_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", fmt_num(ms / 1000.0))
    } else {
        format!("{} ms", fmt_num(ms))
    }
}

fn fmt_num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Round down / up to the 1-2-5 series.
fn floor125(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|t| *t <= v * 1.000_001)
        .unwrap_or(mag)
}

fn ceil125(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|t| *t >= v * 0.999_999)
        .unwrap_or(10.0 * mag)
}

/// The sweep plot: top, achieved vs offered pairings/s with the ideal diagonal; bottom,
/// p50/p99 time to pair (log scale) against the p99 limit; the knee marked in both.
/// Sustained steps are green, the others red.
pub fn sweep_svg(
    title: &str,
    steps: &[StepRecord],
    knee: Option<usize>,
    p99_limit_us: u64,
) -> String {
    const W: f64 = 900.0;
    const H: f64 = 780.0;
    const L: f64 = 90.0;
    const R: f64 = 30.0;
    // Panel rows: throughput, then time to pair.
    const T1: f64 = 60.0;
    const B1: f64 = 380.0;
    const T2: f64 = 450.0;
    const B2: f64 = 700.0;
    let rates: Vec<f64> = steps.iter().map(|s| s.offered_per_s).collect();
    let rmin = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let rmax = rates
        .iter()
        .copied()
        .chain(steps.iter().map(|s| s.achieved_per_s))
        .fold(0.0, f64::max);
    let (rmin, rmax) = if rmin.is_finite() && rmax > 0.0 {
        (rmin, rmax)
    } else {
        (1.0, 10.0)
    };
    // A log scale once the rates span a factor of 4 (geometric sweeps), else linear from 0.
    let log = rmax / rmin >= 4.0;
    let (lo, hi) = if log {
        (floor125(rmin / 1.2), ceil125(rmax * 1.1))
    } else {
        (0.0, rmax * 1.1)
    };
    let x = Axis {
        log,
        lo,
        hi,
        p0: L,
        p1: W - R,
    };
    // Same range on both axes, so the ideal line is the panel's diagonal.
    let y1 = Axis {
        log,
        lo,
        hi,
        p0: B1,
        p1: T1,
    };
    let ms = |us: u64| us as f64 / 1000.0;
    let limit_ms = ms(p99_limit_us).max(0.001);
    let positive = steps
        .iter()
        .flat_map(|s| [s.time_to_pair.p50_us, s.time_to_pair.p99_us])
        .filter(|&v| v > 0)
        .map(ms);
    let tmin = positive.clone().fold(limit_ms, f64::min);
    let tmax = positive.fold(limit_ms, f64::max);
    let y2 = Axis {
        log: true,
        lo: floor125(tmin / 1.5),
        hi: ceil125(tmax * 1.5),
        p0: B2,
        p1: T2,
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        xml_escape(title)
    );
    // Grids: x ticks in both panels.
    for t in x.ticks() {
        let px = x.at(t);
        for (top, bottom) in [(T1, B1), (T2, B2)] {
            let _ = writeln!(
                o,
                r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#ddd"/>"##
            );
            let _ = writeln!(
                o,
                r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                fmt_tick_rate(t)
            );
        }
    }
    for t in y1.ticks() {
        let py = y1.at(t);
        let _ = writeln!(
            o,
            r##"<line x1="{L}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>"##,
            W - R
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 6.0,
            py + 4.0,
            fmt_tick_rate(t)
        );
    }
    for t in y2.ticks() {
        let py = y2.at(t);
        let _ = writeln!(
            o,
            r##"<line x1="{L}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>"##,
            W - R
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 6.0,
            py + 4.0,
            fmt_tick_ms(t)
        );
    }
    for (top, bottom) in [(T1, B1), (T2, B2)] {
        let _ = writeln!(
            o,
            r##"<rect x="{L}" y="{top}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            W - L - R,
            bottom - top
        );
    }
    let scale = if log { " (log scale)" } else { "" };
    for (bottom, label) in [(B1, "offered pairings/s"), (B2, "offered pairings/s")] {
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}{scale}</text>"#,
            (L + W - R) / 2.0,
            bottom + 34.0
        );
    }
    for (top, bottom, label) in [
        (T1, B1, format!("achieved pairings/s{scale}")),
        (T2, B2, "time to pair (log scale)".to_string()),
    ] {
        let mid = (top + bottom) / 2.0;
        let _ = writeln!(
            o,
            r#"<text x="18" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 18 {mid:.1})">{label}</text>"#
        );
    }
    // Ideal: achieved = offered.
    let _ = writeln!(
        o,
        r##"<line class="ideal" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
        x.at(lo),
        y1.at(lo),
        x.at(hi),
        y1.at(hi)
    );
    // The p99 limit.
    let _ = writeln!(
        o,
        r##"<line class="p99-limit" x1="{L}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#d62728" stroke-width="1" stroke-dasharray="4 3"/>"##,
        y2.at(limit_ms),
        W - R,
        y2.at(limit_ms)
    );
    // Knee: a vertical line through both panels.
    let knee_step = knee.and_then(|k| steps.get(k));
    if let Some(k) = knee_step {
        let kx = x.at(k.offered_per_s);
        // The label on the side of the line with room for it.
        let (tx, anchor) = if kx > L + (W - L - R) * 0.6 {
            (kx - 8.0, "end")
        } else {
            (kx + 8.0, "start")
        };
        let _ = writeln!(
            o,
            r##"<g class="knee"><line x1="{kx:.1}" y1="{T1}" x2="{kx:.1}" y2="{B2}" stroke="#2ca02c" stroke-width="1.5" stroke-dasharray="2 3"/><circle cx="{kx:.1}" cy="{:.1}" r="9" fill="none" stroke="#2ca02c" stroke-width="2"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="#2ca02c" font-weight="bold">knee: {} pairings/s (p99 {})</text></g>"##,
            y1.at(k.achieved_per_s),
            T1 + 16.0,
            fmt_rate(k.offered_per_s),
            xml_escape(&fmt_us(k.time_to_pair.p99_us))
        );
    } else {
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" fill="#d62728">no knee: the first step is not sustained</text>"##,
            L + 12.0,
            T1 + 16.0
        );
    }
    // Curves and points.
    let line = |pts: Vec<(f64, f64)>, color: &str, class: &str| {
        let p: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        format!(
            r#"<polyline class="{class}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            p.join(" ")
        )
    };
    let _ = writeln!(
        o,
        "{}",
        line(
            steps
                .iter()
                .map(|s| (x.at(s.offered_per_s), y1.at(s.achieved_per_s)))
                .collect(),
            "#1f77b4",
            "achieved-line"
        )
    );
    let _ = writeln!(
        o,
        "{}",
        line(
            steps
                .iter()
                .filter(|s| s.time_to_pair.count > 0)
                .map(|s| (x.at(s.offered_per_s), y2.at(ms(s.time_to_pair.p99_us))))
                .collect(),
            "#ff7f0e",
            "p99-line"
        )
    );
    let _ = writeln!(
        o,
        "{}",
        line(
            steps
                .iter()
                .filter(|s| s.time_to_pair.count > 0)
                .map(|s| (x.at(s.offered_per_s), y2.at(ms(s.time_to_pair.p50_us))))
                .collect(),
            "#9467bd",
            "p50-line"
        )
    );
    for s in steps {
        let fill = if s.sustained { "#2ca02c" } else { "#d62728" };
        let px = x.at(s.offered_per_s);
        let tip = format!(
            "offered {}/s, achieved {:.1}/s, p50 {}, p99 {}, errors {}{}",
            fmt_rate(s.offered_per_s),
            s.achieved_per_s,
            fmt_us(s.time_to_pair.p50_us),
            fmt_us(s.time_to_pair.p99_us),
            s.errors_total,
            if s.sustained { "" } else { " (not sustained)" }
        );
        let tip = xml_escape(&tip);
        let _ = writeln!(
            o,
            r##"<circle class="achieved" cx="{px:.1}" cy="{:.1}" r="4.5" fill="{fill}" stroke="#1f77b4"><title>{tip}</title></circle>"##,
            y1.at(s.achieved_per_s)
        );
        if s.time_to_pair.count > 0 {
            let _ = writeln!(
                o,
                r##"<circle class="p99" cx="{px:.1}" cy="{:.1}" r="4.5" fill="{fill}" stroke="#ff7f0e"><title>{tip}</title></circle>"##,
                y2.at(ms(s.time_to_pair.p99_us))
            );
            let _ = writeln!(
                o,
                r##"<circle class="p50" cx="{px:.1}" cy="{:.1}" r="3" fill="#9467bd"><title>{tip}</title></circle>"##,
                y2.at(ms(s.time_to_pair.p50_us))
            );
        }
    }
    // Legends.
    let legend = |o: &mut String, row: usize, top: f64, color: &str, dash: &str, text: &str| {
        let ly = top + 36.0 + 18.0 * row as f64;
        let _ = writeln!(
            o,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2.5" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            L + 12.0,
            L + 36.0,
            L + 42.0,
            ly + 4.0,
            xml_escape(text)
        );
    };
    legend(
        &mut o,
        0,
        T1,
        "#1f77b4",
        "none",
        "achieved (green: sustained, red: not)",
    );
    legend(&mut o, 1, T1, "#999", "6 4", "ideal: achieved = offered");
    legend(&mut o, 0, T2, "#ff7f0e", "none", "p99 time to pair");
    legend(&mut o, 1, T2, "#9467bd", "none", "p50 time to pair");
    legend(
        &mut o,
        2,
        T2,
        "#d62728",
        "4 3",
        &format!("p99 limit {}", fmt_us(p99_limit_us)),
    );
    let _ = writeln!(o, "</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_ratio: 0.95,
        p99_limit_us: 1_000_000,
        max_errors: 0,
    };

    fn step(index: usize, offered: f64, achieved: f64, p99_us: u64, errors: u64) -> StepRecord {
        let mut s = StepRecord {
            index,
            offered_per_s: offered,
            achieved_per_s: achieved,
            ratio: achieved / offered,
            time_to_pair: LatencySummary {
                count: 100,
                p50_us: p99_us / 4,
                p99_us,
                ..LatencySummary::default()
            },
            errors_total: errors,
            ..StepRecord::default()
        };
        if errors > 0 {
            s.errors.insert("timeout_pair", errors);
        }
        s.judge(&LIMITS);
        s
    }

    #[test]
    fn verdicts() {
        assert!(step(0, 100.0, 99.0, 5_000, 0).sustained);
        // Exactly at the bounds is still sustained.
        assert!(step(0, 100.0, 95.0, 1_000_000, 0).sustained);
        let s = step(0, 100.0, 94.9, 5_000, 0);
        assert!(!s.sustained && s.clean);
        assert!(
            s.why_not.iter().any(|w| w.contains("achieved")),
            "{:?}",
            s.why_not
        );
        let s = step(0, 100.0, 100.0, 1_000_001, 0);
        assert!(!s.sustained && s.clean);
        assert!(
            s.why_not.iter().any(|w| w.contains("p99")),
            "{:?}",
            s.why_not
        );
        let s = step(0, 100.0, 100.0, 5_000, 1);
        assert!(!s.sustained && !s.clean);
        assert!(
            s.why_not.iter().any(|w| w.contains("timeout_pair=1")),
            "{:?}",
            s.why_not
        );
        let mut s = step(0, 100.0, 100.0, 5_000, 0);
        s.time_to_pair.count = 0;
        s.judge(&LIMITS);
        assert!(!s.sustained, "no measurement is no proof");
        let mut s = step(0, 100.0, 100.0, 5_000, 0);
        s.lost_children = 1;
        s.judge(&LIMITS);
        assert!(!s.sustained && !s.clean);
        // --max-errors tolerates errors in both verdicts.
        let mut s = step(0, 100.0, 100.0, 5_000, 2);
        s.judge(&Limits {
            max_errors: 2,
            ..LIMITS
        });
        assert!(s.sustained && s.clean);
    }

    #[test]
    fn knee_is_the_top_of_the_leading_sustained_run() {
        let good = |i, r: f64| step(i, r, r, 10_000, 0);
        let steps = vec![good(0, 100.0), good(1, 200.0), good(2, 400.0)];
        assert_eq!(knee(&steps), Some(2), "all sustained: the last");
        let steps = vec![
            good(0, 100.0),
            good(1, 200.0),
            step(2, 400.0, 300.0, 10_000, 0),
            good(3, 800.0),
        ];
        assert_eq!(
            knee(&steps),
            Some(1),
            "a later sustained step after a failure does not count"
        );
        let steps = vec![
            good(0, 100.0),
            step(1, 200.0, 200.0, 2_000_000, 0),
            good(2, 400.0),
        ];
        assert_eq!(knee(&steps), Some(0), "p99 over the limit ends the run");
        let steps = vec![step(0, 100.0, 100.0, 10_000, 3), good(1, 200.0)];
        assert_eq!(knee(&steps), None, "the first step failed");
        assert_eq!(knee(&[]), None);
    }

    #[test]
    fn rates() {
        assert_eq!(
            geometric(100.0, 3200.0, 6).expect("valid"),
            [100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0]
        );
        assert_eq!(
            geometric(100.0, 1000.0, 4).expect("valid"),
            [100.0, 215.0, 464.0, 1000.0]
        );
        assert_eq!(
            geometric(5.0, 5.0, 3).expect("valid"),
            [5.0],
            "duplicates merge"
        );
        assert_eq!(geometric(50.0, 800.0, 1).expect("valid"), [50.0]);
        assert!(geometric(0.0, 10.0, 3).is_err());
        assert!(geometric(10.0, 5.0, 3).is_err());
        assert!(geometric(10.0, 50.0, 0).is_err());
        assert!(check_rates(&[100.0, 200.0]).is_ok());
        assert!(check_rates(&[200.0, 100.0]).is_err());
        assert!(check_rates(&[100.0, 100.0]).is_err());
        assert!(check_rates(&[0.0, 100.0]).is_err());
        assert!(check_rates(&[]).is_err());
    }

    fn sweep() -> Vec<StepRecord> {
        vec![
            step(0, 100.0, 100.0, 3_000, 0),
            step(1, 200.0, 199.0, 4_000, 0),
            step(2, 400.0, 398.0, 9_000, 0),
            step(3, 800.0, 610.0, 2_400_000, 17),
        ]
    }

    #[test]
    fn plot_shows_points_ideal_and_knee() {
        let steps = sweep();
        let k = knee(&steps);
        assert_eq!(k, Some(2));
        let svg = sweep_svg("pairing <2 nodes> & redis", &steps, k, 1_000_000);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("pairing &lt;2 nodes&gt; &amp; redis"));
        assert_eq!(
            svg.matches(r#"class="achieved""#).count(),
            4,
            "one point per step"
        );
        assert_eq!(svg.matches(r#"class="p99""#).count(), 4);
        assert_eq!(svg.matches(r#"class="p50""#).count(), 4);
        assert!(svg.contains(r#"class="ideal""#));
        assert!(svg.contains(r#"class="p99-limit""#));
        assert_eq!(svg.matches(r#"class="knee""#).count(), 1);
        assert!(svg.contains("knee: 400 pairings/s (p99 9.0 ms)"), "{svg}");
        // The failed step is red and its tooltip says why.
        assert!(svg.contains(
            "offered 800/s, achieved 610.0/s, p50 600 ms, p99 2.40 s, errors 17 (not sustained)"
        ));
        assert_eq!(
            svg.matches(r##"fill="#d62728" stroke="#1f77b4""##).count(),
            1
        );
        // The knee's marker sits on the knee's point (same x as its circle).
        let circle_x = |class: &str, nth: usize| -> String {
            let pat = format!(r#"class="{class}" cx=""#);
            let at = svg.match_indices(&pat).nth(nth).map(|(i, _)| i + pat.len());
            let rest = at.and_then(|i| svg.get(i..)).unwrap_or("");
            rest.split('"').next().unwrap_or("").to_string()
        };
        let knee_line = svg
            .split(r#"<g class="knee"><line x1=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        assert_eq!(knee_line, circle_x("achieved", 2));
    }

    #[test]
    fn plot_without_knee_says_so() {
        let steps = vec![
            step(0, 100.0, 50.0, 3_000, 0),
            step(1, 150.0, 60.0, 4_000, 0),
        ];
        let svg = sweep_svg("t", &steps, knee(&steps), 1_000_000);
        assert!(!svg.contains(r#"class="knee""#));
        assert!(svg.contains("no knee"));
        // Linear axes for a narrow range: ticks from 0.
        assert!(svg.contains(">0</text>"));
        // An empty sweep still yields a valid document.
        let svg = sweep_svg("t", &[], None, 1_000_000);
        assert!(svg.contains("</svg>"));
    }

    #[test]
    fn axis_maps_and_ticks() {
        let a = Axis {
            log: true,
            lo: 50.0,
            hi: 5000.0,
            p0: 0.0,
            p1: 100.0,
        };
        assert!((a.at(500.0) - 50.0).abs() < 1e-9);
        assert_eq!(a.at(0.0), 0.0, "zero clamps to the bottom of a log axis");
        assert_eq!(a.at(1e9), 100.0);
        assert_eq!(
            a.ticks(),
            [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]
        );
        let l = Axis {
            log: false,
            lo: 0.0,
            hi: 1000.0,
            p0: 0.0,
            p1: 10.0,
        };
        assert_eq!(l.ticks(), [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        assert_eq!((floor125(180.0), ceil125(180.0)), (100.0, 200.0));
        assert_eq!((floor125(0.7), ceil125(7000.0)), (0.5, 10000.0));
    }

    #[test]
    fn human_report_names_the_knee() {
        let steps = sweep();
        let k = knee(&steps);
        let s = SweepSummary {
            scenario: "pairing",
            ok: steps.iter().all(|s| s.clean),
            url: "ws://a/ws,ws://b/ws".into(),
            urls: vec![],
            pair_tags: true,
            params: Value::Null,
            processes: 1,
            threads_per_process: 2,
            sources: vec![],
            date_utc: String::new(),
            limits: LIMITS,
            knee_definition: knee_definition(&LIMITS),
            knee: k.and_then(|i| steps.get(i)).map(Knee::of),
            not_run: vec![1600.0],
            total_s: 1.0,
            steps,
        };
        let h = human(&s);
        assert!(
            h.contains("KNEE                   400 pairings/s offered"),
            "{h}"
        );
        assert!(h.contains("not run: 1600"));
        assert!(h.contains("FAILED"));
        assert!(s.knee_definition.contains("p99 time to pair"));
        assert!(s.knee_definition.contains("1.00 s"));
    }
}
