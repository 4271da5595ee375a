//! Protocol v1 messages (../shared/PROTOCOL.md): parsing and validation of client messages,
//! JSON encoding of server messages.
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg<'a> {
    /// Interests trimmed, lower-cased, de-duplicated (first occurrence order kept).
    Find { interests: Vec<String> },
    /// Text already trimmed and within the limit.
    Message { text: Cow<'a, str> },
    Typing { active: bool },
    Next,
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    NotChatting,
    TooLong,
    Empty,
    BadInterests,
    RateLimited,
}

impl ErrorCode {
    /// The wire code, e.g. `"bad_json"`.
    pub fn as_str(self) -> &'static str {
        todo!()
    }
    /// A human-readable sentence for the `message` field.
    pub fn sentence(self) -> &'static str {
        todo!()
    }
}

/// Parse and fully validate one client text message (the JSON of one WebSocket text message).
pub fn parse_client_message(json: &[u8], max_text_chars: usize) -> Result<ClientMsg<'_>, ErrorCode> {
    let _ = (json, max_text_chars);
    todo!()
}

/// Append the JSON of a server message to `out`.
pub fn write_hello(out: &mut Vec<u8>, online: u64) {
    let _ = (out, online);
    todo!()
}
pub fn write_waiting(out: &mut Vec<u8>) {
    let _ = out;
    todo!()
}
/// `common` is already sorted.
pub fn write_paired(out: &mut Vec<u8>, common: &[String]) {
    let _ = (out, common);
    todo!()
}
pub fn write_message(out: &mut Vec<u8>, text: &str) {
    let _ = (out, text);
    todo!()
}
pub fn write_typing(out: &mut Vec<u8>, active: bool) {
    let _ = (out, active);
    todo!()
}
pub fn write_partner_left(out: &mut Vec<u8>) {
    let _ = out;
    todo!()
}
pub fn write_error(out: &mut Vec<u8>, code: ErrorCode) {
    let _ = (out, code);
    todo!()
}
