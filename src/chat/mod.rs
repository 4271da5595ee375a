//! The chat rules: pure state, testable without sockets or threads.
pub mod matchmaker;
pub mod protocol;
pub mod ratelimit;
pub mod session;
