//! Command line: one subcommand per scenario, common flags flattened into each.
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;

const LONG_ABOUT: &str = "\
Load generator for the roulette chat server. Speaks the chat protocol (PROTOCOL.md) over
WebSocket from many non-blocking clients: each thread runs one mio event loop, frames are
pre-encoded and pre-masked, and each connection's frames are written with one write per loop
turn, so that the generator is not the bottleneck.

Every scenario is bounded (--connections, --duration, --timeout) and stops by itself. It prints
a progress line on stderr every second (a plain line every 5 s when stderr is not a terminal),
a human summary on stderr at the end, a JSON summary with --json FILE (--json - for stdout) and
a latency plot with --plot FILE.svg. The exit code is 0 only if no error occurred (or at most
--max-errors) and no message was lost, duplicated or reordered.

Scaling past one process: a process holds at most as many connections as its open-file limit
allows (the soft RLIMIT_NOFILE is raised to the hard limit at start; 20000 here). With
--processes N the command re-executes itself N times, each child taking an equal share of the
connections (and of the rate), all children start their measured phase at the same instant,
and the parent merges their counters and raw HDR histogram counts into one summary. One
source address reaches at most one ephemeral port range (about 28k ports here) per
destination: spread connections over several loopback addresses with --sources N
(127.0.0.2, 127.0.0.3, ...) or --source-addrs A,B (bound with IP_BIND_ADDRESS_NO_PORT).

Several nodes: --url takes several URLs (--url A,B or --url A --url B; all /ws, or all /echo
for echo). Client i, counted over every thread and process, connects to URL i mod N. With
--pair-tags (idle, relay, churn, pairing) clients 2k and 2k+1 both send find with the one
interest \"lt<k>-<run id>\", so the server pairs exactly those two; with two URLs every pair then has
one client on each node, which measures relay between two nodes of a cluster. A client paired
otherwise counts a wrong_partner error. The summary gives urls, connections per URL, pairs
and pairs_cross_url (null without --pair-tags).

Pairing capacity: `loadtest pairing` offers new strangers at a series of rates (one step per
rate), each stranger connecting, pairing, exchanging one message each way and closing, and
reports per step the achieved pairings/s, the time to pair (p50/p99), errors and timeouts and,
with --server-pid/--redis-pid, CPU per pairing; it names the knee (the highest rate sustained)
and draws it with --plot. See `loadtest pairing --help`.

Examples:
  loadtest idle -c 15000 --processes 2 --sources 4 --server-pid $(pidof roulette)
  loadtest relay -c 10000 -d 20 --in-flight 1 --sources 4 --server-pid $(pidof roulette)
  loadtest relay -c 2000 -d 30 --rate 50000 --plot latency.svg --json out.json
  loadtest churn --rate 100 -d 3600
  loadtest relay -c 2000 -d 20 --url ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws --pair-tags
  loadtest echo -c 100 -d 10 --message-bytes 65536 --url ws://127.0.0.1:8080/echo
  loadtest pairing --rates 250,500,1000,2000 --url ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws \
      --pair-tags --server-pid $PID1,$PID2 --redis-pid $(pidof redis-server) --plot knee.svg";

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator for the roulette chat server (scenarios: idle, relay, churn, echo, pairing)",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cmd {
    /// N clients connect, find a stranger, pair and hold; reports the connect rate, the
    /// time to pair and (with --server-pid) the server's resident memory per connection.
    #[command(long_about = "\
N clients connect, send find, get paired and hold the connection for --duration seconds
(answering server pings). Reports the connect+handshake rate and latency, the pair wait, and,
with --server-pid, the server's resident memory per connection: VmRSS of /proc/PID/status is
read before connecting (baseline) and after all clients are paired and have been held for
--duration; the summary gives (rss_after - rss_before) / paired connections.")]
    Idle(IdleArgs),
    /// Paired clients exchange chat messages, closed-loop (--in-flight) or open-loop at a
    /// fixed aggregate rate (--rate, latency corrected for coordinated omission).
    #[command(long_about = "\
N clients connect and pair; then, all at the same instant, every client sends chat messages to
its partner for --duration seconds. Each message text is \"<seq> <intended_ns> <sent_ns>\"
(CLOCK_MONOTONIC, shared by all processes of the machine) padded with 'x' to --message-bytes
characters; the receiver records the one-way latency in an HDR histogram and checks that every
message arrives exactly once and in order. At the end each client sends an end marker with
the number of messages it sent, so the partner can count lost messages, and closes once both
end markers are through.

Closed-loop (default): each client starts --in-flight messages and answers every message it
receives with its next one, so each pair keeps 2 x in-flight messages circulating.
Open-loop (--rate R): all clients together send R messages/s on a fixed schedule regardless of
replies; latency is measured from the intended send time (as wrk2 does, correcting for
coordinated omission) and also, uncorrected, from the actual send time.")]
    Relay(RelayArgs),
    /// Clients join at --rate per second for --duration, pair, chat a few messages and
    /// leave; verifies partner_left and message integrity (for soak runs).
    #[command(long_about = "\
