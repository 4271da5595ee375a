//! Streaming frame decoder: accepts bytes in arbitrary splits, unmasks in place, validates
//! UTF-8 incrementally, and reports events. Holds only a few dozen bytes of state.
//!
//! Every header rule is checked at header time, before a payload byte is delivered or
//! buffered: the rules visible in the first two bytes (reserved bits, opcode, control `fin`,
//! masking, fragmentation state) as soon as those two bytes are in, the rest (control length,
//! 64-bit length MSB, message size limit) when the whole header is in. Data payloads are never
//! copied: each piece is unmasked in the caller's buffer and handed out as a slice of it. Only
//! a control frame whose payload is split across `decode` calls is copied, into a 125-byte
//! buffer allocated for that frame and freed when it is delivered.
use super::close::parse_close_payload;
use super::error::WsError;
use super::frame::{header_len, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::{apply_mask, rotate_mask};
use super::utf8::Utf8Validator;

/// What the decoder found. Slices point into the caller's (unmasked) input buffer, or for a
/// control frame split across reads, into the decoder's small control buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A piece of a data message. `first`: the first piece of the message (carries its type);
    /// `last`: the message is complete after this piece. An empty message is one event with
    /// `first && last` and an empty payload. Text payloads are already UTF-8 checked
    /// (a piece may end inside a multi-byte character; the whole message is valid when `last`).
    Data {
        payload: &'a [u8],
        text: bool,
        first: bool,
        last: bool,
    },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A valid close frame. `code` is `None` when the payload was empty.
    Close {
        code: Option<u16>,
        reason: &'a str,
    },
}

/// Payload of a control frame that arrived in more than one `decode` call.
#[derive(Debug)]
struct ControlBuf {
    len: u8,
    data: [u8; MAX_CONTROL_PAYLOAD],
}

// `Decoder::flags` bits.
/// Client role: frames must be unmasked. Clear (the `Default`) is the server role.
const CLIENT: u8 = 1 << 0;
/// The current frame's header is complete; `remaining` payload bytes follow.
const PAYLOAD: u8 = 1 << 1;
/// The current frame has FIN set.
const FIN: u8 = 1 << 2;
/// A text message is open (its first frame was seen, its final frame not yet complete).
const MSG_TEXT: u8 = 1 << 3;
/// A binary message is open.
const MSG_BINARY: u8 = 1 << 4;
/// The open message has not yet reported a piece, so the next `Data` event has `first`.
const FIRST_PENDING: u8 = 1 << 5;
/// An error was returned or `on_event` asked to stop: later input is ignored.
const STOPPED: u8 = 1 << 6;

/// Streaming decoder state (40 bytes; `Default` is a server-role decoder at a frame boundary).
#[derive(Debug, Default)]
pub struct Decoder {
    /// Payload bytes of the current frame not yet seen (payload phase). A data frame never
    /// exceeds the message limit (checked at header time) and a control frame 125 bytes, and
    /// the limit is at most `u32::MAX`: 32 bits hold it.
    remaining: u32,
    /// Declared size of the open data message so far, including the current frame.
    msg_bytes: u32,
    /// Only while a control frame's payload is split across `decode` calls.
    ctrl: Option<Box<ControlBuf>>,
    /// Header bytes received so far (header phase).
    spill: [u8; MAX_HEADER_LEN],
    /// The current frame's mask, rotated so that it applies from the next payload byte on.
    mask: [u8; 4],
    spill_len: u8,
    /// The current frame's opcode (`OpCode::to_u8`).
    opcode: u8,
    flags: u8,
    utf8: Utf8Validator,
}

/// What a processed piece tells the loop.
type Go = Result<bool, WsError>;

