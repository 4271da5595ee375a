//! Prometheus text exposition (format 0.0.4) on its own listener and thread. Reads counters
//! only; never takes a lock a shard takes.
use crate::server::Shared;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Every metric family name, so that tests, dashboards' checks and this file agree on one
/// spelling.
pub mod name {
    pub const ACCEPT_SOCKET_CAP_TOTAL: &str = "roulette_accept_socket_cap_total";
    pub const ADMISSION_ADDRESSES: &str = "roulette_admission_addresses";
    pub const ADMISSION_DROPPED_TOTAL: &str = "roulette_admission_dropped_total";
    pub const ADMISSION_REFUSED_TOTAL: &str = "roulette_admission_refused_total";
    pub const BACKPRESSURE_CLOSES_TOTAL: &str = "roulette_backpressure_closes_total";
    pub const BACKPRESSURE_PAUSES_TOTAL: &str = "roulette_backpressure_pauses_total";
    pub const CLUSTER_HEARTBEAT_CLIENTS: &str = "roulette_cluster_heartbeat_clients";
    pub const CLOSE_FRAMES_RECEIVED_TOTAL: &str = "roulette_close_frames_received_total";
    pub const HTTP_HEAD_PARSES_TOTAL: &str = "roulette_http_head_parses_total";
    pub const HTTP_RESPONSES_BY_STATUS_TOTAL: &str = "roulette_http_responses_by_status_total";
    pub const MAX_SOCKETS: &str = "roulette_max_sockets";
    pub const MESSAGE_TIMEOUTS_TOTAL: &str = "roulette_message_timeouts_total";
    pub const OPEN_SOCKETS_ALL: &str = "roulette_sockets";
    pub const PROXY_REFUSED_TOTAL: &str = "roulette_proxy_refused_total";
    pub const OUTPUT_BUDGET_CLOSES_TOTAL: &str = "roulette_output_budget_closes_total";
    pub const WRITE_STALLS_TOTAL: &str = "roulette_write_stalls_total";
    pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
    pub const PROCESS_MAX_FDS: &str = "process_max_fds";
    pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
    pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
    pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
    pub const PROCESS_THREADS: &str = "process_threads";
    pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
    pub const ACCEPT_ERRORS_TOTAL: &str = "roulette_accept_errors_total";
    pub const ACCEPT_OVERLOAD_TOTAL: &str = "roulette_accept_overload_total";
    pub const BUILD_INFO: &str = "roulette_build_info";
    pub const CHAT_PAIRS: &str = "roulette_chat_pairs";
    pub const CLOSE_FRAMES_SENT_TOTAL: &str = "roulette_close_frames_sent_total";
    pub const CLUSTER_CHATS_ENDED_TOTAL: &str = "roulette_cluster_chats_ended_total";
    pub const CLUSTER_DROPPED_WHILE_DOWN_TOTAL: &str = "roulette_cluster_dropped_while_down_total";
    pub const CLUSTER_INFO: &str = "roulette_cluster_info";
    pub const CLUSTER_NODES: &str = "roulette_cluster_nodes";
    pub const CLUSTER_NODES_DOWN_TOTAL: &str = "roulette_cluster_nodes_down_total";
    pub const CLUSTER_ONLINE_CLIENTS: &str = "roulette_cluster_online_clients";
    pub const CLUSTER_PAIRINGS_TOTAL: &str = "roulette_cluster_pairings_total";
    pub const CLUSTER_PAYLOADS_RECEIVED_TOTAL: &str = "roulette_cluster_payloads_received_total";
    pub const CLUSTER_PUBLISHES_TOTAL: &str = "roulette_cluster_publishes_total";
    pub const CLUSTER_QUEUED_TOTAL: &str = "roulette_cluster_queued_total";
    pub const CLUSTER_RECORDS_RECEIVED_TOTAL: &str = "roulette_cluster_records_received_total";
    pub const CLUSTER_RECORDS_SENT_TOTAL: &str = "roulette_cluster_records_sent_total";
    pub const CLUSTER_REDIS_CONNECTS_TOTAL: &str = "roulette_cluster_redis_connects_total";
    pub const CLUSTER_REDIS_ERRORS_TOTAL: &str = "roulette_cluster_redis_errors_total";
    pub const CLUSTER_REDIS_LINK_LOSSES_TOTAL: &str = "roulette_cluster_redis_link_losses_total";
    pub const CLUSTER_REDIS_ROUNDTRIP_SECONDS: &str = "roulette_cluster_redis_roundtrip_seconds";
    pub const CLUSTER_REDIS_ROUNDTRIPS_TOTAL: &str = "roulette_cluster_redis_roundtrips_total";
    pub const CLUSTER_REDIS_UP: &str = "roulette_cluster_redis_up";
    pub const CLUSTER_RELAY_GAPS_TOTAL: &str = "roulette_cluster_relay_gaps_total";
    pub const CONNECTIONS_ACCEPTED_TOTAL: &str = "roulette_connections_accepted_total";
    pub const CONNECTIONS_CLOSED_TOTAL: &str = "roulette_connections_closed_total";
    pub const CROSS_SHARD_MESSAGES_RECEIVED_TOTAL: &str =
        "roulette_cross_shard_messages_received_total";
    pub const DRAINING: &str = "roulette_draining";
    pub const HANDSHAKE_TIMEOUTS_TOTAL: &str = "roulette_handshake_timeouts_total";
    pub const HTTP_RESPONSES_TOTAL: &str = "roulette_http_responses_total";
    pub const IDLE_TIMEOUTS_TOTAL: &str = "roulette_idle_timeouts_total";
    pub const LOOP_ITERATION_SECONDS: &str = "roulette_loop_iteration_seconds";
    pub const LOOP_ITERATIONS_TOTAL: &str = "roulette_loop_iterations_total";
    pub const MATCH_WAIT_SECONDS: &str = "roulette_match_wait_seconds";
    pub const MATCHMAKER_REQUESTS_TOTAL: &str = "roulette_matchmaker_requests_total";
    pub const MAX_WEBSOCKET_CONNECTIONS: &str = "roulette_max_websocket_connections";
    pub const MESSAGES_RECEIVED_TOTAL: &str = "roulette_messages_received_total";
    pub const MESSAGES_SENT_TOTAL: &str = "roulette_messages_sent_total";
    pub const ONLINE_CLIENTS: &str = "roulette_online_clients";
    pub const OPEN_SOCKETS: &str = "roulette_open_sockets";
    pub const OUTBOUND_QUEUE_BYTES: &str = "roulette_outbound_queue_bytes";
    pub const OUTBOX_FULL_TOTAL: &str = "roulette_outbox_full_total";
    pub const PAIRED_CLIENTS: &str = "roulette_paired_clients";
    pub const PAIRINGS_TOTAL: &str = "roulette_pairings_total";
    pub const RATE_LIMITED_MESSAGES_TOTAL: &str = "roulette_rate_limited_messages_total";
    pub const RECEIVED_BYTES_TOTAL: &str = "roulette_received_bytes_total";
    pub const RELAYED_MESSAGES_TOTAL: &str = "roulette_relayed_messages_total";
    pub const SENT_BYTES_TOTAL: &str = "roulette_sent_bytes_total";
    pub const SHARDS: &str = "roulette_shards";
    pub const SLOW_CONSUMER_CLOSES_TOTAL: &str = "roulette_slow_consumer_closes_total";
    pub const UPGRADES_CHAT_TOTAL: &str = "roulette_upgrades_chat_total";
    pub const UPGRADES_ECHO_TOTAL: &str = "roulette_upgrades_echo_total";
    pub const WAITING_CLIENTS: &str = "roulette_waiting_clients";
    pub const WAKEUPS_TOTAL: &str = "roulette_wakeups_total";
    pub const WEBSOCKET_CONNECTIONS: &str = "roulette_websocket_connections";
}