Clients join at --rate per second for --duration seconds. Each one connects, sends find, gets
paired, exchanges --messages chat messages with its partner (ping-pong) plus an end marker,
then one of the two leaves (alternately by a leave message followed by a close, or by a close
alone) and the other must receive partner_left after every message, then closes. Verifies
that every message arrived exactly once and in order and that partner_left came, and only
after the partner's last message. Connections stay short, so this can run for hours.")]
    Churn(ChurnArgs),
    /// Clients send messages of any size to the /echo endpoint (closed-loop, or open-loop
    /// with --rate) and measure the round trip.
    #[command(long_about = "\
N clients connect to the echo endpoint (server started with --enable-echo; default URL path
/echo) and, after all are connected, send messages of --message-bytes bytes (text, or binary
with --binary) for --duration seconds: closed-loop with --in-flight messages per connection,
or open-loop at --rate messages/s in total. Reports the round-trip latency and checks that
every echo comes back whole, once and in order.")]
    Echo(EchoArgs),
    /// Sweep offered pairing rates: strangers join, pair, exchange one message each way and
    /// leave; reports achieved pairings/s, time to pair, CPU per pairing and the knee.
    #[command(long_about = PAIRING_ABOUT)]
    Pairing(PairingArgs),
}

const PAIRING_ABOUT: &str = "\
Measure how many pairings per second a deployment sustains. The sweep runs one step per offered
rate (--rates R1,R2,... or a geometric series --from R --to R --steps N), in increasing order.
A rate is in pairings per second: 2 x R new strangers join per second. In a step, strangers join
on a fixed schedule for --warmup + --step-duration seconds; each one connects, sends find,
waits for paired, sends one chat message, waits for its partner's, and closes (so the number of
open connections stays bounded by rate x lifetime). The step then drains: every stranger still
open finishes or times out, so steps do not overlap.

Only the last --step-duration seconds of a step are measured (the window; the warm-up lets the
server reach its steady state). Per step:
  offered      the scheduled rate (pairings/s)
  achieved     (strangers that received paired inside the window) / 2 / window seconds
  time to pair find sent -> paired received (HDR histogram) of the strangers that joined
               inside the window; a stranger not paired within --pair-timeout is a
               timeout_pair error and counts with the time it waited, so p99 cannot hide it
  errors       every error kind of the other scenarios, plus skipped_join (a join fell due
               while the process already held --max-open connections)
  CPU          with --server-pid PID[,PID...] (one per node) and --redis-pid PID: CPU seconds
               (utime + stime of /proc/PID/stat) each used inside the window, and per pairing
               (CPU seconds / pairings achieved in the window)

A step is SUSTAINED when achieved >= --min-ratio x offered, p99 time to pair <= --p99-limit
and its errors <= --max-errors (default 0). The KNEE is the highest step such that it and every
lower step are sustained (none if the first step is not). By default the sweep stops after the
first step that is not sustained (--keep-going runs every step).

Cluster: with several --url (one per node) and --pair-tags, strangers 2k and 2k+1 join at the
same instant on different nodes with one interest of their own, so that no stranger can pair on
its own node: against nodes run with --cluster-hold 0 every pairing goes through the Redis
cluster queue. Each pair checks that its partner is the intended one (wrong_partner otherwise).

