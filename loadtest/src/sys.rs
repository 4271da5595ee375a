//! Operating-system helpers: the shared monotonic clock, the fd limit, CPU time of this
//! process (getrusage) and of the server (/proc/PID/stat, /proc/PID/status), and the timerfd
//! the client loops wake up by.
use serde::{Deserialize, Serialize};
use std::io;

/// Nanoseconds of `CLOCK_MONOTONIC`. The clock is system-wide, so a timestamp taken in one
/// load-generator process can be compared with one taken in another (a pair of clients may
/// live in two processes with `--processes`).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit struct for the kernel to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit struct; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(want.rlim_cur);
    }
    Ok(lim.rlim_cur)
}

/// User and system CPU time in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Cpu {
    pub user_s: f64,
    pub system_s: f64,
}

impl Cpu {
    pub fn total(&self) -> f64 {
        self.user_s + self.system_s
    }
    pub fn minus(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            system_s: (self.system_s - earlier.system_s).max(0.0),
        }
    }
    pub fn plus(&self, other: &Cpu) -> Cpu {
        Cpu {
            user_s: self.user_s + other.user_s,
            system_s: self.system_s + other.system_s,
        }
    }
}

/// CPU time of this whole process (all threads) from `getrusage(RUSAGE_SELF)`.
pub fn self_cpu() -> Cpu {
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Cpu::default();
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cpu {
        user_s: tv(ru.ru_utime),
        system_s: tv(ru.ru_stime),
    }
}

/// One look at another process (the server) through /proc.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcSample {
    /// `VmRSS` from /proc/PID/status, in KiB.
    pub rss_kb: u64,
    /// utime and stime from /proc/PID/stat.
    pub cpu: Cpu,
    /// `Threads` from /proc/PID/status.
    pub threads: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Read the RSS and CPU time of process `pid`.
pub fn read_proc(pid: u32) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(ProcSample {
        rss_kb: status_field_kb(&status, "VmRSS:").unwrap_or(0),
        threads: status_field_kb(&status, "Threads:").unwrap_or(0),
        cpu: parse_stat_cpu(&stat, clock_ticks())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/PID/stat"))?,
    })
}

/// The first number after `key` in /proc/PID/status (`VmRSS:   1234 kB` → 1234).
fn status_field_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.get(key.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime and stime (fields 14 and 15) of /proc/PID/stat. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from after the last `)`.
fn parse_stat_cpu(stat: &str, ticks: f64) -> Option<Cpu> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // After ")": field 3 (state) is index 0, so utime (14) is index 11, stime (15) index 12.
    let mut it = rest.split_whitespace().skip(11);
    let utime: f64 = it.next()?.parse().ok()?;
    let stime: f64 = it.next()?.parse().ok()?;
    Some(Cpu {
        user_s: utime / ticks,
        system_s: stime / ticks,
    })
}

/// A CLOCK_MONOTONIC timerfd armed at absolute instants.
pub struct TimerFd(std::os::fd::OwnedFd);

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(TimerFd(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }
    pub fn raw(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
    /// Fire once at `at_ns` (CLOCK_MONOTONIC).
    pub fn arm_at(&self, at_ns: u64) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec; the old value is not wanted (null).
        unsafe {
            libc::timerfd_settime(
                self.raw(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            );
        }
    }
    /// Consume an expiry so that the next one is reported again.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading at most 8 bytes into an 8-byte buffer from a valid fd.
        unsafe {
            libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let stat = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 99 \
                    1000 200 18446744073709551615";
        let cpu = parse_stat_cpu(stat, 100.0).expect("parses");
        assert_eq!(cpu.user_s, 2.5);
        assert_eq!(cpu.system_s, 0.75);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\troulette\nVmRSS:\t   5120 kB\nThreads:\t3\n";
        assert_eq!(status_field_kb(s, "VmRSS:"), Some(5120));
        assert_eq!(status_field_kb(s, "Threads:"), Some(3));
        assert_eq!(status_field_kb(s, "VmHWM:"), None);
    }

    #[test]
    fn own_process() {
        let me = read_proc(std::process::id()).expect("own /proc");
        assert!(me.rss_kb > 0);
        assert!(now_ns() > 0);
    }
}
