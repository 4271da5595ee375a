//! Every limit of the server in one place, parsed once from flags and `ROULETTE_*` variables.
//! Every flag is listed in docs/PROTOCOL.md ("Limits and bad input", "Flags").
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A flag value that may hold a password (the Redis URL): never shown by `Debug`, so no
/// `{:?}` of the configuration can leak it. Clap takes it as is (`From<String>` cannot
/// fail), because clap's own errors would print a rejected value.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(s)
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parse a duration given in seconds, fractions allowed (`0.5`).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=1.0e9).contains(&v) {
        return Err(format!("`{s}` is out of range (0 to 1e9 seconds)"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "roulette",
    version = crate::VERSION_LINE,
    about = "Anonymous one-to-one WebSocket chat server (talk to a random stranger).",
    long_about = "Anonymous one-to-one WebSocket chat server (talk to a random stranger).\n\n\
        Chat protocol on GET /ws, the web client on GET /, health on GET /healthz, Prometheus \
        metrics on a separate loopback listener. Every flag also reads ROULETTE_<FLAG> from the \
        environment (e.g. --rate-limit-per-sec <-> ROULETTE_RATE_LIMIT_PER_SEC). Durations are \
        seconds and accept fractions. Logging: RUST_LOG (default info)."
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the public listener (HTTP + WebSocket). Port 0 picks a free port; the
    /// address actually bound is logged as "roulette listening on ADDR".
    #[arg(long, env = "ROULETTE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the Prometheus metrics listener (GET /metrics). Keep it on loopback or a
    /// private network.
    #[arg(
        long,
        env = "ROULETTE_METRICS_LISTEN",
        default_value = "127.0.0.1:9898"
    )]
    pub metrics_listen: SocketAddr,

    /// Number of event-loop threads (shards), each pinned to a core. Default: one per core.
    #[arg(long, env = "ROULETTE_SHARDS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,

    /// Pin each shard to a core. Set false in containers that do not own whole cores
    /// (CPU quotas, shared hosts): shards then run wherever the kernel schedules them.
    #[arg(
        long,
        env = "ROULETTE_PIN_CORES",
        value_name = "true|false",
        default_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub pin_cores: bool,

    /// Serve GET /echo, which echoes every text and binary message (for conformance suites
    /// and benchmarks; no chat rules, no rate limit).
    #[arg(long, env = "ROULETTE_ENABLE_ECHO", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub enable_echo: bool,

    /// Maximum simultaneous WebSocket connections; further upgrades get 503.
    #[arg(long, env = "ROULETTE_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Longest HTTP request head in bytes; longer heads get 431.
    #[arg(long, env = "ROULETTE_MAX_HEAD_BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    pub max_head_bytes: u32,

    /// Open sockets allowed beyond --max-connections for clients still in their HTTP
    /// handshake (or being refused); past --max-connections plus this, new sockets are closed
    /// at once.
    #[arg(long, env = "ROULETTE_SOCKET_HEADROOM", default_value_t = 1024)]
    pub socket_headroom: usize,

    /// Networks of reverse proxies and load balancers allowed to tell the client's address
    /// (repeatable; environment: comma-separated CIDRs). Only connections from these carry a
    /// client address (see --proxy-header); a PROXY header from anyone else is refused and an
    /// X-Forwarded-For from anyone else is ignored. Default: none, every peer is the client.
    #[arg(
        long = "trusted-proxy",
        env = "ROULETTE_TRUSTED_PROXY",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<crate::http::proxy::Cidr>,

    /// Where a trusted proxy puts the client's address: a PROXY protocol v1/v2 header
    /// (HAProxy, AWS NLB, Google's proxy network load balancers) or the rightmost untrusted
    /// X-Forwarded-For entry (nginx, AWS ALB, Google's application load balancer, Azure
    /// Application Gateway, ingress controllers).
    #[arg(long, env = "ROULETTE_PROXY_HEADER", value_enum, default_value_t = ProxyHeader::ProxyProtocol)]
    pub proxy_header: ProxyHeader,

    /// Open connections (sockets) per client address, IPv6 grouped by /64; more get 429 (or
    /// are closed at once when far over). 0 = no limit.
    #[arg(long, env = "ROULETTE_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    pub max_connections_per_ip: u32,

    /// New connections per second per client address (token bucket); more get 429 with
    /// Retry-After. 0 = no limit.
    #[arg(long, env = "ROULETTE_HANDSHAKE_RATE_PER_IP", default_value_t = 20)]
    pub handshake_rate_per_ip: u32,

    /// Token bucket size for --handshake-rate-per-ip: connections an address may open in a
    /// burst.
    #[arg(long, env = "ROULETTE_HANDSHAKE_BURST_PER_IP", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub handshake_burst_per_ip: u32,

    /// Seconds a client has to send its complete request head (slowloris guard).
    #[arg(long, env = "ROULETTE_HANDSHAKE_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub handshake_timeout: Duration,

    /// Largest WebSocket message on /ws in bytes, after reassembly; larger ones close 1009.
    #[arg(long, env = "ROULETTE_MAX_MESSAGE_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(125..))]
    pub max_message_bytes: u32,

    /// Largest WebSocket message on /echo in bytes; larger ones close 1009.
    #[arg(long, env = "ROULETTE_ECHO_MAX_MESSAGE_BYTES", default_value_t = 16_777_216, value_parser = clap::value_parser!(u32).range(125..))]
    pub echo_max_message_bytes: u32,

    /// A client whose unsent output exceeds this many bytes is closed with 1008 (on /echo the
    /// cap is at least twice the echo message limit).
    #[arg(long, env = "ROULETTE_OUTBOUND_CAP_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u32).range(4096..))]
    pub outbound_cap_bytes: u32,

    /// Kernel send buffer per client socket (SO_SNDBUF; Linux doubles it for bookkeeping).
    /// Bytes past it wait in the server's own queue, where --outbound-cap-bytes and
    /// --output-budget-bytes see them. /echo connections get 16 times as much.
    #[arg(long, env = "ROULETTE_SEND_BUFFER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(4096..=67_108_864))]
    pub send_buffer_bytes: u32,

    /// Kernel receive buffer per client socket (SO_RCVBUF; Linux doubles it for bookkeeping
    /// and stops autotuning it). While the server holds off reading a client (back-pressure),
    /// at most this much of what it sends waits in the kernel, not `tcp_rmem`'s maximum.
    #[arg(long, env = "ROULETTE_RECV_BUFFER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(4096..=67_108_864))]
    pub recv_buffer_bytes: u32,

    /// Queued output of all clients together, in bytes; past it, a client with more than
    /// 64 KiB unsent is closed like a slow consumer (1008).
    #[arg(long, env = "ROULETTE_OUTPUT_BUDGET_BYTES", default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(1_048_576..))]
    pub output_budget_bytes: u64,

    /// Seconds a client may leave output unsent (in the server's queue or the kernel's) with
    /// no progress at all before it is dropped (reset); its partner gets partner_left.
    #[arg(long, env = "ROULETTE_WRITE_STALL_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub write_stall_timeout: Duration,

    /// Seconds a fragmented message may take from its first to its last frame; longer closes
    /// with 1008.
    #[arg(long, env = "ROULETTE_MESSAGE_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub message_timeout: Duration,

    /// Messages (per destination thread) a shard may have waiting for another thread; past
    /// it, the shard stops reading from the clients whose messages wait.
    #[arg(long, env = "ROULETTE_THREAD_QUEUE_MESSAGES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(64..))]
    pub thread_queue_messages: u32,

    /// Bytes (of relayed frames, per destination thread) a shard may have waiting for another
    /// thread; past it, the shard stops reading from the clients whose messages wait.
    #[arg(long, env = "ROULETTE_THREAD_QUEUE_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(65_536..))]
    pub thread_queue_bytes: u64,

    /// Seconds a destination may stay full before the pairs waiting on it end (partner_left;
    /// the senders are closed with 1013).
    #[arg(long, env = "ROULETTE_THREAD_QUEUE_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub thread_queue_timeout: Duration,

    /// Seconds without any frame from a client before the server pings it.
    #[arg(long, env = "ROULETTE_IDLE_PING", default_value = "30", value_parser = parse_seconds)]
    pub idle_ping: Duration,

    /// Seconds to wait for any frame after that ping before closing with 1001.
    #[arg(long, env = "ROULETTE_PONG_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub pong_timeout: Duration,

    /// Seconds to wait for clients to finish the close handshake on shutdown.
    #[arg(long, env = "ROULETTE_GRACE_PERIOD", default_value = "10", value_parser = parse_seconds)]
    pub grace_period: Duration,

    /// Longest chat line in characters (Unicode scalar values), after trimming.
    #[arg(long, env = "ROULETTE_MAX_TEXT_CHARS", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_text_chars: u32,

    /// Sustained client messages per second on /ws (token bucket); 0 = no limit.
    #[arg(long, env = "ROULETTE_RATE_LIMIT_PER_SEC", default_value_t = 20)]
    pub rate_limit_per_sec: u32,

    /// Token bucket size: messages a client may send in a burst.
    #[arg(long, env = "ROULETTE_RATE_LIMIT_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,

    /// Dropped messages within 10 s after which a client is closed with 1008.
    #[arg(long, env = "ROULETTE_ABUSE_DROPS", default_value_t = 100)]
    pub abuse_drops: u32,

    /// Seconds a client with interests waits for a shared interest before anyone will do.
    #[arg(long, env = "ROULETTE_INTEREST_WAIT", default_value = "5", value_parser = parse_seconds)]
    pub interest_wait: Duration,

    /// Allowed browser Origin (repeatable; environment: comma-separated). Requests without
    /// Origin are always allowed. Default: any origin.
    #[arg(
        long = "allowed-origin",
        env = "ROULETTE_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Redis URL for cluster mode: redis://[[USER]:PASSWORD@]HOST:PORT[/DB], or rediss://...
    /// for TLS (certificates checked against built-in WebPKI roots, or --cluster-ca-file), or
    /// redis+sentinel://[SENTINEL_PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME to follow
    /// a master through Sentinel failovers (rediss+sentinel:// for TLS).
    /// Nodes sharing one Redis pair and relay strangers across nodes. Without it the node
    /// runs alone and needs no Redis. Needs a standalone primary (replicas are fine): a Redis
    /// Cluster endpoint (cluster mode enabled) is refused. Logs show no password.
    #[arg(
        long,
        env = "ROULETTE_CLUSTER",
        value_name = "URL",
        hide_env_values = true,
        conflicts_with = "cluster_url_file"
    )]
    pub cluster: Option<SecretString>,

    /// Read the --cluster URL from this file instead (e.g. a Kubernetes Secret mounted as a
    /// file); surrounding whitespace is ignored.
    #[arg(long, env = "ROULETTE_CLUSTER_URL_FILE", value_name = "PATH")]
    pub cluster_url_file: Option<PathBuf>,

    /// Read the Redis password (of the ACL user named in the URL, or of the default user)
    /// from this file, verbatim except for a trailing newline; the URL then has none.
    #[arg(long, env = "ROULETTE_CLUSTER_PASSWORD_FILE", value_name = "PATH")]
    pub cluster_password_file: Option<PathBuf>,

    /// redis+sentinel:// only: the ACL user on the data nodes (the URL's password is the
    /// Sentinels'; the data nodes' password comes from --cluster-password-file).
    #[arg(long, env = "ROULETTE_CLUSTER_USER", value_name = "USER")]
    pub cluster_user: Option<String>,

    /// PEM bundle of CA certificates for a rediss:// URL whose server certificate comes from
    /// a private CA (e.g. Google Memorystore's server CA). With it, ONLY these CAs are
    /// trusted, not the built-in WebPKI roots.
    #[arg(long, env = "ROULETTE_CLUSTER_CA_FILE", value_name = "PATH")]
    pub cluster_ca_file: Option<PathBuf>,

    /// This node's name in a cluster, in logs and metrics (default: the host name plus a
    /// random suffix). Letters, digits, `.`, `_` and `-`, at most 64.
    #[arg(long, env = "ROULETTE_NODE_NAME")]
    pub node_name: Option<String>,

    /// Cluster only: seconds a stranger with no partner on this node waits for a local one
    /// before joining the cluster-wide queue (0 = join at once). Local pairs need no Redis.
    #[arg(long, env = "ROULETTE_CLUSTER_HOLD", default_value = "0.1", value_parser = parse_seconds)]
    pub cluster_hold: Duration,
}

