//! Bootstrap and thread lifecycle: bind, spawn the acceptor, the shards and the matchmaker,
//! then turn SIGTERM/SIGINT into a drain and exit.
use crate::admission::{Admission, AdmissionConfig};
use crate::config::Config;
use crate::matchhost::{self, MatchStats};
use crate::shard::{self, ShardStats, WAKER_TOKEN};
use crate::xshard::{ClusterSender, ShardHandle, ShardMsg};
use crate::{acceptor, metrics};
use log::{error, info, warn};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// State every thread may read; written with relaxed atomics, never locked.
pub struct Shared {
    pub config: Config,
    pub draining: AtomicBool,
    /// Upgraded WebSocket connections (chat and echo), for `--max-connections`.
    pub ws_open: AtomicUsize,
    /// Connected chat clients (the `online` of `hello`).
    pub online: AtomicUsize,
    pub shards: Vec<ShardStats>,
    pub matcher: Arc<MatchStats>,
    pub accept_errors: std::sync::atomic::AtomicU64,
    pub accept_overload: std::sync::atomic::AtomicU64,
    /// Sockets closed at accept because --max-connections plus the headroom were open.
    pub accept_socket_cap: std::sync::atomic::AtomicU64,
    /// Open client sockets in any phase (the acceptor's cap).
    pub sockets: AtomicUsize,
    /// Per-client-address limits.
    pub admission: Admission,
    /// --trusted-proxy.
    pub trusted: crate::http::proxy::TrustedProxies,
    pub started: Instant,
    /// Cluster mode: the Redis path's counters (and the cluster-wide client count).
    pub cluster: Option<Arc<crate::cluster::ClusterStats>>,
    /// Cluster mode: this node's name.
    pub node_name: String,
}

impl Shared {
    /// Milliseconds since the process started: the clock of the per-address limits.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn new(config: Config, shards: usize, cluster: bool, node_name: String) -> Shared {
        let admission = Admission::new(AdmissionConfig {
            max_conns_per_ip: config.max_connections_per_ip,
            rate_per_sec: config.handshake_rate_per_ip,
            burst: config.handshake_burst_per_ip,
            // Every open socket, plus the addresses that only opened connections within the
            // last burst ÷ rate seconds: bounded by the socket cap and the accept rate.
            max_entries: config.max_sockets().saturating_mul(4).max(65_536),
        });
        Shared {
            draining: AtomicBool::new(false),
            ws_open: AtomicUsize::new(0),
            online: AtomicUsize::new(0),
            sockets: AtomicUsize::new(0),
            shards: (0..shards).map(|_| ShardStats::default()).collect(),
            matcher: Arc::new(MatchStats::default()),
            accept_errors: Default::default(),
            accept_overload: Default::default(),
            accept_socket_cap: Default::default(),
            admission,
            trusted: crate::http::proxy::TrustedProxies::new(config.trusted_proxies.clone()),
            started: Instant::now(),
            cluster: cluster.then(|| Arc::new(crate::cluster::ClusterStats::default())),
            node_name,
            config,
        }
    }

    /// The `online` of `hello`: this node's clients, or in a cluster with a live link, every
    /// node's (as of the last heartbeat, with this node's count current).
    pub fn online_count(&self) -> u64 {
        let local = self.online.load(Ordering::Relaxed) as u64;
        match &self.cluster {
            Some(c) if c.is_up() => {
                let others = c.online_total.load(Ordering::Relaxed);
                let at_beat = c.online_local_at_beat.load(Ordering::Relaxed);
                others.saturating_sub(at_beat) + local
            }
            _ => local,
        }
    }
}

/// Raise the soft open-file limit to the hard limit (systemd leaves the soft one at 1024).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            if lim.rlim_cur < lim.rlim_max {
                let want = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            info!("open-file limit: {}", lim.rlim_cur);
        }
    }
}

/// Listen backlog: connect bursts (a reconnect storm, a handshake flood) queue in the kernel
/// rather than overflow into SYN retries of a second or more.
const LISTEN_BACKLOG: libc::c_int = 1024;

/// Bind the public listener through mio, which sets `SO_REUSEADDR` (a restart rebinds at
/// once); then hand it to the blocking acceptor as a std listener. mio 1 listens with std's
/// backlog of 128, so the socket listens again with ours: on Linux a second `listen` on a
/// listening socket only changes its backlog.
fn bind_listener(config: &Config) -> std::io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    let listener = mio::net::TcpListener::bind(config.listen)?;
    let std_listener = TcpListener::from(std::os::fd::OwnedFd::from(listener));
    crate::sys::set_listen_backlog(std_listener.as_raw_fd(), LISTEN_BACKLOG)?;
    // Chat lines are small and latency matters more than packet count (TCP_NODELAY); a
    // bounded kernel send buffer makes what a client does not read pile up in our queue,
    // where the outbound cap and the stall timeout see it (SO_SNDBUF); a bounded receive
    // buffer caps what a flooding client parks in the kernel while we hold off reading it
    // (SO_RCVBUF; autotuning would let it reach tcp_rmem's maximum, 6-32 MiB). A connection
    // takes the listener's options when its handshake completes, queued or not, so they are
    // set here, before anyone is told we listen, not in the acceptor thread.
    crate::sys::set_listener_defaults(
        std_listener.as_raw_fd(),
        config.send_buffer_bytes,
        config.recv_buffer_bytes,
    )?;
    std_listener.set_nonblocking(false)?;
    Ok(std_listener)
}

