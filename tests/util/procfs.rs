//! The server process seen from /proc: open descriptors and memory.

use std::time::{Duration, Instant};

/// Open file descriptors of process `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
        .count()
}

/// What the open descriptors of `pid` are, by kind (`socket`, `anon_inode:[eventpoll]`, …):
/// for failure messages.
pub fn fd_summary(pid: i32) -> String {
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            let target = std::fs::read_link(e.path())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into());
            let kind = match target.split_once(":[") {
                Some((k, _)) if k != "anon_inode" => k.to_string(),
                _ => target,
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    format!("{kinds:?}")
}

/// Wait until process `pid` has exactly `want` open descriptors; returns how long it took.
pub fn wait_fd_count(pid: i32, want: usize, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let n = fd_count(pid);
        if n == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= within {
            return Err(format!(
                "the server has {n} open fds after {within:?}, expected {want}: {}",
                fd_summary(pid)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, `VmPeak`, `VmSize`), in KiB.
pub fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