/// Serve `GET /metrics` until the process exits.
pub fn serve(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else {
            // Out of file descriptors (or memory) fails every accept at once: wait for some to
            // be freed instead of spinning.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
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

/// One metric family being written: HELP and TYPE once, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &str, value: impl std::fmt::Display) {
        use std::fmt::Write as _;
        if labels.is_empty() {
            let _ = writeln!(self.out, "{} {}", self.name, value);
        } else {
            let _ = writeln!(self.out, "{}{{{}}} {}", self.name, labels, value);
        }
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// Render every metric as Prometheus text format 0.0.4. Pure apart from reading atomics and
/// /proc; label values are fixed strings and numbers, so they need no escaping.
pub fn render(shared: &Shared) -> String {
    use crate::shard::stats::{ShardStats, CLOSE_CODES, HTTP_CODES};
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;

    family(o, name::BUILD_INFO, "gauge", "Build information.").sample(
        &format!(
            "version=\"{}\",revision=\"{}\"",
            crate::VERSION,
            crate::REVISION
        ),
        1,
    );
    let m = &shared.matcher;
    // Counted by each shard's timer sweep: a client in a chat is its session's business.
    let paired: u64 = shared
        .shards
        .iter()
        .map(|s| s.paired_clients.load(Relaxed))
        .sum();
    let scalars: [(&'static str, &str, &str, u64); 12] = [
        (
            name::ONLINE_CLIENTS,
            "gauge",
            "Connected chat clients (/ws).",
            shared.online.load(Relaxed) as u64,
        ),
        (
            name::WEBSOCKET_CONNECTIONS,
            "gauge",
            "Open WebSocket connections (/ws and /echo).",
            shared.ws_open.load(Relaxed) as u64,
        ),
        (
            name::MAX_WEBSOCKET_CONNECTIONS,
            "gauge",
            "Configured --max-connections.",
            shared.config.max_connections as u64,
        ),
        (
            name::DRAINING,
            "gauge",
            "1 while shutting down.",
            u64::from(shared.draining.load(Relaxed)),
        ),
        (
            name::SHARDS,
            "gauge",
            "Event-loop threads.",
            shared.shards.len() as u64,
        ),
        (
            name::MATCHMAKER_REQUESTS_TOTAL,
            "counter",
            "Requests handled by the matchmaker.",
            m.requests.load(Relaxed),
        ),
        (
            name::PAIRINGS_TOTAL,
            "counter",
            "Pairs made.",
            m.pairings.load(Relaxed),
        ),
        (
            name::WAITING_CLIENTS,
            "gauge",
            "Clients waiting for a stranger.",
            m.waiting.load(Relaxed),
        ),
        (
            name::PAIRED_CLIENTS,
            "gauge",
            "Clients in a chat (counted by the shards every 100 ms).",
            paired,
        ),
        (
            name::CHAT_PAIRS,
            "gauge",
            "Pairs chatting: half the clients in a chat (a pair across nodes is half on each).",
            paired / 2,
        ),
        (
            name::ACCEPT_ERRORS_TOTAL,
            "counter",
            "Failed accept() calls (e.g. out of file descriptors).",
            shared.accept_errors.load(Relaxed),
        ),
        (
            name::ACCEPT_OVERLOAD_TOTAL,
            "counter",
            "Connections shed because every shard inbox was full.",
            shared.accept_overload.load(Relaxed),
        ),
    ];
    for (name, kind, help, value) in scalars {
        family(o, name, kind, help).sample("", value);
    }

    type Counter = fn(&ShardStats) -> &AtomicU64;
    let per_shard: &[(&'static str, &str, &str, Counter)] = &[
        (
            name::OPEN_SOCKETS,
            "gauge",
            "Client sockets held by the shard, in any phase.",
            |s| &s.open_sockets,
        ),
        (
            name::CONNECTIONS_ACCEPTED_TOTAL,
            "counter",
            "TCP connections adopted by the shard.",
            |s| &s.accepted,
        ),
        (
            name::CONNECTIONS_CLOSED_TOTAL,
            "counter",
            "TCP connections closed by the shard.",
            |s| &s.closed,
        ),
        (
            name::HTTP_RESPONSES_TOTAL,
            "counter",
            "Non-101 HTTP responses sent (pages, health, errors).",
            |s| &s.http_responses,
        ),
        (
            name::HANDSHAKE_TIMEOUTS_TOTAL,
            "counter",
            "Connections that did not send a request head in time.",
            |s| &s.handshake_timeouts,
        ),
        (
            name::RECEIVED_BYTES_TOTAL,
            "counter",
            "Bytes read from client sockets.",
            |s| &s.bytes_in,
        ),
        (
            name::SENT_BYTES_TOTAL,
            "counter",
            "Bytes written to client sockets.",
            |s| &s.bytes_out,
        ),
        (
            name::MESSAGES_RECEIVED_TOTAL,
            "counter",
            "WebSocket data messages received.",
            |s| &s.messages_in,
        ),
        (
            name::MESSAGES_SENT_TOTAL,
            "counter",
            "WebSocket data messages queued to clients (chat, relayed and echoed).",
            |s| &s.messages_out,
        ),
        (
            name::CROSS_SHARD_MESSAGES_RECEIVED_TOTAL,
            "counter",
            "Messages taken from the shard's inbox.",
            |s| &s.xshard_received,
        ),
        (
            name::WAKEUPS_TOTAL,
            "counter",
            "Times the shard was woken by another thread.",
            |s| &s.wakeups,
        ),
        (
            name::OUTBOX_FULL_TOTAL,
            "counter",
            "Loop turns that ended with cross-shard messages still queued (inbox full).",
            |s| &s.outbox_full,
        ),
        (
            name::RATE_LIMITED_MESSAGES_TOTAL,
            "counter",
            "Client messages dropped by the rate limit.",
            |s| &s.rate_limited,
        ),
        (
            name::SLOW_CONSUMER_CLOSES_TOTAL,
            "counter",
            "Connections closed for not reading (outbound cap).",
            |s| &s.slow_consumer_closes,
        ),
        (
            name::IDLE_TIMEOUTS_TOTAL,
            "counter",
            "Connections closed for not answering an idle ping.",
            |s| &s.idle_timeouts,
        ),
        (
            name::OUTBOUND_QUEUE_BYTES,
            "gauge",
            "Bytes queued for clients that were not yet written (sampled at each timer sweep, at most a second apart).",
            |s| &s.out_queue_bytes,
        ),
        (
            name::LOOP_ITERATIONS_TOTAL,
            "counter",
            "Event-loop turns.",
            |s| &s.loop_turns,
        ),
        (
            name::UPGRADES_CHAT_TOTAL,
            "counter",
            "WebSocket upgrades on /ws.",
            |s| &s.upgrades_chat,
        ),
        (
            name::UPGRADES_ECHO_TOTAL,
            "counter",
            "WebSocket upgrades on /echo.",
            |s| &s.upgrades_echo,
        ),
        (
            name::PROXY_REFUSED_TOTAL,
            "counter",
            "Connections refused (400) for a PROXY header from an untrusted peer, or a malformed one.",
            |s| &s.proxy_refused,
        ),
        (
            name::HTTP_HEAD_PARSES_TOTAL,
            "counter",
            "Request heads given to the HTTP parser (a head in pieces is parsed when it may be complete).",
            |s| &s.head_parses,
        ),
        (
            name::MESSAGE_TIMEOUTS_TOTAL,
            "counter",
            "Fragmented messages not completed within --message-timeout (close 1008).",
            |s| &s.message_timeouts,
        ),
        (
            name::WRITE_STALLS_TOTAL,
            "counter",
            "Clients dropped (reset) for unsent output with no progress for --write-stall-timeout.",
            |s| &s.write_stalls,
        ),
        (
            name::OUTPUT_BUDGET_CLOSES_TOTAL,
            "counter",
            "Clients with a backlog closed (1008) because --output-budget-bytes was used up.",
            |s| &s.output_budget_closes,
        ),
        (
            name::BACKPRESSURE_PAUSES_TOTAL,
            "counter",
            "Times a client was not read because a queue to another thread was full.",
            |s| &s.backpressure_pauses,
        ),
        (
            name::BACKPRESSURE_CLOSES_TOTAL,
            "counter",
            "Clients closed (1013) because a queue to another thread stayed full past --thread-queue-timeout.",
            |s| &s.backpressure_closes,
        ),
    ];
    for &(name, kind, help, get) in per_shard {
        let mut f = family(o, name, kind, help);
        for (i, s) in shared.shards.iter().enumerate() {
            f.sample(&format!("shard=\"{i}\""), get(s).load(Relaxed));
        }
    }
    {
        let mut f = family(
            o,
            name::RELAYED_MESSAGES_TOTAL,
            "counter",
            "Chat messages relayed to a partner, by path.",
        );
        for (i, s) in shared.shards.iter().enumerate() {
            f.sample(
                &format!("shard=\"{i}\",path=\"local\""),
                s.relayed_local.load(Relaxed),
            );
            f.sample(
                &format!("shard=\"{i}\",path=\"cross_shard\""),
                s.relayed_cross.load(Relaxed),
            );
            f.sample(
                &format!("shard=\"{i}\",path=\"cross_node\""),
                s.relayed_cluster.load(Relaxed),
            );
        }
    }
    {
        let mut f = family(
            o,
            name::CLOSE_FRAMES_SENT_TOTAL,
            "counter",
            "Close frames sent, by close code (0 = other).",
        );
        for (i, s) in shared.shards.iter().enumerate() {
            for (code, c) in CLOSE_CODES.iter().zip(&s.closes_sent) {
                f.sample(&format!("shard=\"{i}\",code=\"{code}\""), c.load(Relaxed));
            }
        }
    }
    {
        let mut f = family(
            o,
            name::CLOSE_FRAMES_RECEIVED_TOTAL,
            "counter",
            "Close frames received from clients, by close code (0 = none or other).",
        );
        for (i, s) in shared.shards.iter().enumerate() {
            for (code, c) in CLOSE_CODES.iter().zip(&s.closes_received) {
                f.sample(&format!("shard=\"{i}\",code=\"{code}\""), c.load(Relaxed));
            }
        }
    }
    {
        let mut f = family(
            o,
            name::HTTP_RESPONSES_BY_STATUS_TOTAL,
            "counter",
            "Non-101 HTTP responses by status (0 = other): refused handshakes by reason.",
        );
        for (i, s) in shared.shards.iter().enumerate() {
            for (code, c) in HTTP_CODES.iter().zip(&s.http_by_code) {
                f.sample(&format!("shard=\"{i}\",code=\"{code}\""), c.load(Relaxed));
            }
        }
    }
    admission_metrics(o, shared);
    {
        // Time to match, over all shards.
        let mut total: Vec<u64> = Vec::new();
        let mut sum = 0.0;
        for st in &shared.shards {
            let (c, s) = st.match_wait.snapshot();
            total.resize(c.len(), 0);
            for (t, v) in total.iter_mut().zip(c) {
                *t += v;
            }
            sum += s;
        }
        let bounds = shared
            .shards
            .first()
            .map(|s| &s.match_wait.bounds()[..])
            .unwrap_or(&[]);
        let mut f = family(
            o,
            name::MATCH_WAIT_SECONDS,
            "histogram",
            "Time from find/next to paired, as the client sees it.",
        );
        histogram(&mut f, "", bounds, &total, sum);
    }
    {
        let mut f = family(
            o,
            name::LOOP_ITERATION_SECONDS,
            "histogram",
            "Busy time of one event-loop turn (after poll returns), by shard.",
        );
        for (i, st) in shared.shards.iter().enumerate() {
            let (c, s) = st.loop_time.snapshot();
            histogram(
                &mut f,
                &format!("shard=\"{i}\""),
                &st.loop_time.bounds()[..],
                &c,
                s,
            );
        }
    }
    cluster_metrics(o, shared);
    process_metrics(o);
    out
}

/// Admission at accept and per client address.
fn admission_metrics(o: &mut String, shared: &Shared) {
    use crate::admission::Refusal;
    use std::sync::atomic::Ordering::Relaxed;
    let a = &shared.admission.stats;
    family(
        o,
        name::OPEN_SOCKETS_ALL,
        "gauge",
        "Client sockets open in any phase, against --max-connections plus --socket-headroom.",
    )
    .sample("", shared.sockets.load(Relaxed));
    family(
        o,
        name::MAX_SOCKETS,
        "gauge",
        "Configured --max-connections plus --socket-headroom.",
    )
    .sample("", shared.config.max_sockets());
    family(
        o,
        name::ACCEPT_SOCKET_CAP_TOTAL,
        "counter",
        "Sockets closed at accept because the socket cap was reached.",
    )
    .sample("", shared.accept_socket_cap.load(Relaxed));
    let mut f = family(
        o,
        name::ADMISSION_REFUSED_TOTAL,
        "counter",
        "Connections answered 429 by a per-address limit, by reason.",
    );
    for (r, c) in Refusal::ALL.iter().zip(&a.refused) {
        f.sample(&format!("reason=\"{}\"", r.label()), c.load(Relaxed));
    }
    let mut f = family(
        o,
        name::ADMISSION_DROPPED_TOTAL,
        "counter",
        "Connections closed without an answer, far over a per-address limit, by reason.",
    );
    for (r, c) in Refusal::ALL.iter().zip(&a.dropped) {
        f.sample(&format!("reason=\"{}\"", r.label()), c.load(Relaxed));
    }
    family(
        o,
        name::ADMISSION_ADDRESSES,
        "gauge",
        "Client addresses tracked by the per-address limits.",
    )
    .sample("", a.tracked.load(Relaxed));
}

/// The Redis path (cluster mode only; a single node exports none of these).
fn cluster_metrics(o: &mut String, shared: &Shared) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(c) = &shared.cluster else { return };
    family(o, name::CLUSTER_INFO, "gauge", "This node's cluster name.")
        .sample(&format!("node=\"{}\"", shared.node_name), 1);
    let scalars: [(&'static str, &str, &str, u64); 16] = [
        (
            name::CLUSTER_REDIS_UP,
            "gauge",
            "1 while the Redis link (commands and relay subscription) is up.",
            c.up.load(Relaxed),
        ),
        (
            name::CLUSTER_NODES,
            "gauge",
            "Live nodes seen at the last heartbeat (this one included; 0 while Redis is down).",
            c.nodes.load(Relaxed),
        ),
        (
            name::CLUSTER_ONLINE_CLIENTS,
            "gauge",
            "Chat clients on every node (the online count of hello), as of the last heartbeat.",
            shared.online_count(),
        ),
        (
            name::CLUSTER_REDIS_CONNECTS_TOTAL,
            "counter",
            "Attempts to (re)connect to Redis.",
            c.connects.load(Relaxed),
        ),
        (
            name::CLUSTER_REDIS_LINK_LOSSES_TOTAL,
            "counter",
            "Times the Redis link was lost (each ends every cross-node chat of this node).",
            c.link_losses.load(Relaxed),
        ),
        (
            name::CLUSTER_REDIS_ROUNDTRIPS_TOTAL,
            "counter",
            "Redis round trips (pipelines, heartbeats).",
            c.roundtrips.load(Relaxed),
        ),
        (
            name::CLUSTER_REDIS_ERRORS_TOTAL,
            "counter",
            "Redis errors: failed connects, commands, malformed replies or payloads.",
            c.errors.load(Relaxed),
        ),
        (
            name::CLUSTER_RECORDS_SENT_TOTAL,
            "counter",
            "Records (paired, chat frames, partner_left) published to other nodes.",
            c.records_out.load(Relaxed),
        ),
        (
            name::CLUSTER_RECORDS_RECEIVED_TOTAL,
            "counter",
            "Records received from other nodes.",
            c.records_in.load(Relaxed),
        ),
        (
            name::CLUSTER_PUBLISHES_TOTAL,
            "counter",
            "PUBLISH commands (each carries a batch of records for one node).",
            c.publishes.load(Relaxed),
        ),
        (
            name::CLUSTER_PAYLOADS_RECEIVED_TOTAL,
            "counter",
            "Pub/sub payloads received (batches and ticks).",
            c.payloads_in.load(Relaxed),
        ),
        (
            name::CLUSTER_DROPPED_WHILE_DOWN_TOTAL,
            "counter",
            "Messages for Redis dropped because the link was down.",
            c.dropped_while_down.load(Relaxed),
        ),
        (
            name::CLUSTER_PAIRINGS_TOTAL,
            "counter",
            "Pairs made by the cluster queue for users of this node.",
            c.pairs.load(Relaxed),
        ),
        (
            name::CLUSTER_QUEUED_TOTAL,
            "counter",
            "Users put in the cluster queue (no partner anywhere at once).",
            c.queued.load(Relaxed),
        ),
        (
            name::CLUSTER_NODES_DOWN_TOTAL,
            "counter",
            "Other nodes seen to die (heartbeat expired).",
            c.nodes_down.load(Relaxed),
        ),
        (
            name::CLUSTER_RELAY_GAPS_TOTAL,
            "counter",
            "Relay batches found missing (the pairs with that node were ended).",
            c.gaps.load(Relaxed),
        ),
    ];
    for (name, kind, help, value) in scalars {
        family(o, name, kind, help).sample("", value);
    }
    let lost: u64 = shared
        .shards
        .iter()
        .map(|s| s.cluster_pairs_lost.load(Relaxed))
        .sum();
    family(
        o,
        name::CLUSTER_CHATS_ENDED_TOTAL,
        "counter",
        "Cross-node chats ended with partner_left because a node or the Redis link failed.",
    )
    .sample("", lost);
    let mut f = family(
        o,
        name::CLUSTER_HEARTBEAT_CLIENTS,
        "gauge",
        "Chat clients counted at the last heartbeat: on every node (all) and on this one (this_node).",
    );
    f.sample("scope=\"all\"", c.online_total.load(Relaxed));
    f.sample("scope=\"this_node\"", c.online_local_at_beat.load(Relaxed));
    let (counts, sum) = c.roundtrip_seconds.snapshot();
    let mut f = family(
        o,
        name::CLUSTER_REDIS_ROUNDTRIP_SECONDS,
        "histogram",
        "Time of one Redis round trip (a pipeline or a heartbeat).",
    );
    histogram(&mut f, "", c.roundtrip_seconds.bounds(), &counts, sum);
}

/// Write one histogram's samples: cumulative buckets, `+Inf`, sum and count.
fn histogram(f: &mut Family<'_>, labels: &str, bounds: &[f64], counts: &[u64], sum: f64) {
    let name = f.name;
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    let mut line = |suffix: &str, extra: &str, value: String| {
        use std::fmt::Write as _;
        let all = format!("{labels}{}{extra}", if extra.is_empty() { "" } else { sep });
        if all.is_empty() {
            let _ = writeln!(f.out, "{name}{suffix} {value}");
        } else {
            let _ = writeln!(f.out, "{name}{suffix}{{{all}}} {value}");
        }
    };
    for (b, c) in bounds.iter().zip(counts) {
        cumulative += c;
        line("_bucket", &format!("le=\"{b}\""), cumulative.to_string());
    }
    cumulative += counts.get(bounds.len()).copied().unwrap_or(0);
    line("_bucket", "le=\"+Inf\"", cumulative.to_string());
    line("_sum", "", sum.to_string());
    line("_count", "", cumulative.to_string());
}

/// The standard process_* metrics, from /proc (Linux).
fn process_metrics(o: &mut String) {
    // SAFETY: sysconf and getrlimit only read process information.
    #[allow(unsafe_code)]
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (ticks, page) = (ticks.max(1) as f64, page.max(1) as f64);
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name, which may itself contain spaces.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Index 0 here is field 3 (state) of proc(5).
        let cpu = (num(11) + num(12)) / ticks;
        family(
            o,
            name::PROCESS_CPU_SECONDS_TOTAL,
            "counter",
            "Total user and system CPU time spent in seconds.",
        )
        .sample("", cpu);
        family(
            o,
            name::PROCESS_THREADS,
            "gauge",
            "Number of OS threads in the process.",
        )
        .sample("", num(17));
        family(
            o,
            name::PROCESS_VIRTUAL_MEMORY_BYTES,
            "gauge",
            "Virtual memory size in bytes.",
        )
        .sample("", num(20));
        family(
            o,
            name::PROCESS_RESIDENT_MEMORY_BYTES,
            "gauge",
            "Resident memory size in bytes.",
        )
        .sample("", num(21) * page);
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("btime ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
        });
        if let Some(btime) = btime {
            family(
                o,
                name::PROCESS_START_TIME_SECONDS,
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            )
            .sample("", btime + num(19) / ticks);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        family(
            o,
            name::PROCESS_OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
        )
        .sample("", dir.count());
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    #[allow(unsafe_code)]
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got == 0 {
        family(
            o,
            name::PROCESS_MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
        )
        .sample("", lim.rlim_cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    /// Every counter in the stats structs reaches the exposition: each is set alone to a value
    /// no other sample has, and must show up in some sample (alone, or summed with zeros).
    #[test]
    fn every_counter_is_exported() {
        let shared = Shared::new(Config::defaults(), 2, true, "n".into());
        let mut all: Vec<(String, &AtomicU64)> = Vec::new();
        for (i, s) in shared.shards.iter().enumerate() {
            s.each(|name, c| all.push((format!("shard {i} {name}"), c)));
        }
        shared
            .matcher
            .each(|name, c| all.push((format!("matchmaker {name}"), c)));
        if let Some(c) = &shared.cluster {
            c.each(|name, c| all.push((format!("cluster {name}"), c)));
        }
        let a = &shared.admission.stats;
        for (i, c) in a.refused.iter().chain(&a.dropped).enumerate() {
            all.push((format!("admission {i}"), c));
        }
        all.push(("admission tracked".into(), &a.tracked));
        all.push(("accept errors".into(), &shared.accept_errors));
        all.push(("accept overload".into(), &shared.accept_overload));
        all.push(("accept socket cap".into(), &shared.accept_socket_cap));
        assert!(all.len() > 100, "{} counters", all.len());
        const MARK: u64 = 987_654_321;
        let mut missing = Vec::new();
        for (what, c) in &all {
            c.store(MARK, Relaxed);
            let text = render(&shared);
            let shown = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .any(|l| l.rsplit(' ').next() == Some(&MARK.to_string()));
            if !shown {
                missing.push(what.clone());
            }
            c.store(0, Relaxed);
        }
        assert!(missing.is_empty(), "not in /metrics: {missing:?}");
    }
}