/// Run the server until it is told to stop. Returns the process exit code.
pub fn run(config: Config) -> i32 {
    raise_fd_limit();
    // Cluster settings first: a wrong one must stop us before we listen.
    let redis_target = match crate::cluster::target::from_config(&config) {
        Ok(t) => t,
        Err(e) => {
            error!("{e}");
            return 2;
        }
    };
    if let Some(t) = &redis_target {
        if let Err(e) = crate::cluster::target::check_at_start(t) {
            error!("cluster: {e}");
            return 2;
        }
    }
    let listener = match bind_listener(&config) {
        Ok(l) => l,
        Err(e) => {
            error!("cannot listen on {}: {e}", config.listen);
            return 1;
        }
    };
    let metrics_listener = match TcpListener::bind(config.metrics_listen) {
        Ok(l) => l,
        Err(e) => {
            error!(
                "cannot listen for metrics on {}: {e}",
                config.metrics_listen
            );
            return 1;
        }
    };
    let n = config.shard_count();
    let node_name = config
        .node_name
        .clone()
        .unwrap_or_else(crate::cluster::default_node_name);
    let in_cluster = redis_target.is_some();
    let shared = Arc::new(Shared::new(config, n, in_cluster, node_name));

    // Every queue between threads is bounded in messages and in bytes.
    let queue_msgs = shared.config.thread_queue_messages as usize;
    let queue_bytes = usize::try_from(shared.config.thread_queue_bytes).unwrap_or(usize::MAX);
    // Build every shard's poll, waker and inbox first, so each can be given all handles.
    let mut polls = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for i in 0..n {
        let poll = match mio::Poll::new() {
            Ok(p) => p,
            Err(e) => {
                error!("shard {i}: cannot create poll: {e}");
                return 1;
            }
        };
        let waker = match mio::Waker::new(poll.registry(), WAKER_TOKEN) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                error!("shard {i}: cannot create waker: {e}");
                return 1;
            }
        };
        let (tx, rx) = crossbeam_channel::bounded(queue_msgs);
        polls.push(poll);
        handles.push(ShardHandle::new(tx, waker, queue_bytes));
        inboxes.push(rx);
    }
    let (match_tx, match_rx) = crossbeam_channel::bounded(queue_msgs);

    let mut threads = Vec::new();
    // Cluster mode: the Redis bridge and subscriber threads.
    let mut cluster_tx = None;
    let mut matcher_cluster = None;
    if let (Some(target), Some(stats)) = (redis_target, shared.cluster.clone()) {
        let resolver = match &target.endpoint {
            crate::cluster::target::Endpoint::Sentinel(spec) => {
                Some(crate::cluster::sentinel::Resolver::new(spec))
            }
            crate::cluster::target::Endpoint::Direct(_) => None,
        };
        let (tx, from_shards) = crossbeam_channel::bounded(queue_msgs);
        let from_shards_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tx = ClusterSender::new(tx, from_shards_bytes.clone(), queue_bytes);
        let (mtx, from_matcher) = crossbeam_channel::bounded(queue_msgs);
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let table = Arc::new(std::sync::Mutex::new(crate::cluster::NodeTable::new()));
        if let crate::cluster::target::Endpoint::Sentinel(spec) = &target.endpoint {
            let (spec, events) = (spec.clone(), ev_tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("cluster-failover".into())
                    .spawn(move || crate::cluster::sentinel::watch(spec, events)),
            );
        }
        let sub = crate::cluster::subscriber::Subscriber {
            ctl: ctl_rx,
            events: ev_tx,
            shards: handles.clone(),
            table: table.clone(),
            stats: stats.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("cluster-sub".into())
                .spawn(move || sub.run()),
        );
        info!(
            "cluster mode: node {} using {} ({})",
            shared.node_name, target.shown, target.details
        );
        let bridge = crate::cluster::bridge::Bridge {
            endpoint: target.endpoint,
            resolver,
            client: None,
            retry_now: false,
            target: target.shown,
            name: shared.node_name.clone(),
            from_shards,
            from_shards_bytes,
            matcher_backlog: std::collections::VecDeque::new(),
            from_matcher,
            matcher: match_tx.clone(),
            shards: handles.clone(),
            sub_ctl: ctl_tx,
            sub_events: ev_rx,
            table,
            stats,
            shared: shared.clone(),
            previous_id: None,
            refusal_logged: false,
        };
        threads.push(
            std::thread::Builder::new()
                .name("cluster-bridge".into())
                .spawn(move || bridge.run()),
        );
        cluster_tx = Some(tx);
        matcher_cluster = Some(matchhost::ClusterSide {
            bridge: mtx,
            hold: shared.config.cluster_hold,
        });
    }
    {
        let handles = handles.clone();
        let wait = shared.config.interest_wait;
        let stats = shared.matcher.clone();
        threads.push(
            std::thread::Builder::new()
                .name("matchmaker".into())
                .spawn(move || matchhost::run(match_rx, handles, wait, stats, matcher_cluster)),
        );
    }
    let pin = shared.config.pin_cores;
    let cores = if pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    for (i, (poll, inbox)) in polls.into_iter().zip(inboxes).enumerate() {
        let handles = handles.clone();
        let match_tx = match_tx.clone();
        let cluster_tx = cluster_tx.clone();
        let shared = shared.clone();
        let core = cores.get(i % cores.len().max(1)).copied();
        threads.push(std::thread::Builder::new().name(format!("shard-{i}")).spawn(move || {
            match core {
                Some(c) if core_affinity::set_for_current(c) => {}
                _ if !pin => {}
                _ => warn!("shard {i}: not pinned to a core (affinity unavailable); running unpinned"),
            }
            let code = shard::Shard::new(i as u16, poll, inbox, handles, match_tx, cluster_tx, shared)
                .run();
            if code != 0 {
                error!("shard {i} stopped unexpectedly; exiting so the supervisor restarts us");
                std::process::exit(code);
            }
        }));
    }
    if let Some(Err(e)) = threads.iter().find(|t| t.is_err()) {
        error!("cannot start threads: {e}");
        return 1;
    }
    drop(match_tx);

    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let maddr = metrics_listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    {
        let shared = shared.clone();
        let handles = handles.clone();
        let spawned = std::thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || acceptor::run(listener, handles, shared));
        if let Err(e) = spawned {
            error!("cannot start acceptor: {e}");
            return 1;
        }
    }
    {
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || metrics::serve(metrics_listener, shared));
        if let Err(e) = spawned {
            error!("cannot start metrics listener: {e}");
            return 1;
        }
    }
    // Handlers go in before READY=1, so a stop request right after it is a drain.
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    info!("metrics listening on {maddr}");
    info!(
        "roulette listening on {addr} (version {}, revision {}, {n} shard{}, echo {})",
        crate::VERSION,
        crate::REVISION,
        if n == 1 { "" } else { "s" },
        if shared.config.enable_echo {
            "on"
        } else {
            "off"
        }
    );
    crate::notify::ready();

    wait_for_signals(signals, &shared, &handles)
}

