//! Following a master through Sentinel failovers, with the `redis` crate's `sentinel`
//! feature. That client looks the master up only when asked, so:
//! - the bridge asks a [`Resolver`] for the master on every (re)connection (after a
//!   connection error, a `READONLY` reply, or a `+switch-master` event);
//! - a [`watch`] thread listens to the Sentinels' `+switch-master` announcements, so a node
//!   whose link to the old master still works (the old master was partitioned from the
//!   Sentinels, not from us) moves to the new one instead of writing where nobody reads.
use super::subscriber::SubEvent;
use super::target::SentinelSpec;
use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};
use std::time::Duration;

/// The crate's lookups block (and connect without timeouts of their own), so they run on a
/// thread of their own; the bridge waits only as long as it chooses.
pub struct Resolver {
    requests: Sender<()>,
    replies: Receiver<Result<redis::Client, redis::RedisError>>,
    /// A request is out whose reply has not been taken: a late reply answers the next ask,
    /// rather than a second lookup piling up behind a stuck one.
    pending: bool,
}

impl Resolver {
    pub fn start(spec: &SentinelSpec) -> std::io::Result<Resolver> {
        let (requests, req_rx) = crossbeam_channel::bounded::<()>(1);
        let (rep_tx, replies) = crossbeam_channel::bounded(1);
        let spec = spec.clone();
        std::thread::Builder::new()
            .name("cluster-sentinel".into())
            .spawn(move || {
                let mut client = spec.client();
                while req_rx.recv().is_ok() {
                    let reply = match &mut client {
                        Ok(c) => c.get_client(),
                        Err(e) => Err(e.clone()),
                    };
                    if rep_tx.send(reply).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Resolver {
            requests,
            replies,
            pending: false,
        })
    }

    /// A client for the master the Sentinels name now (checked by the crate with `ROLE`).
    pub fn master(&mut self, wait: Duration) -> Result<redis::Client, String> {
        let deadline = std::time::Instant::now() + wait;
        // A failure from a lookup asked for before this call is old news (say, from the
        // middle of a partition that has healed since): ask again within the same wait.
        let mut fresh = !self.pending;
        loop {
            if !self.pending {
                if self.requests.send(()).is_err() {
                    return Err("the Sentinel lookup thread is gone".into());
                }
                self.pending = true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(r) => {
                    self.pending = false;
                    match r {
                        Ok(c) => return Ok(c),
                        Err(_) if !fresh => fresh = true,
                        Err(e) => return Err(format!("no master from the Sentinels: {e}")),
                    }
                }
                Err(_) => return Err(format!("no Sentinel answered within {wait:?}")),
            }
        }
    }
}

/// Where a client connects, as `host:port` (what logs may show of a data node).
pub fn addr_of(client: &redis::Client) -> String {
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(h, p)
        | redis::ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        }
        other => other.to_string(),
    }
}

/// Listen for `+switch-master` of our master on any one Sentinel that answers, for ever;
/// report each as [`SubEvent::SwitchMaster`]. Returns when the bridge is gone.
pub fn watch(spec: SentinelSpec, events: Sender<SubEvent>) {
    const RETRY: Duration = Duration::from_secs(1);
    let mut client = match spec.client() {
        Ok(c) => c,
        Err(e) => {
            warn!("cluster: cannot watch the Sentinels for failovers: {e}");
            return;
        }
    };
    let mut quiet = false;
    loop {
        match listen(&mut client, &spec.master, &events) {
            Ok(()) => return,
            Err(e) => {
                if !quiet {
                    warn!("cluster: not watching the Sentinels for failovers ({e}); retrying");
                    quiet = true;
                }
            }
        }
        std::thread::sleep(RETRY);
    }
}

/// `Ok` only when the bridge is gone.
fn listen(
    client: &mut redis::sentinel::SentinelClient,
    master: &str,
    events: &Sender<SubEvent>,
) -> redis::RedisResult<()> {
    let sentinel = client.get_sentinel_client()?;
    let mut con = sentinel.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut ps = con.as_pubsub();
    ps.subscribe("+switch-master")?;
    // Sentinels announce nothing between failovers: a read timeout lets a half-dead
    // connection be noticed by the PING below.
    ps.set_read_timeout(Some(Duration::from_secs(5)))?;
    debug!("cluster: watching a Sentinel for +switch-master of {master}");
    loop {
        match ps.get_message() {
            Ok(msg) => {
                let text: String = msg.get_payload().unwrap_or_default();
                // "<master name> <old ip> <old port> <new ip> <new port>"
                let parts: Vec<&str> = text.split(' ').collect();
                if parts.first() != Some(&master) {
                    continue;
                }
                let to = match (parts.get(3), parts.get(4)) {
                    (Some(h), Some(p)) => Some(format!("{h}:{p}")),
                    _ => None,
                };
                if events.send(SubEvent::SwitchMaster { to }).is_err() {
                    return Ok(());
                }
            }
            Err(e) if e.is_timeout() => {
                ps.ping::<()>()?;
            }
            Err(e) => return Err(e),
        }
    }
}
