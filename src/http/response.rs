//! Canned responses and the WebSocket accept key.

/// `base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let _ = key;
    todo!()
}

/// `408 Request Timeout`, sent when the head did not arrive within the handshake timeout.
pub fn timeout_response() -> Vec<u8> {
    todo!()
}