impl Decoder {
    /// A server-side decoder: every client frame must be masked (RFC 6455 §5.1).
    pub fn new() -> Self {
        Decoder::default()
    }
    /// A client-side decoder (load generator, tests): frames must be unmasked.
    pub fn client() -> Self {
        Decoder {
            flags: CLIENT,
            ..Decoder::default()
        }
    }
    /// Decode `input` completely, unmasking it in place, calling `on_event` for each event in
    /// wire order. `max_message_bytes` bounds a whole (reassembled) data message; control
    /// frames are bounded by the RFC (125 bytes). If `on_event` returns `false`, decoding stops
    /// at once and returns `Ok(())`; the decoder must not be fed again. Errors are
    /// reported as soon as the offending byte is seen (header rules at header time, bad UTF-8
    /// in the middle of a frame), after every event that preceded it.
    ///
    /// After an error or a stop the decoder ignores all further input (returns `Ok(())`
    /// without events); see [`Decoder::is_stopped`].
    pub fn decode<F>(
        &mut self,
        input: &mut [u8],
        max_message_bytes: usize,
        on_event: F,
    ) -> Result<(), WsError>
    where
        F: FnMut(Event<'_>) -> bool,
    {
        if self.flags & STOPPED != 0 {
            return Ok(());
        }
        let max = u64::try_from(max_message_bytes)
            .unwrap_or(u64::MAX)
            .min(u64::from(u32::MAX));
        match self.run(input, max, on_event) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.flags |= STOPPED;
                Ok(())
            }
            Err(e) => {
                self.flags |= STOPPED;
                self.ctrl = None;
                Err(e)
            }
        }
    }
    /// True while a fragmented data message is open (between its first and last frame).
    pub fn in_message(&self) -> bool {
        self.flags & (MSG_TEXT | MSG_BINARY) != 0
    }
    /// True once `decode` returned an error or `on_event` returned `false`.
    pub fn is_stopped(&self) -> bool {
        self.flags & STOPPED != 0
    }
    /// True for a client-role decoder ([`Decoder::client`]).
    pub fn is_client(&self) -> bool {
        self.flags & CLIENT != 0
    }

    fn run<F>(&mut self, input: &mut [u8], max: u64, mut on_event: F) -> Go
    where
        F: FnMut(Event<'_>) -> bool,
    {
        let mut rest: &mut [u8] = input;
        loop {
            if self.flags & PAYLOAD == 0 && !self.take_header(&mut rest, max)? {
                return Ok(true);
            }
            // Payload phase. A zero-length frame passes here once with an empty piece.
            if self.remaining > 0 && rest.is_empty() {
                return Ok(true);
            }
            let n = (self.remaining as usize).min(rest.len());
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            if self.flags & CLIENT == 0 {
                apply_mask(piece, self.mask, 0);
                self.mask = rotate_mask(self.mask, n);
            }
            self.remaining -= n as u32;
            let frame_done = self.remaining == 0;
            if frame_done {
                self.flags &= !PAYLOAD;
            }
            let go = if self.opcode & 0x8 == 0 {
                self.data_piece(piece, frame_done, &mut on_event)?
            } else {
                self.control_piece(piece, frame_done, &mut on_event)?
            };
            if !go {
                return Ok(false);
            }
        }
    }

    /// Move header bytes from `rest` into the spill; `Ok(true)` once a whole, valid header
    /// is in and its frame has begun.
    fn take_header(&mut self, rest: &mut &mut [u8], max: u64) -> Go {
        if self.spill_len < 2 {
            self.fill_spill(rest, 2);
            let [b0, b1, ..] = self.spill;
            if self.spill_len < 2 {
                return Ok(false);
            }
            // Fail on the first two bytes, before waiting for the rest of the header.
            let (_, opcode, masked) = FrameHeader::check_prefix(b0, b1)?;
            self.check_state(opcode, masked)?;
        }
        let [_, b1, ..] = self.spill;
        let total = header_len(b1);
        self.fill_spill(rest, total);
        if usize::from(self.spill_len) < total {
            // The length rules (control ≤ 125, 64-bit MSB) fail as soon as the length is in.
            if let Some(partial) = self.spill.get(..usize::from(self.spill_len)) {
                FrameHeader::parse(partial)?;
            }
            return Ok(false);
        }
        let header = self.spill.get(..total).map(FrameHeader::parse);
        self.spill_len = 0;
        match header {
            Some(Ok(Some((h, _)))) => self.begin_frame(h, max).map(|()| true),
            Some(Err(e)) => Err(e),
            // `total` bytes always make a whole header.
            Some(Ok(None)) | None => {
                debug_assert!(false, "header of {total} bytes did not parse");
                Err(WsError::ReservedBits)
            }
        }
    }

    fn fill_spill(&mut self, rest: &mut &mut [u8], want: usize) {
        let have = usize::from(self.spill_len);
        let n = want.saturating_sub(have).min(rest.len());
        if n == 0 {
            return;
        }
        let (src, tail) = std::mem::take(rest).split_at_mut(n);
        *rest = tail;
        if let Some(dst) = self.spill.get_mut(have..have + n) {
            dst.copy_from_slice(src);
        }
        self.spill_len = (have + n) as u8;
    }

    /// The rules that depend on the role and the fragmentation state.
    fn check_state(&self, opcode: OpCode, masked: bool) -> Result<(), WsError> {
        // "The server MUST close the connection upon receiving a frame that is not masked …
        // A client MUST close a connection if it detects a masked frame" (RFC 6455 §5.1).
        match (self.flags & CLIENT != 0, masked) {
            (false, false) => return Err(WsError::UnmaskedFrame),
            (true, true) => return Err(WsError::MaskedFrame),
            _ => {}
        }
        // Fragments of one message "MUST NOT be interleaved" with another data message;
        // control frames "MAY be injected in the middle of a fragmented message"
        // (RFC 6455 §5.4).
        match opcode {
            OpCode::Continuation if !self.in_message() => Err(WsError::UnexpectedContinuation),
            OpCode::Text | OpCode::Binary if self.in_message() => {
                Err(WsError::ExpectedContinuation)
            }
            _ => Ok(()),
        }
    }

    /// Start a frame whose header passed every check but the size limit.
    fn begin_frame(&mut self, h: FrameHeader, max: u64) -> Result<(), WsError> {
        match h.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let so_far = if h.opcode == OpCode::Continuation {
                    u64::from(self.msg_bytes)
                } else {
                    0
                };
                let size = so_far.saturating_add(h.payload_len);
                if size > max {
                    return Err(WsError::MessageTooBig { size, max });
                }
                // Fits: `max` is at most u32::MAX.
                self.msg_bytes = size as u32;
                match h.opcode {
                    OpCode::Text => {
                        self.flags |= MSG_TEXT | FIRST_PENDING;
                        self.utf8.reset();
                    }
                    OpCode::Binary => self.flags |= MSG_BINARY | FIRST_PENDING,
                    _ => {}
                }
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => {}
        }
        self.opcode = h.opcode.to_u8();
        if h.fin {
            self.flags |= FIN;
        } else {
            self.flags &= !FIN;
        }
        self.flags |= PAYLOAD;
        // Bounded by the message limit (data) or 125 (control, checked at header time).
        self.remaining = h.payload_len.min(u64::from(u32::MAX)) as u32;
        self.mask = h.mask.unwrap_or_default();
        Ok(())
    }

    fn data_piece<F>(&mut self, piece: &[u8], frame_done: bool, on_event: &mut F) -> Go
    where
        F: FnMut(Event<'_>) -> bool,
    {
        let text = self.flags & MSG_TEXT != 0;
        // "When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte
        // stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
        // Connection_" (RFC 6455 §8.1) — at the first bad byte, even mid-frame.
        if text && !self.utf8.feed(piece) {
            return Err(WsError::InvalidUtf8);
        }
        let last = frame_done && self.flags & FIN != 0;
        if last && text && !self.utf8.is_complete() {
            return Err(WsError::InvalidUtf8);
        }
        if piece.is_empty() && !last {
            // A zero-length non-final frame: nothing to report; `first` stays pending.
            return Ok(true);
        }
        let first = self.flags & FIRST_PENDING != 0;
        self.flags &= !FIRST_PENDING;
        if last {
            self.flags &= !(MSG_TEXT | MSG_BINARY);
            self.msg_bytes = 0;
        }
        Ok(on_event(Event::Data {
            payload: piece,
            text,
            first,
            last,
        }))
    }

    fn control_piece<F>(&mut self, piece: &[u8], frame_done: bool, on_event: &mut F) -> Go
    where
        F: FnMut(Event<'_>) -> bool,
    {
        if frame_done && self.ctrl.is_none() {
            // The whole payload is in this input: deliver it in place.
            return emit_control(self.opcode, piece, on_event);
        }
        let buf = self.ctrl.get_or_insert_with(|| {
            Box::new(ControlBuf {
                len: 0,
                data: [0; MAX_CONTROL_PAYLOAD],
            })
        });
        let start = usize::from(buf.len);
        let end = start + piece.len();
        let Some(dst) = buf.data.get_mut(start..end) else {
            // Unreachable: the header check bounds control payloads to 125 bytes.
            debug_assert!(false, "control payload over 125 bytes");
            return Err(WsError::ControlTooLong(end as u64));
        };
        dst.copy_from_slice(piece);
        buf.len = end as u8;
        match self.ctrl.take() {
            Some(buf) if frame_done => emit_control(
                self.opcode,
                buf.data.get(..usize::from(buf.len)).unwrap_or(&[]),
                on_event,
            ),
            kept => {
                self.ctrl = kept;
                Ok(true)
            }
        }
    }
}

fn emit_control<F>(opcode: u8, payload: &[u8], on_event: &mut F) -> Go
where
    F: FnMut(Event<'_>) -> bool,
{
    let event = match OpCode::from_u8(opcode) {
        Some(OpCode::Ping) => Event::Ping(payload),
        Some(OpCode::Pong) => Event::Pong(payload),
        _ => {
            let (code, reason) = parse_close_payload(payload)?;
            Event::Close { code, reason }
        }
    };
    Ok(on_event(event))
}

#[cfg(test)]
mod tests {
    use super::super::encoder::{write_frame_header, write_masked_frame};
    use super::*;
    use proptest::prelude::*;

    const _: () = assert!(std::mem::size_of::<Decoder>() <= 48);

    const MAX: usize = 1 << 20;
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Data {
            payload: Vec<u8>,
            text: bool,
            first: bool,
            last: bool,
        },
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    fn own(e: Event<'_>) -> Ev {
        match e {
            Event::Data {
                payload,
                text,
                first,
                last,
            } => Ev::Data {
                payload: payload.to_vec(),
                text,
                first,
                last,
            },
            Event::Ping(p) => Ev::Ping(p.to_vec()),
            Event::Pong(p) => Ev::Pong(p.to_vec()),
            Event::Close { code, reason } => Ev::Close(code, reason.to_string()),
        }
    }

    fn data(payload: &[u8], text: bool, first: bool, last: bool) -> Ev {
        Ev::Data {
            payload: payload.to_vec(),
            text,
            first,
            last,
        }
    }

    /// Feed `bytes` to `dec` cut at the given (sorted) positions.
    fn feed_cuts(
        dec: &mut Decoder,
        bytes: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> (Vec<Ev>, Result<(), WsError>) {
        let mut buf = bytes.to_vec();
        let mut evs = Vec::new();
        let mut start = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let c = c.clamp(start, bytes.len());
            let r = dec.decode(&mut buf[start..c], max, |e| {
                evs.push(own(e));
                true
            });
            if r.is_err() {
                return (evs, r);
            }
            start = c;
        }
        (evs, Ok(()))
    }

    fn decode_all(bytes: &[u8]) -> (Vec<Ev>, Result<(), WsError>) {
        feed_cuts(&mut Decoder::new(), bytes, &[], MAX)
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Item {
        Msg { text: bool, data: Vec<u8> },
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    /// Reassemble pieces into messages, checking that `first` and `last` appear exactly once
    /// per message and that `text` is constant. Returns the items and an open message.
    fn merge(evs: &[Ev]) -> (Vec<Item>, Option<(bool, Vec<u8>)>) {
        let mut items = Vec::new();
        let mut open: Option<(bool, Vec<u8>)> = None;
        for e in evs {
            match e {
                Ev::Data {
                    payload,
                    text,
                    first,
                    last,
                } => {
                    if *first {
                        assert!(open.is_none(), "first while a message is open: {evs:?}");
                        open = Some((*text, Vec::new()));
                    }
                    let Some((t, buf)) = open.as_mut() else {
                        panic!("piece without first: {evs:?}")
                    };
                    assert_eq!(*t, *text);
                    buf.extend_from_slice(payload);
                    if *last {
                        let (text, data) = open.take().unwrap();
                        if text {
                            assert!(std::str::from_utf8(&data).is_ok());
                        }
                        items.push(Item::Msg { text, data });
                    }
                }
                Ev::Ping(p) => items.push(Item::Ping(p.clone())),
                Ev::Pong(p) => items.push(Item::Pong(p.clone())),
                Ev::Close(c, r) => items.push(Item::Close(*c, r.clone())),
            }
        }
        (items, open)
    }

    /// The split-independent view of a decode: items, open message (only when no error), result.
    type View = (Vec<Item>, Option<(bool, Vec<u8>)>, Result<(), WsError>);
    fn view(evs: &[Ev], r: Result<(), WsError>) -> View {
        let (items, open) = merge(evs);
        let open = if r.is_ok() { open } else { None };
        (items, open, r)
    }

    fn masked(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_masked_frame(&mut v, op, fin, payload, MASK);
        v
    }

    // ---- RFC 6455 §5.7 examples ----

    #[test]
    fn rfc_masked_hello() {
        let mut b = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut evs = Vec::new();
        Decoder::new()
            .decode(&mut b, MAX, |e| {
                evs.push(own(e));
                true
            })
            .unwrap();
        assert_eq!(evs, [data(b"Hello", true, true, true)]);
        // Unmasked in place.
        assert_eq!(&b[6..], b"Hello");
    }

    #[test]
    fn rfc_unmasked_examples_client_role() {
        let run = |bytes: &[u8]| feed_cuts(&mut Decoder::client(), bytes, &[], MAX);
        // Unmasked "Hello".
        assert_eq!(
            run(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
            (vec![data(b"Hello", true, true, true)], Ok(()))
        );
        // Fragmented "Hel" + "lo".
        assert_eq!(
            run(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]),
            (
                vec![
                    data(b"Hel", true, true, false),
                    data(b"lo", true, false, true)
                ],
                Ok(())
            )
        );
        // Unmasked ping "Hello".
        assert_eq!(
            run(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
            (vec![Ev::Ping(b"Hello".to_vec())], Ok(()))
        );
        // 256 bytes binary.
        let mut f = vec![0x82, 0x7E, 0x01, 0x00];
        f.extend((0..256).map(|i| i as u8));
        assert_eq!(run(&f), (vec![data(&f[4..], false, true, true)], Ok(())));
        // 64 KiB binary.
        let mut f = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        f.extend((0..65536).map(|i| (i * 7) as u8));
        assert_eq!(run(&f), (vec![data(&f[10..], false, true, true)], Ok(())));
    }

    #[test]
    fn rfc_masked_pong_and_lengths_server_role() {
        // Masked pong "Hello" (RFC 6455 §5.7).
        let b = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(decode_all(&b), (vec![Ev::Pong(b"Hello".to_vec())], Ok(())));
        let ping = masked(OpCode::Ping, true, b"Hello");
        assert_eq!(
            decode_all(&ping),
            (vec![Ev::Ping(b"Hello".to_vec())], Ok(()))
        );
        for len in [0usize, 1, 125, 126, 256, 65535, 65536, 100_000] {
            let p: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let f = masked(OpCode::Binary, true, &p);
            assert_eq!(
                decode_all(&f),
                (vec![data(&p, false, true, true)], Ok(())),
                "{len}"
            );
        }
    }

    // ---- header errors ----

    #[test]
    fn header_errors() {
        let cases: &[(&[u8], WsError)] = &[
            (&[0xC1, 0x80], WsError::ReservedBits),
            (&[0xA1, 0x80], WsError::ReservedBits),
            (&[0x91, 0x80], WsError::ReservedBits),
            (&[0xF1, 0x80], WsError::ReservedBits),
            (&[0xC9, 0x80], WsError::ReservedBits),
            (&[0xC8, 0x80], WsError::ReservedBits),
            (&[0x83, 0x80], WsError::ReservedOpcode(3)),
            (&[0x84, 0x80], WsError::ReservedOpcode(4)),
            (&[0x85, 0x80], WsError::ReservedOpcode(5)),
            (&[0x86, 0x80], WsError::ReservedOpcode(6)),
            (&[0x87, 0x80], WsError::ReservedOpcode(7)),
            (&[0x8B, 0x80], WsError::ReservedOpcode(11)),
            (&[0x8C, 0x80], WsError::ReservedOpcode(12)),
            (&[0x8D, 0x80], WsError::ReservedOpcode(13)),
            (&[0x8E, 0x80], WsError::ReservedOpcode(14)),
            (&[0x8F, 0x80], WsError::ReservedOpcode(15)),
            (&[0x81, 0x00], WsError::UnmaskedFrame),
            (&[0x89, 0x00], WsError::UnmaskedFrame),
            (&[0x09, 0x80], WsError::FragmentedControl),
            (&[0x0A, 0x80], WsError::FragmentedControl),
            (&[0x08, 0x80], WsError::FragmentedControl),
            (
                &[0x89, 0xFE, 0x00, 0x7E, 1, 2, 3, 4],
                WsError::ControlTooLong(126),
            ),
            (
                &[0x8A, 0xFF, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4],
                WsError::ControlTooLong(256),
            ),
            (
                &[0x88, 0xFE, 0x00, 0xFF, 1, 2, 3, 4],
                WsError::ControlTooLong(255),
            ),
            (&[0x80, 0x80, 1, 2, 3, 4], WsError::UnexpectedContinuation),
            (&[0x00, 0x80, 1, 2, 3, 4], WsError::UnexpectedContinuation),
            (
                &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
                WsError::LengthMsbSet,
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(decode_all(bytes), (vec![], Err(err.clone())), "{bytes:x?}");
            // Also when split everywhere, and the stateless two-byte checks fail on two bytes.
            for cut in 0..=bytes.len() {
                assert_eq!(
                    feed_cuts(&mut Decoder::new(), bytes, &[cut], MAX),
                    (vec![], Err(err.clone())),
                    "{bytes:x?} @{cut}"
                );
            }
            // The error comes as soon as the bytes that show it are in: the first two, or
            // the extended length for the length rules (before the mask).
            let upto = match err {
                WsError::ControlTooLong(_) | WsError::LengthMsbSet => bytes.len() - 4,
                _ => 2,
            };
            let mut d = Decoder::new();
            assert_eq!(
                d.decode(&mut bytes[..upto].to_vec(), MAX, |_| true),
                Err(err.clone()),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn client_role_rejects_masked_frames() {
        let f = masked(OpCode::Text, true, b"hi");
        assert_eq!(
            feed_cuts(&mut Decoder::client(), &f, &[], MAX),
            (vec![], Err(WsError::MaskedFrame))
        );
        let mut d = Decoder::client();
        assert_eq!(
            d.decode(&mut f[..2].to_vec(), MAX, |_| true),
            Err(WsError::MaskedFrame)
        );
        assert!(d.is_client() && d.is_stopped());
    }

    #[test]
    fn new_data_frame_inside_a_message() {
        for op in [OpCode::Text, OpCode::Binary] {
            let mut s = masked(OpCode::Text, false, b"ab");
            s.extend(masked(op, true, b"cd"));
            assert_eq!(
                decode_all(&s),
                (
                    vec![data(b"ab", true, true, false)],
                    Err(WsError::ExpectedContinuation)
                )
            );
        }
    }

    #[test]
    fn continuation_after_complete_message() {
        let mut s = masked(OpCode::Binary, true, b"ab");
        s.extend(masked(OpCode::Continuation, true, b"cd"));
        assert_eq!(
            decode_all(&s),
            (
                vec![data(b"ab", false, true, true)],
                Err(WsError::UnexpectedContinuation)
            )
        );
    }

    #[test]
    fn valid_message_is_delivered_before_a_bad_frame() {
        // Autobahn 3.2 / 4.1.3: a valid message then a bad frame in the same segment.
        let mut s = masked(OpCode::Text, true, b"Hello, world!");
        s.extend([0xA1, 0x80, 1, 2, 3, 4]);
        assert_eq!(
            decode_all(&s),
            (
                vec![data(b"Hello, world!", true, true, true)],
                Err(WsError::ReservedBits)
            )
        );
        let mut s = masked(OpCode::Text, true, b"Hello, world!");
        s.extend([0x85, 0x80, 1, 2, 3, 4]);
        s.extend(masked(OpCode::Ping, true, b""));
        assert_eq!(
            decode_all(&s),
            (
                vec![data(b"Hello, world!", true, true, true)],
                Err(WsError::ReservedOpcode(5))
            )
        );
    }

    #[test]
    fn message_too_big() {
        // One frame over the limit: nothing of it is delivered.
        let f = masked(OpCode::Binary, true, &[7; 11]);
        assert_eq!(
            feed_cuts(&mut Decoder::new(), &f, &[], 10),
            (vec![], Err(WsError::MessageTooBig { size: 11, max: 10 }))
        );
        // Exactly at the limit is fine.
        assert_eq!(feed_cuts(&mut Decoder::new(), &f, &[], 11).1, Ok(()));
        // Across fragments: earlier fragments delivered, the offending one not.
        let mut s = masked(OpCode::Text, false, b"abcd");
        s.extend(masked(OpCode::Ping, true, b"p"));
        s.extend(masked(OpCode::Continuation, false, b"efgh"));
        s.extend(masked(OpCode::Continuation, true, b"ijk"));
        assert_eq!(
            feed_cuts(&mut Decoder::new(), &s, &[], 10),
            (
                vec![
                    data(b"abcd", true, true, false),
                    Ev::Ping(b"p".to_vec()),
                    data(b"efgh", true, false, false)
                ],
                Err(WsError::MessageTooBig { size: 11, max: 10 })
            )
        );
        // Control frames do not count.
        assert_eq!(feed_cuts(&mut Decoder::new(), &s, &[], 11).1, Ok(()));
        // A huge declared length fails at the header, with no payload present.
        let mut h = Vec::new();
        FrameHeader {
            fin: true,
            opcode: OpCode::Binary,
            mask: Some(MASK),
            payload_len: 1 << 62,
        }
        .encode(&mut h);
        assert_eq!(
            decode_all(&h),
            (
                vec![],
                Err(WsError::MessageTooBig {
                    size: 1 << 62,
                    max: MAX as u64
                })
            )
        );
    }

    #[test]
    fn next_message_limit_starts_from_zero() {
        let mut s = masked(OpCode::Binary, true, &[1; 8]);
        s.extend(masked(OpCode::Text, false, b"abcd"));
        s.extend(masked(OpCode::Continuation, true, b"efgh"));
        assert_eq!(feed_cuts(&mut Decoder::new(), &s, &[], 8).1, Ok(()));
    }

    // ---- close frames ----

    #[test]
    fn close_payloads() {
        assert_eq!(
            decode_all(&masked(OpCode::Close, true, b"")),
            (vec![Ev::Close(None, String::new())], Ok(()))
        );
        assert_eq!(
            decode_all(&masked(OpCode::Close, true, b"\x03\xe8")),
            (vec![Ev::Close(Some(1000), String::new())], Ok(()))
        );
        assert_eq!(
            decode_all(&masked(OpCode::Close, true, b"\x0f\xa0bye \xc3\xa9")),
            (vec![Ev::Close(Some(4000), "bye é".into())], Ok(()))
        );
        assert_eq!(
            decode_all(&masked(OpCode::Close, true, b"\x03")),
            (vec![], Err(WsError::InvalidClosePayload))
        );
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let p = code.to_be_bytes();
            assert_eq!(
                decode_all(&masked(OpCode::Close, true, &p)),
                (vec![], Err(WsError::InvalidCloseCode(code)))
            );
        }
        let bad = b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
        assert_eq!(
            decode_all(&masked(OpCode::Close, true, bad)),
            (vec![], Err(WsError::InvalidCloseReason))
        );
        assert_eq!(WsError::InvalidCloseReason.close_code(), 1007);
    }

    #[test]
    fn close_inside_a_fragmented_message() {
        // Autobahn 7.1.5: close in the middle of a fragmented message is a normal close.
        let mut s = masked(OpCode::Text, false, b"frag1");
        s.extend(masked(OpCode::Close, true, b"\x03\xe8"));
        assert_eq!(
            decode_all(&s),
            (
                vec![
                    data(b"frag1", true, true, false),
                    Ev::Close(Some(1000), String::new())
                ],
                Ok(())
            )
        );
    }

    // ---- UTF-8 ----

    #[test]
    fn invalid_utf8_fails_at_the_bad_byte_mid_frame() {
        // Autobahn 6.4.3: valid part, then a bad sequence, of one frame whose rest comes later.
        let good = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
        let bad = b"\xf4\x90\x80\x80";
        let tail = b"\x65\x64\x69\x74\x65\x64";
        let mut payload = good.to_vec();
        payload.extend(bad);
        payload.extend(tail);
        let f = masked(OpCode::Text, true, &payload);
        let hdr = 6;
        let mut d = Decoder::new();
        let mut buf = f.clone();
        let mut evs = Vec::new();
        let (a, b) = buf.split_at_mut(hdr + good.len());
        d.decode(a, MAX, |e| {
            evs.push(own(e));
            true
        })
        .unwrap();
        assert_eq!(evs, [data(good, true, true, false)]);
        // The second chop holds the bad bytes but not the end of the frame: fail right away.
        let (b1, _) = b.split_at_mut(bad.len());
        assert_eq!(
            d.decode(b1, MAX, |_| panic!("no event")),
            Err(WsError::InvalidUtf8)
        );
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        // Already on the second byte of the bad sequence (F4 90 is over U+10FFFF).
        let mut d = Decoder::new();
        let mut buf = f.clone();
        d.decode(&mut buf[..hdr + good.len() + 1], MAX, |_| true)
            .unwrap();
        assert_eq!(
            d.decode(
                &mut buf[hdr + good.len() + 1..hdr + good.len() + 2],
                MAX,
                |_| true
            ),
            Err(WsError::InvalidUtf8)
        );
        assert!(d.is_stopped());
    }

    #[test]
    fn invalid_utf8_across_fragments() {
        // Autobahn 6.4.1: bad bytes in the 2nd of 3 fragments.
        let mut s = masked(
            OpCode::Text,
            false,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
        );
        s.extend(masked(OpCode::Continuation, false, b"\xf4\x90\x80\x80"));
        s.extend(masked(
            OpCode::Continuation,
            true,
            b"\x65\x64\x69\x74\x65\x64",
        ));
        let (evs, r) = decode_all(&s);
        assert_eq!(r, Err(WsError::InvalidUtf8));
        assert_eq!(evs.len(), 1);
        // A character split across fragments is fine.
        let mut s = masked(OpCode::Text, false, b"a\xe2");
        s.extend(masked(OpCode::Continuation, false, b"\x82"));
        s.extend(masked(OpCode::Continuation, true, b"\xacb"));
        let (evs, r) = decode_all(&s);
        assert_eq!(r, Ok(()));
        assert_eq!(
            merge(&evs).0,
            [Item::Msg {
                text: true,
                data: "a€b".into()
            }]
        );
    }

    #[test]
    fn truncated_character_at_message_end() {
        let f = masked(OpCode::Text, true, b"ab\xe2\x82");
        assert_eq!(decode_all(&f), (vec![], Err(WsError::InvalidUtf8)));
        // Split: the first piece is delivered, the completing piece is not.
        let (evs, r) = feed_cuts(&mut Decoder::new(), &f, &[7], MAX);
        assert_eq!(
            (evs, r),
            (
                vec![data(b"a", true, true, false)],
                Err(WsError::InvalidUtf8)
            )
        );
        // Final empty continuation after an incomplete character.
        let mut s = masked(OpCode::Text, false, b"ab\xe2\x82");
        s.extend(masked(OpCode::Continuation, true, b""));
        assert_eq!(
            decode_all(&s),
            (
                vec![data(b"ab\xe2\x82", true, true, false)],
                Err(WsError::InvalidUtf8)
            )
        );
    }

    #[test]
    fn binary_is_not_utf8_checked() {
        let f = masked(OpCode::Binary, true, b"\xff\xfe\xc0");
        assert_eq!(
            decode_all(&f),
            (vec![data(b"\xff\xfe\xc0", false, true, true)], Ok(()))
        );
    }

    #[test]
    fn utf8_state_resets_between_messages() {
        // A new message starts at a character boundary: a leading continuation byte fails.
        let mut s = masked(OpCode::Text, true, "é".as_bytes());
        s.extend(masked(OpCode::Text, true, b"\xa9"));
        assert_eq!(
            decode_all(&s),
            (
                vec![data("é".as_bytes(), true, true, true)],
                Err(WsError::InvalidUtf8)
            )
        );
        // Control frames between fragments do not disturb the UTF-8 state.
        let mut s = masked(OpCode::Text, false, b"\xc3");
        s.extend(masked(OpCode::Ping, true, b"\xff"));
        s.extend(masked(OpCode::Continuation, true, b"\xa9"));
        assert_eq!(
            merge(&decode_all(&s).0).0,
            [
                Item::Ping(vec![0xff]),
                Item::Msg {
                    text: true,
                    data: "é".into()
                }
            ]
        );
    }

    // ---- fragmentation and zero-length frames ----

    #[test]
    fn empty_message_is_one_event() {
        for op in [OpCode::Text, OpCode::Binary] {
            let f = masked(op, true, b"");
            assert_eq!(
                decode_all(&f),
                (vec![data(b"", op == OpCode::Text, true, true)], Ok(()))
            );
            for cut in 0..=f.len() {
                assert_eq!(
                    feed_cuts(&mut Decoder::new(), &f, &[cut], MAX),
                    decode_all(&f)
                );
            }
        }
    }

    #[test]
    fn zero_length_fragments() {
        let mut s = masked(OpCode::Text, false, b"");
        s.extend(masked(OpCode::Continuation, false, b"ab"));
        s.extend(masked(OpCode::Continuation, false, b""));
        s.extend(masked(OpCode::Continuation, true, b""));
        assert_eq!(
            decode_all(&s),
            (
                vec![data(b"ab", true, true, false), data(b"", true, false, true)],
                Ok(())
            )
        );
        // All fragments empty: one event, first && last.
        let mut s = masked(OpCode::Binary, false, b"");
        s.extend(masked(OpCode::Continuation, false, b""));
        s.extend(masked(OpCode::Continuation, true, b""));
        assert_eq!(decode_all(&s), (vec![data(b"", false, true, true)], Ok(())));
        // Non-empty final fragment after empty ones carries first and last.
        let mut s = masked(OpCode::Binary, false, b"");
        s.extend(masked(OpCode::Continuation, true, b"x"));
        assert_eq!(
            decode_all(&s),
            (vec![data(b"x", false, true, true)], Ok(()))
        );
    }

    #[test]
    fn control_frames_between_fragments() {
        // Autobahn 5.6–5.8 / 5.19: pings between fragments, answered in wire order.
        let mut s = masked(OpCode::Text, false, b"fragment1");
        s.extend(masked(OpCode::Ping, true, b"ping1"));
        s.extend(masked(OpCode::Continuation, false, b"fragment2"));
        s.extend(masked(OpCode::Pong, true, b"pong"));
        s.extend(masked(OpCode::Ping, true, b""));
        s.extend(masked(OpCode::Continuation, true, b"fragment3"));
        let (evs, r) = decode_all(&s);
        assert_eq!(r, Ok(()));
        assert_eq!(
            evs,
            [
                data(b"fragment1", true, true, false),
                Ev::Ping(b"ping1".to_vec()),
                data(b"fragment2", true, false, false),
                Ev::Pong(b"pong".to_vec()),
                Ev::Ping(vec![]),
                data(b"fragment3", true, false, true),
            ]
        );
    }

    #[test]
    fn in_message_tracks_fragments() {
        let mut d = Decoder::new();
        let mut f = masked(OpCode::Binary, false, b"ab");
        d.decode(&mut f, MAX, |_| true).unwrap();
        assert!(d.in_message());
        let mut f = masked(OpCode::Continuation, true, b"c");
        d.decode(&mut f, MAX, |_| true).unwrap();
        assert!(!d.in_message());
    }

    #[test]
    fn split_control_frame_uses_and_frees_the_small_buffer() {
        let f = masked(OpCode::Ping, true, &[0xAB; 125]);
        let mut d = Decoder::new();
        let mut buf = f.clone();
        let mut evs = Vec::new();
        d.decode(&mut buf[..50], MAX, |e| {
            evs.push(own(e));
            true
        })
        .unwrap();
        assert!(evs.is_empty());
        assert!(d.ctrl.is_some());
        d.decode(&mut buf[50..], MAX, |e| {
            evs.push(own(e));
            true
        })
        .unwrap();
        assert_eq!(evs, [Ev::Ping(vec![0xAB; 125])]);
        assert!(d.ctrl.is_none());
        // A whole control frame in one input never allocates.
        let mut d = Decoder::new();
        d.decode(&mut f.clone(), MAX, |_| true).unwrap();
        assert!(d.ctrl.is_none());
    }

    #[test]
    fn stop_on_false() {
        let mut s = masked(OpCode::Ping, true, b"1");
        s.extend(masked(OpCode::Ping, true, b"2"));
        let mut d = Decoder::new();
        let mut n = 0;
        let mut buf = s.clone();
        assert_eq!(
            d.decode(&mut buf, MAX, |_| {
                n += 1;
                false
            }),
            Ok(())
        );
        assert_eq!(n, 1);
        assert!(d.is_stopped());
        // A stopped decoder ignores later input.
        assert_eq!(
            d.decode(&mut s.clone(), MAX, |_| panic!("no event after a stop")),
            Ok(())
        );
        // Same after an error.
        let mut d = Decoder::new();
        assert!(d.decode(&mut [0xC1, 0x80], MAX, |_| true).is_err());
        assert_eq!(
            d.decode(&mut s.clone(), MAX, |_| panic!("no event after an error")),
            Ok(())
        );
    }

    #[test]
    fn default_is_server_role_and_take_works() {
        let mut d = Decoder::default();
        assert!(!d.is_client() && !d.in_message() && !d.is_stopped());
        let mut f = masked(OpCode::Text, false, b"ab");
        d.decode(&mut f, MAX, |_| true).unwrap();
        let taken = std::mem::take(&mut d);
        assert!(taken.in_message() && !d.in_message());
    }

    // ---- splitting ----

    fn sample_stream() -> Vec<u8> {
        let mut s = masked(OpCode::Text, true, "Hello κόσμε €𝄞".as_bytes());
        s.extend(masked(
            OpCode::Binary,
            true,
            &(0..300).map(|i| i as u8).collect::<Vec<_>>(),
        ));
        s.extend(masked(
            OpCode::Text,
            false,
            "frag 𝄞 one ".as_bytes().split_at(8).0,
        ));
        s.extend(masked(OpCode::Ping, true, b"between"));
        s.extend(masked(
            OpCode::Continuation,
            false,
            "frag 𝄞 one ".as_bytes().split_at(8).1,
        ));
        s.extend(masked(OpCode::Pong, true, &[0xff; 125]));
        s.extend(masked(OpCode::Continuation, false, b""));
        s.extend(masked(OpCode::Continuation, true, "end ✓".as_bytes()));
        s.extend(masked(OpCode::Text, true, b""));
        s.extend(masked(OpCode::Binary, false, b""));
        s.extend(masked(OpCode::Continuation, true, b""));
        s.extend(masked(OpCode::Ping, true, b""));
        s.extend(masked(OpCode::Close, true, b"\x03\xe8normal"));
        s
    }

    fn check_every_split(s: &[u8]) {
        let (evs, r) = decode_all(s);
        let want = view(&evs, r);
        for cut in 0..=s.len() {
            let (evs, r) = feed_cuts(&mut Decoder::new(), s, &[cut], MAX);
            assert_eq!(view(&evs, r), want, "cut {cut}");
        }
        // Byte by byte.
        let cuts: Vec<usize> = (0..s.len()).collect();
        let (evs, r) = feed_cuts(&mut Decoder::new(), s, &cuts, MAX);
        assert_eq!(view(&evs, r), want, "bytewise");
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let s = sample_stream();
        let (evs, r) = decode_all(&s);
        assert_eq!(r, Ok(()));
        let (items, open) = merge(&evs);
        assert!(open.is_none());
        assert_eq!(items.len(), 9);
        check_every_split(&s);
    }

    #[test]
    fn every_pair_of_split_points_on_a_small_stream() {
        let mut s = masked(OpCode::Text, false, "é€".as_bytes());
        s.extend(masked(OpCode::Ping, true, b"pi"));
        s.extend(masked(OpCode::Continuation, true, "𝄞".as_bytes()));
        let want = {
            let (evs, r) = decode_all(&s);
            view(&evs, r)
        };
        for a in 0..=s.len() {
            for b in a..=s.len() {
                let (evs, r) = feed_cuts(&mut Decoder::new(), &s, &[a, b], MAX);
                assert_eq!(view(&evs, r), want, "{a} {b}");
            }
        }
    }

    #[test]
    fn every_split_of_error_streams() {
        let mut bad_utf8 = masked(OpCode::Text, false, b"ok \xce\xba");
        bad_utf8.extend(masked(
            OpCode::Continuation,
            true,
            b"\xe1\xbd\xb9 \xed\xa0\x80 tail",
        ));
        let mut bad_header = masked(OpCode::Binary, true, b"fine");
        bad_header.extend(masked(OpCode::Ping, true, b"p"));
        bad_header.extend([0x81, 0x7E, 0x00]); // unmasked: fails at two bytes
        for s in [bad_utf8, bad_header] {
            check_every_split(&s);
        }
    }

    /// xorshift, so random chunking is reproducible without a dependency.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn random_chunking() {
        let s = sample_stream();
        let want = {
            let (evs, r) = decode_all(&s);
            view(&evs, r)
        };
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..500 {
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < s.len() {
                at += (rng(&mut seed) % 40) as usize;
                cuts.push(at.min(s.len()));
            }
            let (evs, r) = feed_cuts(&mut Decoder::new(), &s, &cuts, MAX);
            assert_eq!(view(&evs, r), want, "{cuts:?}");
        }
    }

    #[test]
    fn zero_copy_pieces_point_into_the_input() {
        let f = masked(OpCode::Binary, true, &[5; 100]);
        let mut buf = f.clone();
        let range = buf.as_ptr_range();
        let mut seen = 0;
        Decoder::new()
            .decode(&mut buf, MAX, |e| {
                if let Event::Data { payload, .. } = e {
                    assert!(range.contains(&payload.as_ptr()));
                    seen += 1;
                }
                true
            })
            .unwrap();
        assert_eq!(seen, 1);
    }

    // ---- properties ----

    #[derive(Debug, Clone)]
    enum Msg {
        Data {
            text: bool,
            payload: Vec<u8>,
            cuts: Vec<prop::sample::Index>,
            pings: Vec<bool>,
        },
        Ping(Vec<u8>),
        Pong(Vec<u8>),
    }

    fn msg_strategy() -> impl Strategy<Value = Msg> {
        let data = (
            any::<bool>(),
            "\\PC{0,60}",
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            proptest::collection::vec(any::<bool>(), 0..4),
        )
            .prop_map(|(text, s, bin, cuts, pings)| Msg::Data {
                text,
                payload: if text { s.into_bytes() } else { bin },
                cuts,
                pings,
            });
        prop_oneof![
            4 => data,
            1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
            1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Pong),
        ]
    }

    /// Encode `msgs`; returns the bytes and the expected merged items.
    fn encode(msgs: &[Msg], mask: Option<[u8; 4]>) -> (Vec<u8>, Vec<Item>) {
        let put = |out: &mut Vec<u8>, op: OpCode, fin: bool, p: &[u8]| match mask {
            Some(m) => write_masked_frame(out, op, fin, p, m),
            None => {
                write_frame_header(out, op, fin, p.len());
                out.extend_from_slice(p);
            }
        };
        let mut out = Vec::new();
        let mut want = Vec::new();
        for m in msgs {
            match m {
                Msg::Data {
                    text,
                    payload,
                    cuts,
                    pings,
                } => {
                    let mut pos: Vec<usize> =
                        cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
                    pos.sort_unstable();
                    let mut start = 0;
                    let op0 = if *text { OpCode::Text } else { OpCode::Binary };
                    for (k, &c) in pos.iter().enumerate() {
                        put(
                            &mut out,
                            if k == 0 { op0 } else { OpCode::Continuation },
                            false,
                            &payload[start..c],
                        );
                        if pings.get(k).copied().unwrap_or(false) {
                            put(&mut out, OpCode::Ping, true, &[k as u8]);
                            want.push(Item::Ping(vec![k as u8]));
                        }
                        start = c;
                    }
                    put(
                        &mut out,
                        if pos.is_empty() {
                            op0
                        } else {
                            OpCode::Continuation
                        },
                        true,
                        &payload[start..],
                    );
                    want.push(Item::Msg {
                        text: *text,
                        data: payload.clone(),
                    });
                }
                Msg::Ping(p) => {
                    put(&mut out, OpCode::Ping, true, p);
                    want.push(Item::Ping(p.clone()));
                }
                Msg::Pong(p) => {
                    put(&mut out, OpCode::Pong, true, p);
                    want.push(Item::Pong(p.clone()));
                }
            }
        }
        (out, want)
    }

    fn cut_points(len: usize, idx: &[prop::sample::Index]) -> Vec<usize> {
        let mut c: Vec<usize> = idx.iter().map(|i| i.index(len + 1)).collect();
        c.sort_unstable();
        c
    }

    proptest! {
        #[test]
        fn prop_masked_round_trip(msgs in proptest::collection::vec(msg_strategy(), 0..8),
                                  mask in any::<[u8; 4]>(),
                                  cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let (bytes, want) = encode(&msgs, Some(mask));
            let (evs, r) = feed_cuts(&mut Decoder::new(), &bytes, &cut_points(bytes.len(), &cuts), MAX);
            prop_assert_eq!(r, Ok(()));
            let (items, open) = merge(&evs);
            prop_assert!(open.is_none());
            prop_assert_eq!(items, want);
        }

        #[test]
        fn prop_unmasked_round_trip_client_role(msgs in proptest::collection::vec(msg_strategy(), 0..8),
                                                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let (bytes, want) = encode(&msgs, None);
            let (evs, r) = feed_cuts(&mut Decoder::client(), &bytes, &cut_points(bytes.len(), &cuts), MAX);
            prop_assert_eq!(r, Ok(()));
            prop_assert_eq!(merge(&evs).0, want);
        }

        #[test]
        fn prop_split_independent_on_valid_streams(msgs in proptest::collection::vec(msg_strategy(), 0..6),
                                                   mask in any::<[u8; 4]>(),
                                                   max in 0usize..400,
                                                   cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let (bytes, _) = encode(&msgs, Some(mask));
            let (e1, r1) = feed_cuts(&mut Decoder::new(), &bytes, &[], max);
            let (e2, r2) = feed_cuts(&mut Decoder::new(), &bytes, &cut_points(bytes.len(), &cuts), max);
            prop_assert_eq!(view(&e2, r2), view(&e1, r1));
        }

        #[test]
        fn prop_split_independent_on_corrupted_streams(msgs in proptest::collection::vec(msg_strategy(), 1..6),
                                                       mask in any::<[u8; 4]>(),
                                                       flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                                                       cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let (mut bytes, _) = encode(&msgs, Some(mask));
            if !bytes.is_empty() {
                for (i, x) in &flips {
                    let i = i.index(bytes.len());
                    bytes[i] ^= x;
                }
            }
            let (e1, r1) = feed_cuts(&mut Decoder::new(), &bytes, &[], 1000);
            let (e2, r2) = feed_cuts(&mut Decoder::new(), &bytes, &cut_points(bytes.len(), &cuts), 1000);
            prop_assert_eq!(view(&e2, r2), view(&e1, r1));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
                                            client in any::<bool>()) {
            let mk = || if client { Decoder::client() } else { Decoder::new() };
            let (e1, r1) = feed_cuts(&mut mk(), &bytes, &[], 100);
            let (e2, r2) = feed_cuts(&mut mk(), &bytes, &cut_points(bytes.len(), &cuts), 100);
            prop_assert_eq!(view(&e2, r2), view(&e1, r1));
        }
    }
}
