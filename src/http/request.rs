//! Parse a request head (httparse) and decide the whole answer: a canned response, or an upgrade.

/// What the server knows when it answers a request.
#[derive(Debug, Clone, Copy)]
pub struct HttpContext<'a> {
    /// Longest request head accepted (PROTOCOL.md `--max-head-bytes`, 8192).
    pub max_head_bytes: usize,
    /// `/echo` is routed only when `--enable-echo` was given.
    pub echo_enabled: bool,
    /// Shutting down: `/healthz` and upgrades answer 503.
    pub draining: bool,
    /// The connection limit is reached: upgrades answer 503.
    pub at_capacity: bool,
    /// `--allowed-origin` values; empty = any Origin.
    pub allowed_origins: &'a [String],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`, the chat protocol.
    Chat,
    /// `/echo`, echo of every data message.
    Echo,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HttpOutcome {
    /// The head is not complete yet and still under the size limit: read more.
    Incomplete,
    /// A complete non-101 response (with `Content-Length` and `Connection: close`); the server
    /// sends it and closes gracefully.
    Reply(Vec<u8>),
    /// A valid WebSocket upgrade: send `response` (the 101); bytes of `buf` after `head_len`
    /// already belong to the WebSocket stream.
    Upgrade { endpoint: Endpoint, head_len: usize, response: Vec<u8> },
}

/// Decide what to do with the bytes received so far on a new connection.
pub fn handle_request(buf: &[u8], ctx: &HttpContext<'_>) -> HttpOutcome {
    let _ = (buf, ctx);
    todo!()
}
