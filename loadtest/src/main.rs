//! `loadtest`: load generator for the roulette chat server. See `loadtest --help`.
//!
//! Layout: `cli` (flags), `client` (the mio client loops and the per-client state machine),
//! `frames` (pre-encoded frames, stamps, parsing), `stats` (counters, HDR histograms),
//! `fleet` (threads and child processes), `report` (progress, summary, SVG), `sweep` (the
//! `pairing` sweep's verdicts, knee, summary and plot), `sys` (clock, rlimit, /proc,
//! getrusage), `targets` (URLs, pair tags). This file turns flags into a plan and runs the
//! phases (of each step, for `pairing`).
mod cli;
mod client;
mod fleet;
mod frames;
mod report;
mod stats;
mod sweep;
mod sys;
mod targets;

use clap::Parser;
use cli::{Cli, Cmd, Common};
use client::{Kind, Plan, Progress};
use fleet::{Children, Local, Merged, ProcResult};
use frames::{Frames, Rng, Wire, STAMP_LEN};
use report::{ConnSummary, CpuSummary, MsgSummary, ServerSummary, Summary};
use serde_json::Value;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use sys::{now_ns, Cpu, ProcSample};

/// Orchestrator tick.
const TICK: Duration = Duration::from_millis(20);
/// Fds kept free for everything that is not a client socket.
const FD_RESERVE: u64 = 64;

/// The scenario, with its parameters normalised.
#[derive(Debug, Clone)]
struct Settings {
    kind: Kind,
    /// Connections of the whole run (churn: joins of the whole run).
    connections: usize,
    duration: f64,
    in_flight: u32,
    rate: Option<f64>,
    join_rate: f64,
    messages: u32,
    message_bytes: usize,
    binary: bool,
    common: Common,
    params: Value,
    /// The target URLs (`--url`, split), in order.
    urls: Vec<String>,
    /// `--pair-tags` (idle, relay, churn, pairing).
    pair_tags: bool,
    /// Random per run (the parent's, in child processes): the suffix of the pair tags.
    run_id: String,
    /// `pairing`: the sweep (rates, limits); its steps are runs of `Kind::Pairing`.
    sweep: Option<sweep::SweepCfg>,
}

fn even_round(x: f64) -> usize {
    ((x / 2.0).round() * 2.0).max(0.0) as usize
}

fn settings(cmd: &Cmd) -> Result<Settings, String> {
    let params = serde_json::to_value(cmd).unwrap_or(Value::Null);
    let params = params
        .as_object()
        .and_then(|o| o.values().next().cloned())
        .unwrap_or(Value::Null);
    let mut s = match cmd {
        Cmd::Idle(a) => Settings {
            kind: Kind::Idle,
            connections: a.connections,
            duration: a.duration,
            in_flight: 0,
            rate: None,
            join_rate: 0.0,
            messages: 0,
            message_bytes: STAMP_LEN,
            binary: false,
            common: a.common.clone(),
            params,
            urls: Vec::new(),
            pair_tags: false,
            run_id: String::new(),
            sweep: None,
        },
        Cmd::Relay(a) => Settings {
            kind: Kind::Relay,
            connections: a.connections + a.connections % 2,
            duration: a.duration,
            in_flight: a.in_flight,
            rate: a.rate,
            join_rate: 0.0,
            messages: 0,
            message_bytes: a.message_bytes,
            binary: false,
            common: a.common.clone(),
            params,
            urls: Vec::new(),
            pair_tags: false,
            run_id: String::new(),
            sweep: None,
        },
        Cmd::Churn(a) => Settings {
            kind: Kind::Churn,
            connections: 0,
            duration: a.duration,
            in_flight: 1,
            rate: None,
            join_rate: a.rate,
            messages: a.messages,
            message_bytes: a.message_bytes,
            binary: false,
            common: a.common.clone(),
            params,
            urls: Vec::new(),
            pair_tags: false,
            run_id: String::new(),
            sweep: None,
        },
        Cmd::Echo(a) => Settings {
            kind: Kind::Echo,
            connections: a.connections,
            duration: a.duration,
            in_flight: a.in_flight,
            rate: a.rate,
            join_rate: 0.0,
            messages: 0,
            message_bytes: a.message_bytes,
            binary: a.binary,
            common: a.common.clone(),
            params,
            urls: Vec::new(),
            pair_tags: false,
            run_id: String::new(),
            sweep: None,
        },
        Cmd::Pairing(a) => {
            let rates = if a.rates.is_empty() {
                sweep::geometric(a.from, a.to, a.steps)?
            } else {
                sweep::check_rates(&a.rates)?;
                a.rates.clone()
            };
            let secs_ok = |v: f64| v.is_finite() && v > 0.0;
            if !secs_ok(a.step_duration) {
                return Err("--step-duration must be positive".into());
            }
            if !(a.warmup.is_finite() && a.warmup >= 0.0) {
                return Err("--warmup must be a non-negative number of seconds".into());
            }
            if !secs_ok(a.pair_timeout) || !secs_ok(a.p99_limit) {
                return Err("--pair-timeout and --p99-limit must be positive".into());
            }
            if !(a.min_ratio.is_finite() && a.min_ratio > 0.0 && a.min_ratio <= 1.0) {
                return Err("--min-ratio must be in (0, 1]".into());
            }
            if a.max_open.is_some_and(|m| m < 2) {
                return Err("--max-open must be at least 2".into());
            }
            let first = rates.first().copied().unwrap_or(1.0);
            Settings {
                kind: Kind::Pairing,
                connections: 0,
                duration: a.warmup + a.step_duration,
                in_flight: 1,
                rate: None,
                join_rate: 2.0 * first,
                messages: 1,
                message_bytes: a.message_bytes,
                binary: false,
                common: a.common.clone(),
                params,
                urls: Vec::new(),
                pair_tags: false,
                run_id: String::new(),
                sweep: Some(sweep::SweepCfg {
                    rates,
                    warmup: a.warmup,
                    step_duration: a.step_duration,
                    pair_timeout: a.pair_timeout,
                    limits: sweep::Limits {
                        min_ratio: a.min_ratio,
                        p99_limit_us: (a.p99_limit * 1e6).round() as u64,
                        max_errors: a.common.max_errors.unwrap_or(0),
                    },
                    keep_going: a.keep_going,
                    max_open: a.max_open,
                    redis_pid: a.redis_pid,
                    step_index: a.step_index,
                }),
            }
        }
    };
    s.pair_tags = match cmd {
        Cmd::Idle(a) => a.pair_tags,
        Cmd::Relay(a) => a.pair_tags,
        Cmd::Churn(a) => a.pair_tags,
        Cmd::Pairing(a) => a.pair_tags,
        Cmd::Echo(_) => false,
    };
    if s.kind != Kind::Pairing && s.common.server_pid.len() > 1 {
        return Err(format!(
            "--server-pid takes one PID for {} (several only for pairing, one per node)",
            s.params_name()
        ));
    }
    let endpoint = if s.kind == Kind::Echo {
        targets::Endpoint::Echo
    } else {
        targets::Endpoint::Chat
    };
    s.urls = targets::split_list(
        &s.common.url,
        &format!("ws://127.0.0.1:8080{}", endpoint.path()),
    )?;
    // Syntax and endpoint only; names are resolved once, in `run_top`.
    targets::parse_all(&s.urls, endpoint, s.params_name())?;
    s.run_id = match &s.common.run_id {
        Some(r) => r.clone(),
        None => targets::run_id(
            Rng::new(now_ns() ^ u64::from(std::process::id()).rotate_left(32)).next_u64(),
        ),
    };
    if s.pair_tags && s.kind == Kind::Idle {
        // Everyone needs a partner.
        s.connections += s.connections % 2;
    }
    if !(s.duration.is_finite() && s.duration >= 0.0) {
        return Err("--duration must be a non-negative number of seconds".into());
    }
    if !(s.common.timeout.is_finite() && s.common.timeout > 0.0) {
        return Err("--timeout must be positive".into());
    }
    if s.common.processes == 0 {
        return Err("--processes must be at least 1".into());
    }
    if s.common.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    if s.common.max_connecting == 0 {
        return Err("--max-connecting must be at least 1".into());
    }
    if let Some(r) = s.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be positive".into());
        }
    }
    if s.kind != Kind::Idle && s.message_bytes < STAMP_LEN {
        return Err(format!(
            "--message-bytes must be at least {STAMP_LEN} (the stamp)"
        ));
    }
    if s.kind != Kind::Echo && s.message_bytes > 60_000 {
        return Err("--message-bytes over 60000 does not fit a chat message".into());
    }
    if s.kind == Kind::Echo && s.message_bytes > 256 << 20 {
        return Err("--message-bytes over 256 MiB".into());
    }
    if matches!(s.kind, Kind::Relay | Kind::Echo) && s.rate.is_none() && s.in_flight == 0 {
        return Err("--in-flight must be at least 1 (or give --rate)".into());
    }
    if matches!(s.kind, Kind::Churn | Kind::Pairing) {
        if !(s.join_rate.is_finite() && s.join_rate > 0.0) {
            return Err("--rate (joins/s) must be positive".into());
        }
        s.connections = even_round(s.join_rate * s.duration).max(2);
        if s.connections == 0 {
            return Err("--rate × --duration gives no client".into());
        }
    } else if s.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    Ok(s)
}

