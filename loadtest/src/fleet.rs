//! The clients of a run: threads of this process ([`Local`]) or child processes
//! ([`Children`], `--processes N`), driven through the same small interface.
//!
//! Child protocol (one line each, over the child's stdin/stdout):
//! - child → parent: `PROGRESS <json>` every 250 ms, `READY` once its setup is complete,
//!   `RESULT <json>` at the end ([`ProcResult`]: counters, raw histogram buckets, CPU time).
//! - parent → child: `GO <go_ns> <stop_ns>` (CLOCK_MONOTONIC, the same clock in every process,
//!   so that all children start and stop at the same instant) and `ABORT`. EOF on stdin aborts.
use crate::client::{Control, Plan, Progress, ThreadResult, Worker};
use crate::stats::{Counts, Hists, RawHists};
use crate::sys::{self, Cpu};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What one process reports (and what the parent merges).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProcResult {
    pub counts: Counts,
    pub hists: RawHists,
    pub samples: Vec<String>,
    /// CPU time of the whole process, and inside the measured window [go, stop).
    pub cpu_total: Cpu,
    pub cpu_window: Cpu,
}

/// Merged results of every process.
#[derive(Debug, Default)]
pub struct Merged {
    pub counts: Counts,
    pub hists: Hists,
    pub samples: Vec<String>,
    pub cpu_total: Cpu,
    pub cpu_window: Cpu,
    /// Children that exited without a result.
    pub lost_children: u64,
}

impl Merged {
    pub fn add(&mut self, r: &ProcResult) {
        self.counts.add(&r.counts);
        self.hists.add(&Hists::from_raw(&r.hists));
        for s in &r.samples {
            if self.samples.len() < 20 {
                self.samples.push(s.clone());
            }
        }
        self.cpu_total = self.cpu_total.plus(&r.cpu_total);
        self.cpu_window = self.cpu_window.plus(&r.cpu_window);
    }
}

/// Threads of this process.
pub struct Local {
    pub ctl: Arc<Control>,
    threads: usize,
    handles: Vec<JoinHandle<ThreadResult>>,
}