/// The source of the client address on connections from a trusted proxy.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A PROXY protocol v1 or v2 header before the request.
    ProxyProtocol,
    /// The X-Forwarded-For request header.
    XForwardedFor,
}

/// Commands other than running the server.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Probe a running server's GET /healthz and exit 0 when it answers 200, 1 otherwise (for
    /// container runtimes that need a command; orchestrators probe HTTP /healthz directly).
    Healthcheck {
        /// Address to probe. Default: the port of --listen / ROULETTE_LISTEN on loopback.
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value = "2", value_parser = parse_seconds)]
        timeout: Duration,
    },
}

impl Config {
    /// Shards to run: the flag, or one per core.
    pub fn shard_count(&self) -> usize {
        self.shards
            .map(usize::from)
            .unwrap_or_else(num_cpus::get)
            .max(1)
    }

    /// The most sockets open at once: WebSockets plus the handshake headroom.
    pub fn max_sockets(&self) -> usize {
        self.max_connections.saturating_add(self.socket_headroom)
    }

    /// Outbound cap for an endpoint: /echo gets at least twice its message limit.
    pub fn echo_outbound_cap(&self) -> usize {
        (self.outbound_cap_bytes as usize).max(2 * self.echo_max_message_bytes as usize + 4096)
    }

    /// Checks that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.handshake_timeout.is_zero()
            || self.idle_ping.is_zero()
            || self.pong_timeout.is_zero()
            || self.write_stall_timeout.is_zero()
            || self.message_timeout.is_zero()
            || self.thread_queue_timeout.is_zero()
        {
            return Err(
                "--handshake-timeout, --idle-ping, --pong-timeout, --write-stall-timeout, \
                 --message-timeout and --thread-queue-timeout must be positive"
                    .into(),
            );
        }
        if self.abuse_drops > 1000 {
            return Err("--abuse-drops must be at most 1000".into());
        }
        if self.cluster.is_none() && self.cluster_url_file.is_none() {
            for (flag, set) in [
                (
                    "--cluster-password-file",
                    self.cluster_password_file.is_some(),
                ),
                ("--cluster-ca-file", self.cluster_ca_file.is_some()),
                ("--cluster-user", self.cluster_user.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "{flag} needs --cluster or --cluster-url-file (cluster mode)"
                    ));
                }
            }
        }
        if let Some(name) = &self.node_name {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(format!(
                    "--node-name: `{name}` must be 1-64 letters, digits, `.`, `_` or `-`"
                ));
            }
        }
        Ok(())
    }

    /// A configuration with every default, for tests and benches.
    pub fn defaults() -> Config {
        Config::parse_from(["roulette"])
    }
}
