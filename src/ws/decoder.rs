//! Streaming frame decoder: accepts bytes in arbitrary splits, unmasks in place, validates
//! UTF-8 incrementally, and reports events. Holds only a few dozen bytes of state.
use super::error::WsError;

/// What the decoder found. Slices point into the caller's (unmasked) input buffer, or for a
/// control frame split across reads, into the decoder's small control buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A piece of a data message. `first`: the first piece of the message (carries its type);
    /// `last`: the message is complete after this piece. An empty message is one event with
    /// `first && last` and an empty payload. Text payloads are already UTF-8 checked
    /// (a piece may end inside a multi-byte character; the whole message is valid when `last`).
    Data { payload: &'a [u8], text: bool, first: bool, last: bool },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A valid close frame. `code` is `None` when the payload was empty.
    Close { code: Option<u16>, reason: &'a str },
}

#[derive(Debug, Default)]
pub struct Decoder {
    _todo: (),
}

impl Decoder {
    /// A server-side decoder: every client frame must be masked (RFC 6455 §5.1).
    pub fn new() -> Self {
        todo!()
    }
    /// A client-side decoder (load generator, tests): frames must be unmasked.
    pub fn client() -> Self {
        todo!()
    }
    /// Decode `input` completely, unmasking it in place, calling `on_event` for each event in
    /// wire order. `max_message_bytes` bounds a whole (reassembled) data message; control
    /// frames are bounded by the RFC (125 bytes). If `on_event` returns `false`, decoding stops
    /// at once and returns `Ok(())`; the decoder must not be fed again. Errors are
    /// reported as soon as the offending byte is seen (header rules at header time, bad UTF-8
    /// in the middle of a frame), after every event that preceded it.
    pub fn decode<F>(&mut self, input: &mut [u8], max_message_bytes: usize, on_event: F) -> Result<(), WsError>
    where
        F: FnMut(Event<'_>) -> bool,
    {
        let _ = (input, max_message_bytes, on_event);
        todo!()
    }
    /// True while a fragmented data message is open (between its first and last frame).
    pub fn in_message(&self) -> bool {
        todo!()
    }
}
