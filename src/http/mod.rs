//! HTTP/1.1 request heads and canned responses, and the client address behind proxies: pure,
//! no sockets.
pub mod proxy;
pub mod request;
pub mod response;

pub use request::{
    handle_request, header_values, may_end_head, Endpoint, HttpContext, HttpOutcome,
};
pub use response::{accept_key, timeout_response, too_many_requests};
