//! roulette: an anonymous one-to-one WebSocket chat server on sharded mio event loops.
//!
//! Module map (see ARCHITECTURE.md):
//! - [`ws`], [`http`], [`chat`]: pure code (no sockets, threads or clock) — the unit-test and
//!   fuzz surface. [`chat::session`] holds one connection's chat rules, [`chat::matchmaker`]
//!   the pairing rules.
//! - [`shard`]: the only place that owns client sockets and calls `poll`/`read`/`write`;
//!   [`shard::conn`] is a connection's phase machine.
//! - [`xshard`]: the messages between threads ([`xshard::ShardMsg`], [`xshard::PeerMsg`],
//!   [`xshard::MatchReq`]), shard handles (channel + `mio::Waker`) and outboxes. The other
//!   threads (acceptor, matchmaker, cluster bridge and subscriber) hold crossbeam channels
//!   too, but every message a shard receives is defined here.
//! - [`matchhost`]: the matchmaker thread.
//! - [`cluster`]: cluster mode — the Redis bridge and subscriber threads, the pure cluster
//!   queue policy ([`cluster::queue`]) and wire format ([`cluster::wire`]).
//! - [`server`], [`acceptor`]: thread lifecycle and the accept loop.
// `unsafe` is denied everywhere; the two libc calls for resource limits and /proc units opt
// in locally with a SAFETY comment. The codec, HTTP and chat code have none.
#![deny(unsafe_code)]

pub mod acceptor;
pub mod admission;
pub mod assets;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod http;
pub mod logging;
pub mod matchhost;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod server;
pub mod shard;
pub mod sys;
pub mod ws;
pub mod xshard;

/// The release version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision this binary was built from (`unknown` outside a checkout).
pub const REVISION: &str = env!("ROULETTE_REVISION");
/// What `--version` prints after the program name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("ROULETTE_REVISION"),
    ")"
);
