//! HTTP/1.1 request heads and canned responses: pure, no sockets.
pub mod request;
pub mod response;

pub use request::{handle_request, Endpoint, HttpContext, HttpOutcome};
pub use response::{accept_key, timeout_response};