/// Block until SIGTERM/SIGINT, drain, and return the exit code.
fn wait_for_signals(
    mut signals: signal_hook::iterator::Signals,
    shared: &Shared,
    handles: &[ShardHandle],
) -> i32 {
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
    let sig_handle = signals.handle();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if sig_tx.send(s).is_err() {
                    break;
                }
            }
        });
    let watchdog = crate::notify::watchdog_interval();
    let mut last_beat = vec![0u64; shared.shards.len()];
    let mut drain_started: Option<Instant> = None;
    loop {
        let tick = watchdog
            .map(|w| w / 2)
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500));
        let tick = if drain_started.is_some() {
            Duration::from_millis(20)
        } else {
            tick
        };
        // Addresses with nothing left to remember leave the admission table.
        shared.admission.sweep(shared.now_ms());
        match sig_rx.recv_timeout(tick) {
            Ok(sig) => {
                if drain_started.is_some() {
                    warn!("second signal ({sig}): exiting now");
                    sig_handle.close();
                    return 130;
                }
                info!(
                    "signal {sig}: draining (grace period {:?})",
                    shared.config.grace_period
                );
                crate::notify::stopping();
                shared.draining.store(true, Ordering::SeqCst);
                for h in handles {
                    if h.send_blocking(ShardMsg::Drain).is_err() {
                        return 1;
                    }
                }
                drain_started = Some(Instant::now());
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return 1,
        }
        if let Some(t) = drain_started {
            let open = shared.ws_open.load(Ordering::SeqCst);
            if open == 0 {
                info!("drained: every connection closed");
                return 0;
            }
            if t.elapsed() >= shared.config.grace_period {
                warn!("grace period over with {open} connection(s) still open; exiting");
                return 0;
            }
        } else if watchdog.is_some() {
            // Only tell systemd we are alive when every shard made progress since last time.
            let beats: Vec<u64> = shared
                .shards
                .iter()
                .map(|s| s.loop_turns.load(Ordering::Relaxed))
                .collect();
            if beats
                .iter()
                .zip(&last_beat)
                .all(|(now, before)| now != before)
            {
                crate::notify::watchdog();
            }
            last_beat = beats;
        }
    }
}
