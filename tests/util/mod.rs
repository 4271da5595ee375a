//! Shared helpers for the integration tests, one module per concern. Each `tests/*.rs` does
//! `mod util; use util::*;`, so everything is re-exported here.
//!
//! Every read has a deadline; nothing sleeps to synchronise except where the protocol itself
//! is about time (interest wait, idle ping, rate limit, grace period).

// Each test binary compiles all of these but uses a different part of them, so dead code is
// allowed per module and an unused re-export per line, rather than item by item.
#[allow(dead_code)]
mod chat;
#[allow(dead_code)]
mod frames;
#[allow(dead_code)]
mod http;
#[allow(dead_code)]
mod procfs;
#[allow(dead_code)]
mod redis;
#[allow(dead_code)]
mod server;
#[allow(dead_code)]
mod sockets;
#[allow(dead_code)]
mod tempdir;
#[allow(dead_code)]
mod ws;

#[allow(unused_imports)]
pub use chat::*;
#[allow(unused_imports)]
pub use frames::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use procfs::*;
#[allow(unused_imports)]
pub use redis::*;
#[allow(unused_imports)]
pub use server::*;
#[allow(unused_imports)]
pub use sockets::*;
#[allow(unused_imports)]
pub use tempdir::*;
#[allow(unused_imports)]
pub use ws::*;