impl Local {
    pub fn start(plan: Arc<Plan>) -> io::Result<Local> {
        let threads = plan.per_thread.len();
        let ctl = Arc::new(Control::new(threads));
        let mut handles = Vec::with_capacity(threads);
        let seed = sys::now_ns() ^ (u64::from(std::process::id()) << 32);
        for t in 0..threads {
            let plan = plan.clone();
            let ctl = ctl.clone();
            let h = std::thread::Builder::new()
                .name(format!("client-{t}"))
                .spawn(move || {
                    let seed =
                        seed.wrapping_add((t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    match Worker::new(&plan, &ctl, t, seed) {
                        Ok(w) => w.run(),
                        Err(e) => {
                            ctl.ready.fetch_add(1, Relaxed);
                            ctl.finished.fetch_add(1, Relaxed);
                            ThreadResult {
                                samples: vec![format!("thread {t} could not start: {e}")],
                                ..ThreadResult::default()
                            }
                        }
                    }
                })?;
            handles.push(h);
        }
        Ok(Local {
            ctl,
            threads,
            handles,
        })
    }
    pub fn ready(&self) -> bool {
        self.ctl.ready.load(Relaxed) >= self.threads
    }
    pub fn finished(&self) -> bool {
        self.ctl.finished.load(Relaxed) >= self.threads
    }
    /// Join the threads and merge what they counted.
    pub fn join(self) -> (Counts, Hists, Vec<String>) {
        let mut counts = Counts::default();
        let mut hists = Hists::default();
        let mut samples = Vec::new();
        for h in self.handles {
            match h.join() {
                Ok(r) => {
                    counts.add(&r.counts);
                    hists.add(&r.hists);
                    samples.extend(r.samples);
                }
                Err(_) => samples.push("a client thread panicked".into()),
            }
        }
        (counts, hists, samples)
    }
}

#[derive(Debug, Default)]
struct Kid {
    progress: Progress,
    ready: bool,
    result: Option<ProcResult>,
    gone: bool,
}

/// Child processes (`--processes N`).
pub struct Children {
    kids: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    state: Arc<Mutex<Vec<Kid>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Children {
    /// Re-execute this binary `n` times with the same arguments plus `extra` (settings the
    /// parent chose, such as the pair-tag run id) plus the child flags.
    pub fn spawn(n: usize, extra: &[String]) -> io::Result<Children> {
        let exe = std::env::current_exe()?;
        let base: Vec<OsString> = std::env::args_os().skip(1).collect();
        let state = Arc::new(Mutex::new(
            (0..n).map(|_| Kid::default()).collect::<Vec<_>>(),
        ));
        let mut kids = Vec::new();
        let mut stdins = Vec::new();
        let mut readers = Vec::new();
        for i in 0..n {
            let mut cmd = Command::new(&exe);
            cmd.args(&base)
                .args(extra)
                .arg("--child-index")
                .arg(i.to_string())
                .arg("--child-count")
                .arg(n.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = cmd.spawn()?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("child without stdout"))?;
            stdins.push(child.stdin.take());
            kids.push(child);
            let state = state.clone();
            readers.push(std::thread::spawn(move || read_child(i, stdout, state)));
        }
        Ok(Children {
            kids,
            stdins,
            state,
            readers,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&[Kid]) -> T) -> T {
        match self.state.lock() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }

    pub fn progress(&self) -> Progress {
        self.with(|k| {
            let mut p = Progress::default();
            for kid in k {
                p.add(&kid.progress);
            }
            p
        })
    }
    pub fn ready(&self) -> bool {
        self.with(|k| k.iter().all(|kid| kid.ready || kid.gone))
    }
    pub fn finished(&self) -> bool {
        self.with(|k| k.iter().all(|kid| kid.gone))
    }
    fn send(&mut self, line: &str) {
        for s in self.stdins.iter_mut() {
            if let Some(w) = s {
                if w.write_all(line.as_bytes())
                    .and_then(|_| w.flush())
                    .is_err()
                {
                    *s = None;
                }
            }
        }
    }
    pub fn go(&mut self, go_ns: u64, stop_ns: u64) {
        self.send(&format!("GO {go_ns} {stop_ns}\n"));
    }
    pub fn abort(&mut self) {
        self.send("ABORT\n");
    }
    /// Wait for every child and merge their results.
    pub fn collect(mut self) -> Merged {
        self.stdins.clear();
        let mut statuses = Vec::new();
        for k in self.kids.iter_mut() {
            statuses.push(k.wait().ok());
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let mut merged = Merged::default();
        let kids = match Arc::try_unwrap(self.state) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(_) => Vec::new(),
        };
        for (i, kid) in kids.into_iter().enumerate() {
            match kid.result {
                Some(r) => merged.add(&r),
                None => {
                    merged.lost_children += 1;
                    let st = statuses.get(i).copied().flatten();
                    merged
                        .samples
                        .push(format!("child {i} exited without a result ({st:?})"));
                }
            }
        }
        merged
    }
}

fn read_child(i: usize, stdout: std::process::ChildStdout, state: Arc<Mutex<Vec<Kid>>>) {
    let update = |f: &mut dyn FnMut(&mut Kid)| {
        let mut g = match state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(k) = g.get_mut(i) {
            f(k);
        }
    };
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(j) = line.strip_prefix("PROGRESS ") {
            if let Ok(p) = serde_json::from_str::<Progress>(j) {
                update(&mut |k| k.progress = p);
            }
        } else if line == "READY" {
            update(&mut |k| k.ready = true);
        } else if let Some(j) = line.strip_prefix("RESULT ") {
            match serde_json::from_str::<ProcResult>(j) {
                Ok(r) => {
                    let mut r = Some(r);
                    update(&mut |k| k.result = r.take());
                }
                Err(e) => eprintln!("loadtest: bad result from child {i}: {e}"),
            }
        }
    }
    update(&mut |k| k.gone = true);
}

/// Child side: follow the parent's commands on stdin.
pub fn child_commands(ctl: Arc<Control>) {
    std::thread::spawn(move || {
        let stdin = io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let mut it = line.split_whitespace();
            match it.next() {
                Some("GO") => {
                    let go = it.next().and_then(|v| v.parse().ok());
                    let stop = it.next().and_then(|v| v.parse().ok());
                    if let (Some(go), Some(stop)) = (go, stop) {
                        ctl.set_go(go, stop);
                    }
                }
                Some("ABORT") => ctl.set_abort(),
                _ => {}
            }
        }
        // The parent is gone: stop (harmless if the run is already over).
        ctl.set_abort();
    });
}
