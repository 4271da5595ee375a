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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The crate's lookups block, and connect without timeouts of their own, so each runs on a
/// thread of its own and the bridge waits only as long as it chooses. A lookup stuck behind
/// a partition (SYN retries, a Sentinel that went silent mid-reply) must not delay the next
/// one once the network heals, so every ask starts a fresh lookup with fresh connections
/// (asks are rare: one per reconnection), up to [`MAX_LOOKUPS`] at a time.
pub struct Resolver {
    spec: SentinelSpec,
    tx: Sender<(u64, Result<redis::Client, redis::RedisError>)>,
    rx: Receiver<(u64, Result<redis::Client, redis::RedisError>)>,
    inflight: Arc<AtomicUsize>,
    generation: u64,
}

/// Lookups running at once; more asks wait for one of them. Each ends within the TCP bounds
/// of [`super::target::SENTINEL_TCP_TIMEOUT`] per Sentinel plus
/// [`super::target::DATA_TCP_TIMEOUT`] for the master's role check.
const MAX_LOOKUPS: usize = 8;

impl Resolver {
    pub fn new(spec: &SentinelSpec) -> Resolver {
        let (tx, rx) = crossbeam_channel::unbounded();
        Resolver {
            spec: spec.clone(),
            tx,
            rx,
            inflight: Arc::new(AtomicUsize::new(0)),
            generation: 0,
        }
    }

    /// A client for the master the Sentinels name now (checked by the crate with `ROLE`).
    pub fn master(&mut self, wait: Duration) -> Result<redis::Client, String> {
        let deadline = std::time::Instant::now() + wait;
        // Whatever older lookups answered after their ask gave up may be out of date now.
        while self.rx.try_recv().is_ok() {}
        if self.inflight.load(Ordering::Acquire) < MAX_LOOKUPS {
            self.generation += 1;
            let (generation, tx, inflight) =
                (self.generation, self.tx.clone(), self.inflight.clone());
            let spec = self.spec.clone();
            inflight.fetch_add(1, Ordering::AcqRel);
            let spawned = std::thread::Builder::new()
                .name("cluster-sentinel".into())
                .spawn(move || {
                    let r = spec.client().and_then(|mut c| c.get_client());
                    inflight.fetch_sub(1, Ordering::AcqRel);
                    let _ = tx.send((generation, r));
                });
            if let Err(e) = spawned {
                self.inflight.fetch_sub(1, Ordering::AcqRel);
                return Err(format!("cannot start a Sentinel lookup: {e}"));
            }
        }
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                // Any lookup's master will do: the crate checked it with ROLE, and if it has
                // been demoted since, the link fails with READONLY and asks again.
                Ok((_, Ok(c))) => return Ok(c),
                Ok((g, Err(e))) if g == self.generation => {
                    return Err(format!("no master from the Sentinels: {e}"))
                }
                // A failure of an older lookup is old news.
                Ok((_, Err(_))) => {}
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
