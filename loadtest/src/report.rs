//! Output: the live progress line (stderr), the human summary (stderr), the JSON summary and
//! the SVG latency plot.
use crate::client::Progress;
use crate::stats::{Hist, LatencySummary};
use crate::sys::{Cpu, ProcSample};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Progress once a second: an indicatif spinner on a terminal, else a plain line every 5 s.
pub struct Reporter {
    bar: Option<ProgressBar>,
    plain: bool,
    start: Instant,
    last_tick: Instant,
    last_plain: Instant,
    last_received: u64,
    last_sessions: u64,
    target: usize,
    churn: bool,
}

impl Reporter {
    pub fn new(target: usize, churn: bool, quiet: bool) -> Reporter {
        let now = Instant::now();
        let (bar, plain) = if quiet {
            (None, false)
        } else {
            let bar = ProgressBar::new_spinner();
            if bar.is_hidden() {
                (None, true)
            } else {
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                    bar.set_style(style);
                }
                (Some(bar), false)
            }
        };
        Reporter {
            bar,
            plain,
            start: now,
            last_tick: now,
            last_plain: now,
            last_received: 0,
            last_sessions: 0,
            target,
            churn,
        }
    }

    /// Call often; draws at most once a second.
    pub fn tick(&mut self, phase: &str, p: &Progress) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_tick);
        if dt < Duration::from_secs(1) {
            return;
        }
        let per_s = |d: u64| d as f64 / dt.as_secs_f64();
        let rate = per_s(p.received.saturating_sub(self.last_received));
        let joins = per_s(p.sessions.saturating_sub(self.last_sessions));
        self.last_tick = now;
        self.last_received = p.received;
        self.last_sessions = p.sessions;
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let conns = if self.churn {
            format!(
                "joined {} live {} sessions {} ({:.0}/s)",
                p.opened, p.live, p.sessions, joins
            )
        } else {
            format!(
                "conns {}/{} paired {} live {}",
                p.connected, self.target, p.paired, p.live
            )
        };
        let line = format!(
            "{phase:<6} {elapsed:>6.1}s | {conns} failed {} | sent {} recv {} ({:.0} msg/s) | errors {} bad {}",
            p.failed, p.sent, p.received, rate, p.errors, p.bad
        );
        if let Some(bar) = &self.bar {
            bar.set_message(line);
            bar.tick();
        } else if self.plain && now.duration_since(self.last_plain) >= Duration::from_secs(5) {
            self.last_plain = now;
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn lat_line(name: &str, l: &LatencySummary) -> String {
    format!(
        "  {name:<22} n={} p50 {} p90 {} p99 {} p99.9 {} max {}",
        l.count,
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p99_9_us),
        ms(l.max_us)
    )
}

/// The JSON summary (`--json`), in the order it is written.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: &'static str,
    /// No error (beyond --max-errors), nothing lost/duplicated/reordered/corrupt, every
    /// connection set up, not aborted.
    pub ok: bool,
    /// The target URLs joined by commas (one URL: that URL).
    pub url: String,
    /// The target URLs; client i used `urls[i % len]`.
    pub urls: Vec<String>,
    /// `--pair-tags`: clients 2k and 2k+1 were paired with each other by a shared tag.
    pub pair_tags: bool,
    /// `--pair-tags` only (else null): pairs formed with their own tag, and how many of them
    /// had their two clients on different URLs.
    pub pairs: Option<u64>,
    pub pairs_cross_url: Option<u64>,
    /// The scenario's flags as given (defaults filled in).
    pub params: Value,
    pub processes: usize,
    pub threads_per_process: usize,
    pub sources: Vec<IpAddr>,
    pub date_utc: String,
    /// Connect + handshake (+ pairing) of every client.
    pub setup_s: f64,
    /// The measured window [go, stop): message exchange, or the hold of `idle`.
    pub measured_s: f64,
    pub total_s: f64,
    pub connections: ConnSummary,
    pub messages: MsgSummary,
    /// "one way" (chat: send → partner's receipt) or "round trip" (echo).
    pub latency_kind: &'static str,
    /// Closed loop: from the send time. Open loop: from the intended send time (corrected
    /// for coordinated omission).
    pub latency: LatencySummary,
    /// Open loop only: from the actual send time.
    pub latency_uncorrected: Option<LatencySummary>,
    /// Socket creation → valid 101.
    pub connect_latency: LatencySummary,
    /// `find` → `paired`.
    pub pair_wait: LatencySummary,
    /// Churn: completed chats (one per client).
    pub sessions: u64,
    pub sessions_per_sec: Option<f64>,
    pub pings_answered: u64,
    pub errors_total: u64,
    pub errors: BTreeMap<&'static str, u64>,
    /// The first few errors, described.
    pub error_samples: Vec<String>,
    /// Child processes (--processes) that ended without reporting.
    pub lost_children: u64,
    /// Stopped early (--max-errors exceeded, or a run that did not end).
    pub aborted: bool,
    pub loadtest_cpu: CpuSummary,
    /// With --server-pid.
    pub server: Option<ServerSummary>,
}

