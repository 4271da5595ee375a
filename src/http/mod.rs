//! HTTP/1.1 request heads and canned responses: pure, no sockets.
pub mod request;
pub mod response;

pub use request::{handle_request, may_end_head, Endpoint, HttpContext, HttpOutcome};
pub use response::{accept_key, timeout_response};