fn split(total: usize, parts: usize, i: usize) -> usize {
    let parts = parts.max(1);
    total / parts + usize::from(i < total % parts)
}

/// Part `i` of `parts` of `total` clients; with `pairs`, in whole pairs (2k, 2k+1), so that
/// partners are opened by the same thread one after the other (an odd last client goes to
/// the last part).
fn share(total: usize, parts: usize, i: usize, pairs: bool) -> usize {
    if !pairs {
        return split(total, parts, i);
    }
    2 * split(total / 2, parts, i) + usize::from(i + 1 == parts.max(1)) * (total % 2)
}

/// Resolve every target URL (in order).
fn resolve_all(s: &Settings) -> Result<Vec<(targets::WsUrl, std::net::SocketAddr)>, String> {
    s.urls
        .iter()
        .map(|u| {
            let p = targets::parse(u)?;
            let a = p.resolve()?;
            Ok((p, a))
        })
        .collect()
}

fn sources(c: &Common) -> Vec<IpAddr> {
    if let Some(n) = c.sources {
        (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(i))))
            .collect()
    } else {
        c.source_addrs.clone()
    }
}

fn threads(c: &Common) -> usize {
    c.threads.unwrap_or_else(num_cpus::get).max(1)
}

/// The plan of process `index` of `count`.
fn build_plan(s: &Settings, index: usize, count: usize) -> Result<Plan, String> {
    let resolved = resolve_all(s)?;
    let endpoints: Vec<(&str, &str)> = resolved
        .iter()
        .map(|(u, _)| (u.host.as_str(), u.path.as_str()))
        .collect();
    let t = threads(&s.common);
    let mut rng = Rng::new(now_ns() ^ u64::from(std::process::id()).rotate_left(40));
    let wire = match (s.kind, s.binary) {
        (Kind::Echo, false) => Wire::EchoText,
        (Kind::Echo, true) => Wire::EchoBinary,
        _ => Wire::Chat,
    };
    let frames = Frames::new(&endpoints, wire, s.message_bytes, &mut rng);
    let (per_thread, conn_offset, join_rate_per_thread) =
        if matches!(s.kind, Kind::Churn | Kind::Pairing) {
            // Every thread gets an even number of joins, so the run's total is even.
            let each = even_round(s.connections as f64 / (count * t) as f64).max(2);
            let rate = if s.duration > 0.0 {
                each as f64 / s.duration
            } else {
                f64::INFINITY
            };
            (vec![each; t], index * t * each, rate)
        } else {
            let pairs = s.pair_tags;
            let mine = share(s.connections, count, index, pairs);
            let offset: usize = (0..index)
                .map(|i| share(s.connections, count, i, pairs))
                .sum();
            (
                (0..t).map(|i| share(mine, t, i, pairs)).collect(),
                offset,
                0.0,
            )
        };
    let processes = count.max(1) as f64;
    let connect_interval_ns = if s.common.connect_rate > 0.0 {
        (1e9 * t as f64 * processes / s.common.connect_rate) as u64
    } else {
        0
    };
    let timeout_ns = (s.common.timeout * 1e9) as u64;
    let (pair_timeout_ns, warmup_ns, max_open) = match &s.sweep {
        Some(c) => (
            (c.pair_timeout * 1e9) as u64,
            (c.warmup * 1e9) as u64,
            (max_open_per_process(c)? / t).max(2),
        ),
        None => (timeout_ns, 0, usize::MAX),
    };
    Ok(Plan {
        kind: s.kind,
        targets: resolved.iter().map(|(_, a)| *a).collect(),
        sources: sources(&s.common),
        per_thread,
        conn_offset,
        pair_run: s.pair_tags.then(|| s.run_id.clone()),
        total_connections: s.connections,
        in_flight: s.in_flight,
        rate: s.rate,
        join_rate_per_thread,
        messages: s.messages,
        timeout_ns,
        pair_timeout_ns,
        warmup_ns,
        max_open,
        max_connecting: (s.common.max_connecting / (t * count.max(1))).max(1),
        connect_interval_ns,
        max_message: (s.message_bytes * 2 + 4096).max(1 << 20),
        frames,
    })
}

