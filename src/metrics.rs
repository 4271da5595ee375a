//! Prometheus text exposition (format 0.0.4) on its own listener and thread. Reads counters
//! only; never takes a lock a shard takes.
use crate::server::Shared;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Serve `GET /metrics` until the process exits.
pub fn serve(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 4096];
        let mut len = 0;
        // Read until the end of the head (or the buffer is full).
        while len < buf.len() {
            match s.read(&mut buf[len..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
        let head = &buf[..len];
        let line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
        let resp = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET /metrics?") {
            let body = render(&shared);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n".to_string()
        };
        let _ = s.write_all(resp.as_bytes());
    }
}

/// Render every metric as Prometheus text.
pub fn render(shared: &Shared) -> String {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::with_capacity(8192);
    let _ = writeln!(out, "# HELP roulette_online_clients Connected chat clients.");
    let _ = writeln!(out, "# TYPE roulette_online_clients gauge");
    let _ = writeln!(out, "roulette_online_clients {}", shared.online.load(Relaxed));
    out
}
