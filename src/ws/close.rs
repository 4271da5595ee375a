//! Close codes: which a peer may send (RFC 6455 §7.4), and close payload parsing.

/// Codes a peer may put in a close frame: 1000–1003, 1007–1011, 3000–4999.
pub fn is_valid_close_code(code: u16) -> bool {
    let _ = code;
    todo!()
}