/// Local threads or child processes.
enum Fleet {
    Local(Local),
    Kids(Children),
}

impl Fleet {
    fn progress(&self) -> Progress {
        match self {
            Fleet::Local(l) => l.ctl.progress(),
            Fleet::Kids(k) => k.progress(),
        }
    }
    fn ready(&self) -> bool {
        match self {
            Fleet::Local(l) => l.ready(),
            Fleet::Kids(k) => k.ready(),
        }
    }
    fn finished(&self) -> bool {
        match self {
            Fleet::Local(l) => l.finished(),
            Fleet::Kids(k) => k.finished(),
        }
    }
    fn go(&mut self, go: u64, stop: u64) {
        match self {
            Fleet::Local(l) => l.ctl.set_go(go, stop),
            Fleet::Kids(k) => k.go(go, stop),
        }
    }
    fn abort(&mut self) {
        match self {
            Fleet::Local(l) => l.ctl.set_abort(),
            Fleet::Kids(k) => k.abort(),
        }
    }
}

fn server_sample(pid: Option<u32>) -> Option<ProcSample> {
    let pid = pid?;
    match sys::read_proc(pid) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("loadtest: cannot read /proc/{pid}: {e}");
            None
        }
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Top-level run: orchestrate the phases, measure the server, report.
fn run_top(s: Settings) -> Result<bool, String> {
    let nofile = sys::raise_nofile().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let processes = s.common.processes;
    if !matches!(s.kind, Kind::Churn | Kind::Pairing) {
        let per_process = split(s.connections, processes, 0) as u64;
        if per_process + FD_RESERVE > nofile {
            return Err(format!(
                "{per_process} connections per process exceed the open-file limit {nofile}: \
                 use --processes {} or more",
                (s.connections as u64).div_ceil(nofile.saturating_sub(FD_RESERVE).max(1))
            ));
        }
    }
    // Resolve the URLs once here, so that children do not each fail.
    resolve_all(&s)?;
    let pid = s.common.server_pid.first().copied();
    let server_start = server_sample(pid);
    let cpu_start = sys::self_cpu();
    let t_start = now_ns();
    let mut fleet = if processes > 1 {
        // Every child must build the same pair tags.
        let extra = ["--run-id".to_string(), s.run_id.clone()];
        Fleet::Kids(Children::spawn(processes, &extra).map_err(|e| format!("spawn children: {e}"))?)
    } else {
        let plan = build_plan(&s, 0, 1)?;
        Fleet::Local(Local::start(Arc::new(plan)).map_err(|e| format!("threads: {e}"))?)
    };
    let mut rep = report::Reporter::new(s.connections, s.kind == Kind::Churn, s.common.quiet);
    let max_errors = s.common.max_errors;
    let mut aborted = false;
    let check_abort = |fleet: &mut Fleet, p: &Progress, aborted: &mut bool| {
        if let Some(m) = max_errors {
            if p.errors > m && !*aborted {
                *aborted = true;
                eprintln!("loadtest: more than {m} errors, aborting");
                fleet.abort();
            }
        }
    };

    // Setup: connect, handshake, pair.
    while !fleet.ready() && !fleet.finished() {
        std::thread::sleep(TICK);
        let p = fleet.progress();
        rep.tick("setup", &p);
        check_abort(&mut fleet, &p, &mut aborted);
    }
    let t_ready = now_ns();

    // Measured phase.
    let mut server_held = None;
    let (go, stop) = match s.kind {
        Kind::Idle => {
            let hold_until = now_ns() + (s.duration * 1e9) as u64;
            while now_ns() < hold_until && !fleet.finished() {
                std::thread::sleep(TICK);
                let p = fleet.progress();
                rep.tick("hold", &p);
                check_abort(&mut fleet, &p, &mut aborted);
            }
            server_held = server_sample(pid);
            // Tell everyone ahead of time, so that a partner_left caused by another process
            // closing first is recognised as part of the end.
            let stop = now_ns() + 200_000_000;
            (stop, stop)
        }
        _ => {
            let go = now_ns() + 100_000_000;
            (go, go + (s.duration * 1e9) as u64)
        }
    };
    fleet.go(go, stop);
    let (mut server_go, mut server_stop) = (None, None);
    let (mut cpu_go, mut cpu_stop) = (None, None);
    let hard_deadline = stop + 3 * (s.common.timeout * 1e9) as u64 + 10_000_000_000;
    while !fleet.finished() {
        std::thread::sleep(TICK);
        let now = now_ns();
        if now >= go && cpu_go.is_none() {
            cpu_go = Some(sys::self_cpu());
            server_go = server_sample(pid);
        }
        if now >= stop && cpu_stop.is_none() {
            cpu_stop = Some(sys::self_cpu());
            server_stop = server_sample(pid);
        }
        let p = fleet.progress();
        let phase = if now < go {
            "start"
        } else if now < stop {
            "run"
        } else {
            "drain"
        };
        rep.tick(phase, &p);
        check_abort(&mut fleet, &p, &mut aborted);
        if now > hard_deadline && !aborted {
            aborted = true;
            eprintln!("loadtest: the run did not end in time, aborting");
            fleet.abort();
        }
    }
    let t_end = now_ns();
    let server_end = server_sample(pid);
    let cpu_end = sys::self_cpu();
    rep.finish();
    let cpu_go = cpu_go.unwrap_or(cpu_end);
    let cpu_stop = cpu_stop.unwrap_or(cpu_end);
    let server_go = server_go.or(server_end);
    let server_stop = server_stop.or(server_end);

    let merged = match fleet {
        Fleet::Local(l) => {
            let (counts, hists, samples) = l.join();
            Merged {
                counts,
                hists,
                samples,
                cpu_total: cpu_end.minus(&cpu_start),
                cpu_window: cpu_stop.minus(&cpu_go),
                lost_children: 0,
            }
        }
        Fleet::Kids(k) => {
            let mut m = k.collect();
            // The parent's own (small) share.
            m.cpu_total = m.cpu_total.plus(&cpu_end.minus(&cpu_start));
            m.cpu_window = m.cpu_window.plus(&cpu_stop.minus(&cpu_go));
            m
        }
    };
    let summary = summarize(
        &s,
        &merged,
        Times {
            start: t_start,
            ready: t_ready,
            go,
            stop,
            end: t_end,
        },
        ServerSamples {
            pid,
            start: server_start,
            held: server_held,
            go: server_go,
            stop: server_stop,
            end: server_end,
        },
        aborted,
    );
    eprint!("{}", report::human(&summary));
    if let Some(path) = &s.common.json {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        if path.as_os_str() == "-" {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        } else {
            std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if let Some(path) = &s.common.plot {
        let title = format!(
            "roulette {} — {} connections, {} B messages{}",
            s.params_name(),
            s.connections,
            s.message_bytes,
            s.rate
                .map(|r| format!(", {r:.0} msg/s"))
                .unwrap_or_default()
        );
        let mut series = vec![(
            if s.rate.is_some() {
                "corrected (from intended send time)"
            } else {
                "latency"
            },
            &merged.hists.latency,
            "#1f77b4",
        )];
        if s.rate.is_some() {
            series.push((
                "uncorrected (from actual send time)",
                &merged.hists.latency_uncorrected,
                "#ff7f0e",
            ));
        }
        report::plot_svg(path, &title, &series).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(summary.ok)
}

/// Connections one process may hold in a pairing step: `--max-open`, at most the open-file
/// limit minus the reserve.
fn max_open_per_process(c: &sweep::SweepCfg) -> Result<usize, String> {
    let nofile = sys::raise_nofile().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let fit = nofile.saturating_sub(FD_RESERVE) as usize;
    match c.max_open {
        Some(m) if m > fit => Err(format!(
            "--max-open {m} exceeds the open-file limit {nofile} (minus {FD_RESERVE} kept free)"
        )),
        Some(m) => Ok(m),
        None => Ok(fit),
    }
}

/// The settings of step `i` of a sweep: 2 × rate joins/s for warm-up + step seconds, pair tags
/// suffixed by this step's own run id (so that no stranger of a step can match one of
/// another).
fn step_settings(s: &Settings, i: usize, run_id: &str) -> Result<Settings, String> {
    let c = s.sweep.as_ref().ok_or("not a sweep")?;
    let rate = *c
        .rates
        .get(i)
        .ok_or_else(|| format!("step {i} of {} steps", c.rates.len()))?;
    let mut st = s.clone();
    st.join_rate = 2.0 * rate;
    st.duration = c.warmup + c.step_duration;
    st.connections = even_round(st.join_rate * st.duration).max(2);
    st.run_id = run_id.to_string();
    Ok(st)
}

/// Merge what a finished fleet counted; `cpu` are this process's own samples
/// (start, window start, window end, end).
fn collect(fleet: Fleet, cpu: [Cpu; 4]) -> Merged {
    let [start, go, stop, end] = cpu;
    match fleet {
        Fleet::Local(l) => {
            let (counts, hists, samples) = l.join();
            Merged {
                counts,
                hists,
                samples,
                cpu_total: end.minus(&start),
                cpu_window: stop.minus(&go),
                lost_children: 0,
            }
        }
        Fleet::Kids(k) => {
            let mut m = k.collect();
            // The parent's own (small) share.
            m.cpu_total = m.cpu_total.plus(&end.minus(&start));
            m.cpu_window = m.cpu_window.plus(&stop.minus(&go));
            m
        }
    }
}

/// `loadtest pairing`: run the steps in order, judge each, find the knee, report.
fn run_pairing(s: Settings) -> Result<bool, String> {
    let c = s.sweep.clone().ok_or("not a sweep")?;
    sys::raise_nofile().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    max_open_per_process(&c)?;
    resolve_all(&s)?;
    for pid in s.common.server_pid.iter().chain(c.redis_pid.iter()) {
        sys::read_proc(*pid).map_err(|e| format!("cannot read /proc/{pid}: {e}"))?;
    }
    let t_start = now_ns();
    let mut rng = Rng::new(t_start ^ u64::from(std::process::id()).rotate_left(24));
    let mut steps: Vec<sweep::StepRecord> = Vec::new();
    for (i, &rate) in c.rates.iter().enumerate() {
        let run_id = targets::run_id(rng.next_u64());
        let st = step_settings(&s, i, &run_id)?;
        if !s.common.quiet {
            eprintln!(
                "step {}/{}: offering {rate} pairings/s ({} strangers/s) for {} s + {} s warm-up",
                i + 1,
                c.rates.len(),
                2.0 * rate,
                c.step_duration,
                c.warmup
            );
        }
        let mut rec = run_step(&st, &c, i, rate)?;
        rec.judge(&c.limits);
        eprintln!("{}", sweep::step_line(&rec, c.rates.len()));
        let stop = !rec.sustained && !c.keep_going;
        steps.push(rec);
        if stop {
            break;
        }
    }
    let knee = sweep::knee(&steps);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let summary = sweep::SweepSummary {
        scenario: "pairing",
        ok: !steps.is_empty() && steps.iter().all(|r| r.clean),
        url: s.urls.join(","),
        urls: s.urls.clone(),
        pair_tags: s.pair_tags,
        params: s.params.clone(),
        processes: s.common.processes,
        threads_per_process: threads(&s.common),
        sources: sources(&s.common),
        date_utc: report::utc(unix),
        limits: c.limits,
        knee_definition: sweep::knee_definition(&c.limits),
        knee: knee.and_then(|k| steps.get(k)).map(sweep::Knee::of),
        not_run: c.rates.iter().skip(steps.len()).copied().collect(),
        total_s: secs(now_ns().saturating_sub(t_start)),
        steps,
    };
    eprint!("{}", sweep::human(&summary));
    if let Some(path) = &s.common.json {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        if path.as_os_str() == "-" {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        } else {
            std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if let Some(path) = &s.common.plot {
        let title = format!(
            "roulette pairing capacity — {} node{}{}, {} s steps",
            s.urls.len(),
            if s.urls.len() == 1 { "" } else { "s" },
            if s.pair_tags {
                ", every pair by its own tag"
            } else {
                ""
            },
            c.step_duration
        );
        let svg = sweep::sweep_svg(&title, &summary.steps, knee, c.limits.p99_limit_us);
        std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(summary.ok)
}

/// CPU of each process of `pids` now (None where /proc cannot be read).
fn cpu_of(pids: &[u32]) -> Vec<Option<Cpu>> {
    pids.iter()
        .map(|&p| sys::read_proc(p).ok().map(|s| s.cpu))
        .collect()
}

/// One step of the sweep: start the fleet, give the common start, sample CPU at the edges of
/// the measured window, wait for every stranger to finish, and turn the counts into a record.
fn run_step(
    st: &Settings,
    c: &sweep::SweepCfg,
    index: usize,
    rate: f64,
) -> Result<sweep::StepRecord, String> {
    let processes = st.common.processes;
    let cpu_start = sys::self_cpu();
    let mut fleet = if processes > 1 {
        let extra = [
            "--run-id".to_string(),
            st.run_id.clone(),
            "--step-index".to_string(),
            index.to_string(),
        ];
        Fleet::Kids(Children::spawn(processes, &extra).map_err(|e| format!("spawn children: {e}"))?)
    } else {
        let plan = build_plan(st, 0, 1)?;
        Fleet::Local(Local::start(Arc::new(plan)).map_err(|e| format!("threads: {e}"))?)
    };
    let mut rep = report::Reporter::new(st.connections, true, st.common.quiet);
    while !fleet.ready() && !fleet.finished() {
        std::thread::sleep(TICK);
        rep.tick("setup", &fleet.progress());
    }
    let go = now_ns() + 100_000_000;
    let measure = go + (c.warmup * 1e9) as u64;
    let stop = measure + (c.step_duration * 1e9) as u64;
    fleet.go(go, stop);
    // Server(s) first, then Redis: one list, split again below.
    let mut pids = st.common.server_pid.clone();
    pids.extend(c.redis_pid);
    let (mut at_measure, mut at_stop) = (None, None);
    let hard_deadline =
        stop + ((c.pair_timeout + 3.0 * st.common.timeout) * 1e9) as u64 + 10_000_000_000;
    let mut aborted = false;
    while !fleet.finished() {
        let now = now_ns();
        // Wake on the window's edges rather than up to a tick after them.
        let next = [measure, stop]
            .into_iter()
            .filter(|&t| t > now)
            .min()
            .map_or(TICK, |t| Duration::from_nanos(t - now).min(TICK));
        std::thread::sleep(next);
        let now = now_ns();
        if now >= measure && at_measure.is_none() {
            at_measure = Some((sys::self_cpu(), cpu_of(&pids)));
        }
        if now >= stop && at_stop.is_none() {
            at_stop = Some((sys::self_cpu(), cpu_of(&pids)));
        }
        let phase = if now < measure {
            "warmup"
        } else if now < stop {
            "run"
        } else {
            "drain"
        };
        rep.tick(phase, &fleet.progress());
        if now > hard_deadline && !aborted {
            aborted = true;
            eprintln!("loadtest: step {} did not end in time, aborting", index + 1);
            fleet.abort();
        }
    }
    rep.finish();
    let cpu_end = sys::self_cpu();
    let end_sample = || (cpu_end, cpu_of(&pids));
    let (cpu_a, procs_a) = at_measure.unwrap_or_else(end_sample);
    let (cpu_b, procs_b) = at_stop.unwrap_or_else(end_sample);
    let merged = collect(fleet, [cpu_start, cpu_a, cpu_b, cpu_end]);
    let window_s = c.step_duration;
    let m = &merged;
    let cnt = &m.counts;
    let achieved_pairings = cnt.window_paired as f64 / 2.0;
    let per_pairing = |cpu: f64| (achieved_pairings > 0.0).then(|| cpu * 1e6 / achieved_pairings);
    let used: Vec<Option<Cpu>> = procs_a
        .iter()
        .zip(procs_b.iter())
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => Some(b.minus(a)),
            _ => None,
        })
        .collect();
    let pid_cpu = |pid: u32, cpu: Option<Cpu>| sweep::PidCpu {
        pid,
        cpu,
        per_pairing_us: cpu.and_then(|c| per_pairing(c.total())),
    };
    let n_servers = st.common.server_pid.len();
    let servers: Vec<sweep::PidCpu> = st
        .common
        .server_pid
        .iter()
        .zip(used.iter())
        .map(|(&p, &u)| pid_cpu(p, u))
        .collect();
    let server_total_s =
        (!servers.is_empty() && servers.iter().all(|x| x.cpu.is_some())).then(|| {
            servers
                .iter()
                .filter_map(|x| x.cpu)
                .map(|c| c.total())
                .sum::<f64>()
        });
    let redis = c
        .redis_pid
        .map(|p| pid_cpu(p, used.get(n_servers).copied().flatten()));
    let tags = st.pair_tags;
    Ok(sweep::StepRecord {
        index,
        offered_per_s: rate,
        offered_scheduled_per_s: cnt.window_joins as f64 / 2.0 / window_s,
        achieved_per_s: achieved_pairings / window_s,
        ratio: achieved_pairings / window_s / rate,
        warmup_s: c.warmup,
        window_s,
        strangers: sweep::Strangers {
            joined: cnt.opened,
            joined_in_window: cnt.window_joins,
            paired: cnt.paired,
            proved: cnt.sessions,
            failed: cnt.failed,
            closed_clean: cnt.closed_clean,
            peak_open: cnt.peak_open,
            max_join_lag_ms: cnt.max_join_lag_ns as f64 / 1e6,
        },
        pairs: tags.then_some(cnt.pairs),
        pairs_cross_url: tags.then_some(cnt.pairs_cross_url),
        time_to_pair: m.hists.pair_wait.summary(),
        connect_latency: m.hists.connect.summary(),
        message_latency: m.hists.latency.summary(),
        errors_total: cnt.errors_total(),
        errors: cnt.errors_map(),
        error_samples: m.samples.clone(),
        cpu: sweep::StepCpu {
            server_per_pairing_us: server_total_s.and_then(per_pairing),
            server_total_s,
            servers,
            redis,
            loadtest: m.cpu_window,
            loadtest_per_pairing_us: per_pairing(m.cpu_window.total()),
        },
        lost_children: m.lost_children,
        aborted,
        clean: false,
        sustained: false,
        why_not: Vec::new(),
    })
}

impl Settings {
    fn params_name(&self) -> &'static str {
        match self.kind {
            Kind::Idle => "idle",
            Kind::Relay => "relay",
            Kind::Churn => "churn",
            Kind::Echo => "echo",
            Kind::Pairing => "pairing",
        }
    }
}

struct Times {
    start: u64,
    ready: u64,
    go: u64,
    stop: u64,
    end: u64,
}

struct ServerSamples {
    pid: Option<u32>,
    start: Option<ProcSample>,
    held: Option<ProcSample>,
    go: Option<ProcSample>,
    stop: Option<ProcSample>,
    end: Option<ProcSample>,
}

fn per_msg_us(cpu: &Cpu, msgs: u64) -> Option<f64> {
    (msgs > 0).then(|| cpu.total() * 1e6 / msgs as f64)
}

fn summarize(s: &Settings, m: &Merged, t: Times, sv: ServerSamples, aborted: bool) -> Summary {
    let c = &m.counts;
    let window_s = secs(t.stop.saturating_sub(t.go));
    let msgs_window = c.window_received;
    let setup_ns = c.last_setup_ns.saturating_sub(c.first_connect_ns);
    let connect_rate = (setup_ns > 0).then(|| c.connected as f64 / secs(setup_ns));
    let server = sv.pid.map(|pid| {
        let window_cpu = match (sv.go, sv.stop) {
            (Some(a), Some(b)) => b.cpu.minus(&a.cpu),
            _ => Cpu::default(),
        };
        let rss_per_conn_bytes = match (s.kind, sv.start, sv.held) {
            (Kind::Idle, Some(a), Some(b)) if c.paired > 0 => {
                Some((b.rss_kb as f64 - a.rss_kb as f64) * 1024.0 / c.paired as f64)
            }
            _ => None,
        };
        ServerSummary {
            pid,
            start: sv.start,
            held: sv.held,
            go: sv.go,
            stop: sv.stop,
            end: sv.end,
            window_cpu,
            cpu_per_msg_us: if s.kind == Kind::Idle {
                None
            } else {
                per_msg_us(&window_cpu, msgs_window)
            },
            rss_per_conn_bytes,
        }
    });
    let bad = c.lost + c.duplicated + c.out_of_order + c.corrupt;
    let errors_ok = c.errors_total() <= s.common.max_errors.unwrap_or(0);
    let set_up = if s.kind == Kind::Echo {
        c.connected
    } else {
        c.paired
    };
    let ok = errors_ok
        && bad == 0
        && !aborted
        && m.lost_children == 0
        && c.opened > 0
        && set_up >= c.opened.min(s.connections as u64);
    let (per_sec, sessions_per_sec) = match s.kind {
        Kind::Idle => (None, None),
        Kind::Churn => {
            let d = secs(t.end.saturating_sub(t.go)).max(1e-9);
            (Some(c.received as f64 / d), Some(c.sessions as f64 / d))
        }
        _ => (
            (window_s > 0.0).then(|| msgs_window as f64 / window_s),
            None,
        ),
    };
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Summary {
        scenario: s.params_name(),
        ok,
        url: s.urls.join(","),
        urls: s.urls.clone(),
        pair_tags: s.pair_tags,
        pairs: s.pair_tags.then_some(c.pairs),
        pairs_cross_url: s.pair_tags.then_some(c.pairs_cross_url),
        params: s.params.clone(),
        processes: s.common.processes,
        threads_per_process: threads(&s.common),
        sources: sources(&s.common),
        date_utc: report::utc(unix),
        setup_s: secs(t.ready.saturating_sub(t.start)),
        measured_s: window_s,
        total_s: secs(t.end.saturating_sub(t.start)),
        connections: ConnSummary {
            target: s.connections,
            opened: c.opened,
            connected: c.connected,
            paired: c.paired,
            failed: c.failed,
            closed_clean: c.closed_clean,
            connect_rate_per_s: connect_rate,
            connected_per_url: {
                let mut v = c.connected_per_url.clone();
                v.resize(s.urls.len(), 0);
                v
            },
        },
        messages: MsgSummary {
            sent: c.sent,
            received: c.received,
            lost: c.lost,
            duplicated: c.duplicated,
            out_of_order: c.out_of_order,
            corrupt: c.corrupt,
            window_sent: c.window_sent,
            window_received: c.window_received,
            per_sec,
        },
        latency_kind: if s.kind == Kind::Echo {
            "round trip"
        } else {
            "one way"
        },
        latency: m.hists.latency.summary(),
        latency_uncorrected: s.rate.map(|_| m.hists.latency_uncorrected.summary()),
        connect_latency: m.hists.connect.summary(),
        pair_wait: m.hists.pair_wait.summary(),
        sessions: c.sessions,
        sessions_per_sec,
        pings_answered: c.pings,
        errors_total: c.errors_total(),
        errors: c.errors_map(),
        error_samples: m.samples.clone(),
        lost_children: m.lost_children,
        aborted,
        loadtest_cpu: CpuSummary {
            total: m.cpu_total,
            window: m.cpu_window,
            per_msg_us: if s.kind == Kind::Idle {
                None
            } else {
                per_msg_us(&m.cpu_window, msgs_window)
            },
        },
        server,
    }
}

/// Child process: run this process's share and talk to the parent over stdin/stdout.
fn run_child(s: Settings, index: usize, count: usize) -> Result<bool, String> {
    sys::raise_nofile().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let plan = build_plan(&s, index, count)?;
    let cpu_start = sys::self_cpu();
    let local = Local::start(Arc::new(plan)).map_err(|e| format!("threads: {e}"))?;
    fleet::child_commands(local.ctl.clone());
    let mut out = std::io::stdout();
    let mut said_ready = false;
    let mut last_progress = 0u64;
    let (mut cpu_go, mut cpu_stop) = (None, None);
    // The CPU window: [go, stop), or for a pairing step its measured part after the warm-up.
    let warmup_ns = s.sweep.as_ref().map_or(0, |c| (c.warmup * 1e9) as u64);
    while !local.finished() {
        std::thread::sleep(TICK);
        let now = now_ns();
        if !said_ready && local.ready() {
            said_ready = true;
            let _ = writeln!(out, "READY");
            let _ = out.flush();
        }
        let go = local.ctl.go_ns.load(std::sync::atomic::Ordering::Relaxed);
        let go = if go == 0 { 0 } else { go + warmup_ns };
        let stop = local.ctl.stop_ns.load(std::sync::atomic::Ordering::Relaxed);
        if go != 0 && now >= go && cpu_go.is_none() {
            cpu_go = Some(sys::self_cpu());
        }
        if go != 0 && now >= stop && cpu_stop.is_none() {
            cpu_stop = Some(sys::self_cpu());
        }
        if now >= last_progress + 250_000_000 {
            last_progress = now;
            let p = serde_json::to_string(&local.ctl.progress()).unwrap_or_default();
            let _ = writeln!(out, "PROGRESS {p}");
            let _ = out.flush();
        }
    }
    let cpu_end = sys::self_cpu();
    let (counts, hists, samples) = local.join();
    let r = ProcResult {
        counts,
        hists: hists.to_raw(),
        samples,
        cpu_total: cpu_end.minus(&cpu_start),
        cpu_window: cpu_stop
            .unwrap_or(cpu_end)
            .minus(&cpu_go.unwrap_or(cpu_end)),
    };
    let j = serde_json::to_string(&r).map_err(|e| e.to_string())?;
    let _ = writeln!(out, "RESULT {j}");
    let _ = out.flush();
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let s = match settings(&cli.cmd) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match (s.common.child_index, s.common.child_count, &s.sweep) {
        (Some(i), Some(n), Some(c)) => {
            let step = c.step_index.unwrap_or(0);
            let id = s.run_id.clone();
            step_settings(&s, step, &id).and_then(|st| run_child(st, i, n))
        }
        (Some(i), Some(n), None) => run_child(s, i, n),
        (_, _, Some(_)) => run_pairing(s),
        _ => run_top(s),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(
            (0..3).map(|i| split(10, 3, i)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!((0..3).map(|i| split(10, 3, i)).sum::<usize>(), 10);
        assert_eq!(even_round(37.4), 38);
        assert_eq!(even_round(36.9), 36);
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "relay",
            "-c",
            "11",
            "--rate",
            "1000",
            "--sources",
            "3",
        ])
        .expect("parses");
        let s = settings(&cli.cmd).expect("valid");
        assert_eq!(s.connections, 12);
        assert_eq!(s.kind, Kind::Relay);
        assert_eq!(sources(&s.common).len(), 3);
        assert_eq!(s.urls, ["ws://127.0.0.1:8080/ws"]);
        assert!(!s.pair_tags);
        let cli = Cli::try_parse_from(["loadtest", "echo"]).expect("parses");
        assert_eq!(
            settings(&cli.cmd).expect("valid").urls,
            ["ws://127.0.0.1:8080/echo"]
        );
        let cli =
            Cli::try_parse_from(["loadtest", "churn", "--rate", "100", "-d", "4"]).expect("parses");
        assert_eq!(settings(&cli.cmd).expect("valid").connections, 400);
        let cli =
            Cli::try_parse_from(["loadtest", "relay", "--message-bytes", "10"]).expect("parses");
        assert!(settings(&cli.cmd).is_err());
    }

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        settings(&cli.cmd)
    }

    #[test]
    fn several_urls() {
        let (a, b, c) = ("ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws", "ws://h:3/ws");
        // Comma-separated, repeated, and both.
        let s = parse(&["loadtest", "relay", "--url", &format!("{a},{b}")]).expect("valid");
        assert_eq!(s.urls, [a, b]);
        let s = parse(&["loadtest", "idle", "--url", a, "--url", b]).expect("valid");
        assert_eq!(s.urls, [a, b]);
        let s = parse(&[
            "loadtest",
            "churn",
            "--url",
            &format!("{a},{b}"),
            "--url",
            c,
        ])
        .expect("valid");
        assert_eq!(s.urls, [a, b, c]);
        let s = parse(&["loadtest", "relay", "--url", a]).expect("valid");
        assert_eq!(s.urls, [a]);
        // Endpoints must match the scenario and each other.
        let e =
            parse(&["loadtest", "relay", "--url", "ws://h:1/ws,ws://h:2/echo"]).expect_err("mixed");
        assert!(e.contains("same endpoint"), "{e}");
        let e = parse(&["loadtest", "echo", "--url", a]).expect_err("chat url for echo");
        assert!(e.contains("/echo endpoint"), "{e}");
        let e = parse(&["loadtest", "idle", "--url", "ws://h:1/ws,"]).expect_err("stray comma");
        assert!(e.contains("empty URL"), "{e}");
        let e = parse(&["loadtest", "idle", "--url", "wss://h/ws"]).expect_err("tls");
        assert!(e.contains("wss://"), "{e}");
        // --pair-tags exists for idle, relay and churn, not echo.
        assert!(parse(&["loadtest", "echo", "--pair-tags"]).is_err());
        let s = parse(&["loadtest", "idle", "-c", "7", "--pair-tags"]).expect("valid");
        assert!(s.pair_tags);
        assert_eq!(s.connections, 8, "idle with pair tags is made even");
        assert_eq!(
            parse(&["loadtest", "idle", "-c", "7"])
                .expect("ok")
                .connections,
            7
        );
        assert_eq!(s.run_id.len(), 8);
        let s =
            parse(&["loadtest", "relay", "--pair-tags", "--run-id", "0badcafe"]).expect("valid");
        assert_eq!(s.run_id, "0badcafe");
    }

    #[test]
    fn pair_aligned_shares() {
        // Without pair tags: the plain split.
        assert_eq!(
            (0..3).map(|i| share(10, 3, i, false)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        // With pair tags: whole pairs per part, so that partners are opened together.
        for (total, parts) in [(10, 3), (2000, 7), (8, 8), (6, 4), (7, 2)] {
            let v: Vec<usize> = (0..parts).map(|i| share(total, parts, i, true)).collect();
            assert_eq!(v.iter().sum::<usize>(), total, "{total}/{parts}: {v:?}");
            let (last, rest) = v.split_last().expect("parts");
            assert!(rest.iter().all(|n| n % 2 == 0), "{total}/{parts}: {v:?}");
            assert_eq!(last % 2, total % 2);
        }
        assert_eq!(
            (0..3).map(|i| share(10, 3, i, true)).collect::<Vec<_>>(),
            [4, 4, 2]
        );
    }

    #[test]
    fn pairing_sweep_settings() {
        let s = parse(&["loadtest", "pairing"]).expect("defaults");
        let c = s.sweep.clone().expect("a sweep");
        assert_eq!(c.rates, [100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0]);
        assert_eq!(s.kind, Kind::Pairing);
        assert_eq!(c.limits.p99_limit_us, 1_000_000);
        assert_eq!(c.limits.min_ratio, 0.95);
        let s = parse(&[
            "loadtest",
            "pairing",
            "--rates",
            "50,150",
            "--warmup",
            "0.5",
            "--step-duration",
            "2",
            "--server-pid",
            "11,12",
            "--server-pid",
            "13",
            "--redis-pid",
            "14",
            "--pair-tags",
            "--p99-limit",
            "0.25",
        ])
        .expect("valid");
        let c = s.sweep.clone().expect("a sweep");
        assert_eq!(c.rates, [50.0, 150.0]);
        assert_eq!(s.common.server_pid, [11, 12, 13]);
        assert_eq!(c.redis_pid, Some(14));
        assert_eq!(c.limits.p99_limit_us, 250_000);
        assert!(s.pair_tags);
        // Step 1: 2 x 150 strangers/s for 2.5 s, its own tag suffix.
        let st = step_settings(&s, 1, "feedf00d").expect("step 1");
        assert_eq!(st.join_rate, 300.0);
        assert_eq!(st.connections, 750);
        assert_eq!(st.run_id, "feedf00d");
        assert!(step_settings(&s, 2, "x").is_err(), "no third step");
        let plan = build_plan(&st, 0, 1).expect("plan");
        assert_eq!(plan.kind, Kind::Pairing);
        assert_eq!(plan.warmup_ns, 500_000_000);
        assert_eq!(plan.pair_timeout_ns, 5_000_000_000);
        assert_eq!(plan.pair_run.as_deref(), Some("feedf00d"));
        assert!(plan.max_open >= 2 && plan.max_open < usize::MAX);
        assert!(plan.per_thread.iter().all(|n| n % 2 == 0));
        // Usage errors.
        for bad in [
            &["loadtest", "pairing", "--rates", "200,100"][..],
            &["loadtest", "pairing", "--rates", "100", "--from", "10"],
            &["loadtest", "pairing", "--from", "100", "--to", "50"],
            &["loadtest", "pairing", "--min-ratio", "1.5"],
            &["loadtest", "pairing", "--step-duration", "0"],
            &["loadtest", "pairing", "--max-open", "1"],
            &["loadtest", "pairing", "--max-open", "100000000"],
            &["loadtest", "relay", "--server-pid", "1,2"],
        ] {
            let r = parse(bad).and_then(|s| match &s.sweep {
                Some(c) => max_open_per_process(c).map(|_| s),
                None => Ok(s),
            });
            assert!(r.is_err(), "{bad:?} accepted");
        }
        let s = parse(&["loadtest", "relay", "--server-pid", "7"]).expect("one pid");
        assert_eq!(s.common.server_pid, [7]);
    }

    /// The global client indices of a plan: each process's offset plus its threads' shares.
    fn plan_indices(s: &Settings, processes: usize) -> Vec<Vec<Vec<usize>>> {
        (0..processes)
            .map(|p| {
                let plan = build_plan(s, p, processes).expect("plan");
                let mut next = plan.conn_offset;
                plan.per_thread
                    .iter()
                    .map(|&n| {
                        let v = (next..next + n).collect();
                        next += n;
                        v
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn plans_keep_partners_together() {
        let s = parse(&[
            "loadtest",
            "relay",
            "-c",
            "30",
            "--threads",
            "4",
            "--pair-tags",
            "--url",
            "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws",
        ])
        .expect("valid");
        let plans = plan_indices(&s, 3);
        let all: Vec<usize> = plans.iter().flatten().flatten().copied().collect();
        assert_eq!(
            all,
            (0..30).collect::<Vec<_>>(),
            "every index once, in order"
        );
        for thread in plans.iter().flatten() {
            // A thread holds whole pairs: client 2k with 2k+1.
            assert!(thread.len() % 2 == 0 && thread.first().is_none_or(|i| i % 2 == 0));
        }
        let plan = build_plan(&s, 0, 3).expect("plan");
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(plan.pair_run.as_deref(), Some(s.run_id.as_str()));
        assert_eq!(plan.frames.requests.len(), 2);
        // Churn: every thread's joins are an even number, so pairs stay in one thread.
        let s = parse(&[
            "loadtest",
            "churn",
            "--rate",
            "30",
            "-d",
            "1",
            "--threads",
            "3",
            "--pair-tags",
        ])
        .expect("valid");
        let plans = plan_indices(&s, 2);
        for thread in plans.iter().flatten() {
            assert!(thread.len() % 2 == 0 && thread.first().is_none_or(|i| i % 2 == 0));
        }
        // No pair tags: no run in the plan.
        let s = parse(&["loadtest", "relay", "--url", "ws://127.0.0.1:1/ws"]).expect("valid");
        assert!(build_plan(&s, 0, 1).expect("plan").pair_run.is_none());
    }
}