#[derive(Debug, Serialize)]
pub struct ConnSummary {
    pub target: usize,
    pub opened: u64,
    pub connected: u64,
    pub paired: u64,
    pub failed: u64,
    pub closed_clean: u64,
    /// Connections set up per second, from the first connect to the last 101 (echo) or
    /// `paired` (chat).
    pub connect_rate_per_s: Option<f64>,
    /// Connections set up (valid 101) per target URL, in the order of `urls`.
    pub connected_per_url: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct MsgSummary {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    pub window_sent: u64,
    pub window_received: u64,
    /// Messages received per second in the measured window (churn: over the whole run).
    pub per_sec: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct CpuSummary {
    /// The load generator's CPU (getrusage, all processes) over the whole run.
    pub total: Cpu,
    /// ... and inside the measured window.
    pub window: Cpu,
    /// Window CPU / window messages received.
    pub per_msg_us: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ServerSummary {
    pub pid: u32,
    /// /proc samples: before connecting, after the hold (idle), at go, at stop, at the end.
    pub start: Option<ProcSample>,
    pub held: Option<ProcSample>,
    pub go: Option<ProcSample>,
    pub stop: Option<ProcSample>,
    pub end: Option<ProcSample>,
    /// Server CPU between go and stop.
    pub window_cpu: Cpu,
    pub cpu_per_msg_us: Option<f64>,
    /// Idle: (VmRSS held − VmRSS before connecting) / paired connections.
    pub rss_per_conn_bytes: Option<f64>,
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A human-readable digest of the summary.
pub fn human(s: &Summary) -> String {
    let mut o = String::new();
    let c = &s.connections;
    let _ = writeln!(
        o,
        "{}: {} — {} connected, {} paired, {} failed, {} closed cleanly; setup {:.2} s, measured {:.2} s",
        s.scenario, s.url, c.connected, c.paired, c.failed, c.closed_clean, s.setup_s, s.measured_s
    );
    if s.urls.len() > 1 {
        let parts: Vec<String> = s
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let n = c.connected_per_url.get(i).copied().unwrap_or(0);
                format!("{u} {n}")
            })
            .collect();
        let _ = writeln!(o, "  connected per URL      {}", parts.join(", "));
    }
    if let (true, Some(p), Some(x)) = (s.pair_tags, s.pairs, s.pairs_cross_url) {
        let _ = writeln!(
            o,
            "  pair tags              {p} pairs formed by their tag, {x} with the two clients on different URLs"
        );
    }
    if let Some(r) = c.connect_rate_per_s {
        let _ = writeln!(o, "  connect rate           {r:.0} conn/s");
    }
    let m = &s.messages;
    let _ = writeln!(
        o,
        "  messages               sent {} received {} lost {} duplicated {} out-of-order {} corrupt {}",
        m.sent, m.received, m.lost, m.duplicated, m.out_of_order, m.corrupt
    );
    if let Some(r) = m.per_sec {
        let _ = writeln!(o, "  throughput             {r:.0} msg/s");
    }
    if s.scenario == "churn" {
        let _ = writeln!(
            o,
            "  sessions               {} completed ({:.1}/s)",
            s.sessions,
            s.sessions_per_sec.unwrap_or(0.0)
        );
    }
    let kind = format!("latency ({})", s.latency_kind);
    for (name, l) in [
        (kind.as_str(), Some(&s.latency)),
        ("latency (uncorrected)", s.latency_uncorrected.as_ref()),
        ("connect+handshake", Some(&s.connect_latency)),
        ("pair wait", Some(&s.pair_wait)),
    ] {
        if let Some(l) = l.filter(|l| l.count > 0) {
            let _ = writeln!(o, "{}", lat_line(name, l));
        }
    }
    let lc = &s.loadtest_cpu;
    let _ = writeln!(
        o,
        "  loadtest CPU           total {:.2} s user + {:.2} s sys; window {:.2} + {:.2} s{}",
        lc.total.user_s,
        lc.total.system_s,
        lc.window.user_s,
        lc.window.system_s,
        lc.per_msg_us
            .map(|v| format!(" ({v:.2} µs/msg)"))
            .unwrap_or_default()
    );
    if let Some(sv) = &s.server {
        let rss = |p: &Option<ProcSample>| p.map(|p| p.rss_kb).unwrap_or(0);
        let _ = writeln!(
            o,
            "  server (pid {})       RSS {} → {} KiB; window CPU {:.2} s user + {:.2} s sys{}",
            sv.pid,
            rss(&sv.start),
            rss(&sv.end),
            sv.window_cpu.user_s,
            sv.window_cpu.system_s,
            sv.cpu_per_msg_us
                .map(|v| format!(" ({v:.2} µs/msg)"))
                .unwrap_or_default(),
        );
        if let Some(v) = sv.rss_per_conn_bytes {
            let _ = writeln!(
                o,
                "  server memory          {v:.0} B RSS per paired connection ({} KiB before, {} KiB held)",
                rss(&sv.start),
                rss(&sv.held)
            );
        }
    }
    if s.errors_total == 0 {
        let _ = writeln!(o, "  errors                 none");
    } else {
        let parts: Vec<String> = s
            .errors
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(
            o,
            "  errors                 {}: {}",
            s.errors_total,
            parts.join(" ")
        );
        for e in s.error_samples.iter().take(10) {
            let _ = writeln!(o, "    {e}");
        }
    }
    if s.lost_children > 0 {
        let _ = writeln!(o, "  child processes lost   {}", s.lost_children);
    }
    let _ = writeln!(
        o,
        "  result                 {}",
        if s.ok { "OK" } else { "FAILED" }
    );
    o
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Draw latency percentile curves on a log `1/(1-p)` axis (the HdrHistogram plot).
pub fn plot_svg(path: &Path, title: &str, series: &[(&str, &Hist, &str)]) -> io::Result<()> {
    const W: f64 = 900.0;
    const H: f64 = 520.0;
    const L: f64 = 80.0;
    const R: f64 = 30.0;
    const T: f64 = 50.0;
    const B: f64 = 70.0;
    let count = series.iter().map(|s| s.1.len()).max().unwrap_or(0);
    let xmax = ((count.max(100) as f64).log10().ceil()).clamp(2.0, 6.0);
    let ymax_us = series.iter().map(|s| s.1.max()).max().unwrap_or(0).max(1);
    // Round the y range up to 1, 2 or 5 × 10^k milliseconds.
    let ymax_ms = {
        let v = ymax_us as f64 / 1000.0;
        let mag = 10f64.powf(v.log10().floor());
        let mut nice = mag;
        for m in [1.0, 2.0, 5.0, 10.0] {
            nice = m * mag;
            if nice >= v {
                break;
            }
        }
        nice
    };
    let px = |x: f64| L + (W - L - R) * x / xmax;
    let py = |ms: f64| H - B - (H - T - B) * ms / ymax_ms;
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
    // Grid and x labels.
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
    for i in 0..=(xmax as usize) {
        let x = px(i as f64);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            H - B
        );
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            H - B + 18.0,
            labels.get(i).copied().unwrap_or("")
        );
    }
    for i in 0..=5 {
        let v = ymax_ms * i as f64 / 5.0;
        let y = py(v);
        let _ = writeln!(
            o,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            W - R
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 6.0,
            y + 4.0,
            if ymax_ms < 1.0 {
                format!("{:.0} µs", v * 1000.0)
            } else {
                let t = format!("{v:.3}");
                format!("{} ms", t.trim_end_matches('0').trim_end_matches('.'))
            }
        );
    }
    let _ = writeln!(
        o,
        r##"<rect x="{L}" y="{T}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
        W - L - R,
        H - T - B
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of 1/(1-p))</text>"#,
        (L + W - R) / 2.0,
        H - 20.0
    );
    let _ = writeln!(
        o,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms)</text>"#,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    // Curves.
    for (n, (name, hist, color)) in series.iter().enumerate() {
        if hist.is_empty() {
            continue;
        }
        let mut pts = String::new();
        let steps = 600;
        for i in 0..=steps {
            let x = xmax * f64::from(i) / f64::from(steps);
            let q = 1.0 - 10f64.powf(-x);
            let v = hist.value_at_quantile(q.min(1.0)) as f64 / 1000.0;
            let _ = write!(pts, "{:.1},{:.1} ", px(x), py(v));
        }
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>"#
        );
        let ly = T + 18.0 + 18.0 * n as f64;
        let _ = writeln!(
            o,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{} (n={}, max {})</text>"#,
            L + 12.0,
            L + 36.0,
            L + 42.0,
            ly + 4.0,
            xml_escape(name),
            hist.len(),
            ms(hist.max())
        );
    }
    let _ = writeln!(o, "</svg>");
    std::fs::write(path, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn svg_is_written() {
        let mut h = Hist::new();
        for i in 1..5000u64 {
            h.record_ns(i * 20_000);
        }
        let dir = std::env::temp_dir().join(format!("lt-plot-{}.svg", std::process::id()));
        plot_svg(&dir, "t <x>", &[("latency", &h, "#1f77b4")]).expect("written");
        let s = std::fs::read_to_string(&dir).expect("read back");
        let _ = std::fs::remove_file(&dir);
        assert!(s.starts_with("<svg"));
        assert!(s.contains("polyline"));
        assert!(s.contains("t &lt;x&gt;"));
        assert!(s.contains("99.9%"));
    }
}
