//! `roulette healthcheck`: one GET /healthz against a running server, for container runtimes
//! whose health checks run a command (the image has no curl).
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Where to probe a server listening on `listen`: the same port on loopback when it listens
/// on every address.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `Ok(())` when `addr` answers `GET /healthz` with 200 within `timeout`; otherwise why not.
pub fn healthcheck(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&addr, left()).map_err(|e| format!("{addr}: {e}"))?;
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    // The status line is all we need; the answer is a few dozen bytes.
    let mut buf = [0u8; 512];
    let mut len = 0;
    while len < 12 {
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match s.read(buf.get_mut(len..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let head = buf.get(..len).unwrap_or_default();
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    if head.starts_with(b"HTTP/1.1 200 ") {
        Ok(())
    } else {
        Err(format!(
            "{addr}: answered {:?}",
            String::from_utf8_lossy(line)
        ))
    }
}
