//! systemd readiness and watchdog notifications (sd_notify protocol: one datagram to
//! `$NOTIFY_SOCKET`). Small enough to write by hand; a no-op when not run by systemd.
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), std::path::Path::new(&path));
    }
}

/// `READY=1`: the listeners are bound and every thread runs.
pub fn ready() {
    send("READY=1\nSTATUS=accepting connections");
}

/// `STOPPING=1`: draining started.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

/// `WATCHDOG=1`: every loop made progress since the last ping.
pub fn watchdog() {
    send("WATCHDOG=1");
}

/// The watchdog interval systemd expects (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}