Output: a line per step and a table on stderr, --json FILE (every step, the knee and its
definition), --plot FILE.svg (achieved vs offered with the ideal diagonal, p50/p99 time to pair
against --p99-limit, the knee marked). --processes N and --sources N work as for the other
scenarios (each step's strangers are spread over the processes). Exit code: 0 when every step
that ran was clean (errors <= --max-errors, no child process lost, nothing aborted), 1
otherwise, 2 for a usage or setup error.";

#[derive(Args, Debug, Clone, Serialize)]
pub struct IdleArgs {
    /// Number of client connections (in total, over all processes).
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold all paired connections before measuring the server and closing.
    #[arg(short = 'd', long, default_value_t = 2.0)]
    pub duration: f64,
    /// Pair clients 2k and 2k+1 (counted over the whole run) with each other: both send find
    /// with the one interest "lt<k>-<run id>". With two URLs every pair spans both.
    #[arg(long)]
    pub pair_tags: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct RelayArgs {
    /// Number of client connections (in total; made even so that everyone has a partner).
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds of message exchange (counted once every client is paired).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Closed loop: messages each client keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub in_flight: u32,
    /// Open loop: aggregate messages per second over all clients (disables --in-flight).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Characters of chat text per message (at least 50: the sequence number and timestamps).
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,
    /// Pair clients 2k and 2k+1 (counted over the whole run) with each other: both send find
    /// with the one interest "lt<k>-<run id>". With two URLs every pair spans both.
    #[arg(long)]
    pub pair_tags: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct ChurnArgs {
    /// New clients per second (in total).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds during which clients join.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Chat messages each client sends before leaving.
    #[arg(long, default_value_t = 5)]
    pub messages: u32,
    /// Characters of chat text per message (at least 50).
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,
    /// Join clients two at a time and pair each two with each other: joins 2k and 2k+1
    /// (counted over the whole run) both send find with the one interest "lt<k>-<run id>".
    /// With two URLs every pair spans both.
    #[arg(long)]
    pub pair_tags: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct EchoArgs {
    /// Number of client connections (in total).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: usize,
    /// Seconds of message exchange (counted once every client is connected).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Closed loop: messages each connection keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub in_flight: u32,
    /// Open loop: aggregate messages per second over all connections.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Bytes per message (at least 50; up to the server's echo limit, 16 MiB by default).
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct PairingArgs {
    /// Offered pairings per second of each step, increasing, comma-separated (2 strangers
    /// join per pairing). Instead of --from/--to/--steps.
    #[arg(long, value_delimiter = ',', value_name = "R[,R...]", conflicts_with_all = ["from", "to", "steps"])]
    pub rates: Vec<f64>,
    /// First rate (pairings/s) of a geometric series of --steps rates up to --to.
    #[arg(long, default_value_t = 100.0)]
    pub from: f64,
    /// Last rate (pairings/s) of the geometric series.
    #[arg(long, default_value_t = 3200.0)]
    pub to: f64,
    /// Number of rates of the geometric series (--from, --to and rates spaced evenly on a
    /// log scale between them; 100 to 3200 in 6 steps doubles each time).
    #[arg(long, default_value_t = 6)]
    pub steps: usize,
    /// Seconds measured per step (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub step_duration: f64,
    /// Seconds of joins at the step's rate before its measured window starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds a stranger waits for paired before it counts as a timeout_pair error (keep it
    /// at most the server's --interest-wait with --pair-tags, or a late partner is replaced
    /// by someone else).
    #[arg(long, default_value_t = 5.0)]
    pub pair_timeout: f64,
    /// Knee: the highest p99 time to pair (seconds) of a sustained step.
    #[arg(long, default_value_t = 1.0)]
    pub p99_limit: f64,
    /// Knee: the lowest achieved/offered ratio of a sustained step.
    #[arg(long, default_value_t = 0.95)]
    pub min_ratio: f64,
    /// Run every step, even after one that is not sustained.
    #[arg(long)]
    pub keep_going: bool,
    /// Connections one process holds at most; a join that falls due beyond it is skipped
    /// (counted as a skipped_join error). Default: the open-file limit minus a reserve.
    #[arg(long)]
    pub max_open: Option<usize>,
    /// Strangers 2k and 2k+1 join together and find each other by one interest of their
    /// own, "lt<k>-<step run id>"; with several URLs every pair spans two nodes.
    #[arg(long)]
    pub pair_tags: bool,
    /// PID of the Redis server (on this machine): its CPU per step and per pairing.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Characters of the chat message each stranger sends (at least 50).
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,
    #[command(flatten)]
    pub common: Common,
    /// Internal: the step a child process runs (set by --processes).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub step_index: Option<usize>,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct Common {
    /// Server URL (ws:// only). Several nodes: repeat --url or separate with commas; client
    /// i (counted over all threads and processes) connects to URL i mod N. All URLs must name
    /// the same endpoint. Default ws://127.0.0.1:8080/ws, or .../echo for `echo`.
    #[arg(long, value_name = "URL[,URL...]")]
    pub url: Vec<String>,
    /// Event-loop threads per process. Default: number of cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Processes to split the connections over (to go past one process's fd limit).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Local source addresses to spread connections over, comma-separated
    /// (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, value_delimiter = ',', conflicts_with = "sources")]
    pub source_addrs: Vec<IpAddr>,
    /// Use N loopback source addresses 127.0.0.2, 127.0.0.3, ... (shorthand for --source-addrs).
    #[arg(long)]
    pub sources: Option<u8>,
    /// Seconds allowed for each wait: connect+handshake, pairing, draining, closing.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Connections allowed in the connect/handshake stage at once, in total over all threads
    /// and processes (keep it under the server's listen backlog, or SYNs get dropped and
    /// retried after 1 s).
    #[arg(long, default_value_t = 64)]
    pub max_connecting: usize,
    /// New connections per second in total during setup (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Write the JSON summary to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the latency distribution (percentile spectrum) into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// PID of the server (on this machine): report its CPU time and resident memory.
    /// `pairing` takes one per node (repeat it, or separate with commas).
    #[arg(long, value_delimiter = ',', value_name = "PID")]
    pub server_pid: Vec<u32>,
    /// Tolerate up to N errors (exit 0 if nothing was lost); abort the run when exceeded.
    /// Without it any error makes the exit code non-zero. `pairing`: per step, and a step is
    /// never aborted (its errors are what it measures).
    #[arg(long)]
    pub max_errors: Option<u64>,
    /// No progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Internal: index of this child process (set by --processes).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub child_index: Option<usize>,
    /// Internal: number of child processes.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub child_count: Option<usize>,
    /// Internal: the run id of the pair tags (the parent's, passed to its children).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub run_id: Option<String>,
}
