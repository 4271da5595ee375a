//! The accept loop: a blocking thread that hands sockets round-robin to the shards. It never
//! reads from a client socket.
use crate::admission::Verdict;
use crate::http::proxy::ip_key;
use crate::server::Shared;
use crate::xshard::{Accepted, SendError, ShardHandle, ShardMsg};
use log::{error, warn};
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn run(listener: TcpListener, shards: Vec<ShardHandle>, shared: Arc<Shared>) {
    let mut next = 0usize;
    let mut last_log = Instant::now() - Duration::from_secs(60);
    loop {
        let (stream, peer) = match crate::sys::accept_nonblocking(listener.as_raw_fd()) {
            Ok(x) => x,
            Err(e) => {
                shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                match e.raw_os_error() {
                    // Out of file descriptors (or kernel memory): survive, back off, retry.
                    Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS)
                    | Some(libc::ENOMEM) => {
                        if last_log.elapsed() >= Duration::from_secs(5) {
                            warn!("accept failed: {e}; pausing accepts briefly");
                            last_log = Instant::now();
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ if e.kind() == io::ErrorKind::Interrupted => {}
                    // ECONNABORTED and friends concern one connection only.
                    _ => {
                        if last_log.elapsed() >= Duration::from_secs(5) {
                            warn!("accept failed: {e}");
                            last_log = Instant::now();
                        }
                    }
                }
                continue;
            }
        };
        // Every socket counts, not just WebSockets: past the cap a new one is closed at once,
        // before it can hold memory or a handshake slot.
        if shared.sockets.load(Ordering::Relaxed) >= shared.config.max_sockets() {
            shared.accept_socket_cap.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.sockets.fetch_add(1, Ordering::Relaxed);
        // A direct client is admitted by its own address now; behind a trusted proxy the
        // client's address arrives with the request, and the shard admits it then.
        let via_proxy = shared.trusted.contains(peer.ip());
        let (key, refused) = if via_proxy {
            (0, None)
        } else {
            let key = ip_key(peer.ip());
            match shared.admission.admit(key, shared.now_ms()) {
                Verdict::Admit => (key, None),
                Verdict::Refuse { reason, .. } => (0, Some(reason)),
                Verdict::Drop { .. } => {
                    // Far over its limit: no answer, and a reset frees the socket at once.
                    let _ = crate::sys::set_linger_zero(stream.as_raw_fd());
                    shared.sockets.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
            }
        };
        let mut msg = ShardMsg::NewConn(Accepted {
            sock: mio::net::TcpStream::from_std(stream),
            via_proxy,
            key,
            refused,
        });
        let mut delivered = false;
        for i in 0..shards.len() {
            let idx = (next + i) % shards.len();
            match shards[idx].try_send(msg) {
                Ok(()) => {
                    next = idx + 1;
                    delivered = true;
                    break;
                }
                Err(SendError::Full(m)) => msg = m,
                Err(SendError::Disconnected) => {
                    error!("shard {idx} is gone");
                    return;
                }
            }
        }
        if !delivered {
            // Every shard is saturated: shed this connection (the socket closes on drop).
            shared.accept_overload.fetch_add(1, Ordering::Relaxed);
            shared.sockets.fetch_sub(1, Ordering::Relaxed);
            if key != 0 {
                shared.admission.release(key, shared.now_ms());
            }
        }
    }
}
