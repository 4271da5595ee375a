//! Client side of the wire: the upgrade request, pre-encoded and pre-masked frames, the
//! message stamp (`"<seq> <intended_ns> <sent_ns>"` padded with `x`) and the parsing of what
//! the server sends back.
//!
//! Every frame a client sends is built once per process and masked with one per-process
//! random key (RFC 6455 wants a fresh key per frame to protect proxies from cache poisoning;
//! a load generator talking to its own server does not need that, and a fixed key lets the
//! frames be masked ahead of time). A chat message is a copy of the masked template with its
//! 50 stamp bytes written and masked in place.
use roulette::ws::mask::apply_mask;
use roulette::ws::{write_close, write_masked_frame, OpCode};
use serde::Deserialize;
use std::borrow::Cow;

/// Width of the sequence number field.
pub const SEQ_W: usize = 10;
/// Width of a timestamp field (CLOCK_MONOTONIC nanoseconds).
pub const TS_W: usize = 19;
/// Length of the stamp at the start of every message text: `seq intended sent`.
pub const STAMP_LEN: usize = SEQ_W + 1 + TS_W + 1 + TS_W;
/// Padding byte after the stamp.
pub const PAD: u8 = b'x';

const MSG_PREFIX: &[u8] = br#"{"type":"message","text":""#;
const MSG_SUFFIX: &[u8] = br#""}"#;

/// Tiny xorshift64* generator: masks, keys, client ids. Not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let b = [
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
            c.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                s.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// What the scenario sends: chat JSON on /ws, raw payloads on /echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Chat,
    EchoText,
    EchoBinary,
}

/// Everything a client of this process sends, encoded once.
#[derive(Debug)]
pub struct Frames {
    pub mask: [u8; 4],
    /// The upgrade request for each target URL (its Host header and path).
    pub requests: Vec<Vec<u8>>,
    pub accept: String,
    pub find: Vec<u8>,
    pub leave: Vec<u8>,
    pub close: Vec<u8>,
    pub message_bytes: usize,
    msg: Vec<u8>,
    /// Offset in `msg` of the first payload byte (mask phase 0).
    payload_at: usize,
    /// Offset of the stamp inside the payload.
    stamp_in_payload: usize,
}

impl Frames {
    /// `endpoints`: (Host header, path) of each target URL.
    pub fn new(
        endpoints: &[(&str, &str)],
        wire: Wire,
        message_bytes: usize,
        rng: &mut Rng,
    ) -> Frames {
        let r = rng.next_u64();
        let mask = (r as u32).to_le_bytes();
        let mut key_bytes = [0u8; 16];
        key_bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        key_bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let key = base64(&key_bytes);
        let accept = roulette::http::accept_key(key.as_bytes());
        let requests = endpoints
            .iter()
            .map(|(host, path)| {
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
                     User-Agent: roulette-loadtest\r\n\r\n"
                )
                .into_bytes()
            })
            .collect();
        let frame = |payload: &[u8], op: OpCode| {
            let mut v = Vec::new();
            write_masked_frame(&mut v, op, true, payload, mask);
            v
        };
        let find = frame(br#"{"type":"find"}"#, OpCode::Text);
        let leave = frame(br#"{"type":"leave"}"#, OpCode::Text);
        let mut close_payload = Vec::new();
        write_close(&mut close_payload, 1000, "bye");
        // write_close wrote an unmasked frame: re-frame its payload masked.
        let close = frame(close_payload.get(2..).unwrap_or(&[]), OpCode::Close);

        let mut text = vec![PAD; message_bytes.max(STAMP_LEN)];
        write_stamp(&mut text, 0, 0, 0);
        let (payload, stamp_in_payload, op) = match wire {
            Wire::Chat => {
                let mut p = MSG_PREFIX.to_vec();
                p.extend_from_slice(&text);
                p.extend_from_slice(MSG_SUFFIX);
                (p, MSG_PREFIX.len(), OpCode::Text)
            }
            Wire::EchoText => (text, 0, OpCode::Text),
            Wire::EchoBinary => (text, 0, OpCode::Binary),
        };
        let msg = frame(&payload, op);
        let payload_at = msg.len() - payload.len();
        Frames {
            mask,
            requests,
            accept,
            find,
            leave,
            close,
            message_bytes,
            msg,
            payload_at,
            stamp_in_payload,
        }
    }

    /// Append one data message with this stamp.
    pub fn push_msg(&self, out: &mut Vec<u8>, seq: u32, intended_ns: u64, sent_ns: u64) {
        let base = out.len();
        out.extend_from_slice(&self.msg);
        let at = base + self.payload_at + self.stamp_in_payload;
        if let Some(dst) = out.get_mut(at..at + STAMP_LEN) {
            write_stamp(dst, seq, intended_ns, sent_ns);
            apply_mask(dst, self.mask, self.stamp_in_payload);
        }
    }

    /// Append the end marker `E <count> <id>`: "I sent `count` messages; my id is `id`".
    pub fn push_end(&self, out: &mut Vec<u8>, count: u32, id: u64) {
        let json = format!(r#"{{"type":"message","text":"E {count} {id}"}}"#);
        write_masked_frame(out, OpCode::Text, true, json.as_bytes(), self.mask);
    }

    /// Append `find` with the single interest `tag` (`--pair-tags`; the tag is `[a-z0-9-]`,
    /// nothing to escape).
    pub fn push_find_tagged(&self, out: &mut Vec<u8>, tag: &str) {
        let json = format!(r#"{{"type":"find","interests":["{tag}"]}}"#);
        write_masked_frame(out, OpCode::Text, true, json.as_bytes(), self.mask);
    }

    /// Append a pong answering a ping with this payload (RFC 6455 §5.5.3).
    pub fn push_pong(&self, out: &mut Vec<u8>, payload: &[u8]) {
        write_masked_frame(out, OpCode::Pong, true, payload, self.mask);
    }
}

fn write_digits(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Write the `STAMP_LEN`-byte stamp at the start of `dst` (fixed-width, zero-padded).
pub fn write_stamp(dst: &mut [u8], seq: u32, intended_ns: u64, sent_ns: u64) {
    if let Some(s) = dst.get_mut(..SEQ_W) {
        write_digits(s, u64::from(seq));
    }
    if let Some(s) = dst.get_mut(SEQ_W..SEQ_W + 1) {
        s.fill(b' ');
    }
    if let Some(s) = dst.get_mut(SEQ_W + 1..SEQ_W + 1 + TS_W) {
        write_digits(s, intended_ns);
    }
    if let Some(s) = dst.get_mut(SEQ_W + 1 + TS_W..SEQ_W + 2 + TS_W) {
        s.fill(b' ');
    }
    if let Some(s) = dst.get_mut(SEQ_W + 2 + TS_W..STAMP_LEN) {
        write_digits(s, sent_ns);
    }
}

fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// What a message text carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    Data { seq: u32, intended: u64, sent: u64 },
    End { count: u32, id: u64 },
}

/// Parse a message text (or the first bytes of an echoed payload). `None`: not ours.
pub fn parse_stamp(text: &[u8]) -> Option<Stamp> {
    if let Some(rest) = text.strip_prefix(b"E ") {
        let mut it = rest.split(|&b| b == b' ');
        let count = u32::try_from(parse_digits(it.next()?)?).ok()?;
        let id = parse_digits(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        return Some(Stamp::End { count, id });
    }
    let s = text.get(..STAMP_LEN)?;
    if s.get(SEQ_W) != Some(&b' ') || s.get(SEQ_W + 1 + TS_W) != Some(&b' ') {
        return None;
    }
    Some(Stamp::Data {
        seq: u32::try_from(parse_digits(s.get(..SEQ_W)?)?).ok()?,
        intended: parse_digits(s.get(SEQ_W + 1..SEQ_W + 1 + TS_W)?)?,
        sent: parse_digits(s.get(SEQ_W + 2 + TS_W..)?)?,
    })
}

/// True when `text` is exactly a data message of `len` bytes: stamp then padding.
pub fn padding_ok(text: &[u8], len: usize) -> bool {
    text.len() == len
        && text
            .get(STAMP_LEN..)
            .is_some_and(|p| p.iter().all(|&b| b == PAD))
}

/// A server → client chat message (PROTOCOL.md "Server → client").
#[derive(Debug, PartialEq, Eq)]
pub enum ServerMsg<'a> {
    Hello,
    Waiting,
    /// With the `common` interests.
    Paired(Vec<String>),
    Message(Cow<'a, [u8]>),
    Typing,
    PartnerLeft,
    Error(String),
    Unknown(String),
}

#[derive(Deserialize)]
struct AnyMsg {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    common: Option<Vec<String>>,
}

/// Parse one server JSON message. Chat lines take a fast path (no JSON parser) when they are
/// in the server's own form and hold no escape; everything else goes through serde_json.
pub fn parse_server(payload: &[u8]) -> Option<ServerMsg<'_>> {
    if let Some(text) = payload
        .strip_prefix(MSG_PREFIX)
        .and_then(|r| r.strip_suffix(MSG_SUFFIX))
    {
        if !text.contains(&b'\\') && !text.contains(&b'"') {
            return Some(ServerMsg::Message(Cow::Borrowed(text)));
        }
    }
    let m: AnyMsg = serde_json::from_slice(payload).ok()?;
    Some(match m.ty.as_str() {
        "hello" => ServerMsg::Hello,
        "waiting" => ServerMsg::Waiting,
        "paired" => ServerMsg::Paired(m.common.unwrap_or_default()),
        "message" => ServerMsg::Message(Cow::Owned(m.text?.into_bytes())),
        "typing" => ServerMsg::Typing,
        "partner_left" => ServerMsg::PartnerLeft,
        "error" => ServerMsg::Error(m.code.unwrap_or_default()),
        _ => ServerMsg::Unknown(m.ty),
    })
}

/// Result of reading the upgrade response.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// Not all of the head is in yet.
    Partial,
    /// 101 with the right accept key; the head is this many bytes long.
    Done(usize),
    /// Anything else, with a reason for the log.
    Failed(String),
}

/// Check the server's answer to the upgrade request.
pub fn parse_upgrade(buf: &[u8], accept: &str) -> Upgrade {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Upgrade::Partial,
        Err(e) => Upgrade::Failed(format!("bad response: {e}")),
        Ok(httparse::Status::Complete(n)) => {
            if resp.code != Some(101) {
                return Upgrade::Failed(format!("status {}", resp.code.unwrap_or(0)));
            }
            let header = |name: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
            };
            if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
                return Upgrade::Failed("no Upgrade: websocket".into());
            }
            if header("sec-websocket-accept") != Some(accept.as_bytes()) {
                return Upgrade::Failed("wrong Sec-WebSocket-Accept".into());
            }
            Upgrade::Done(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roulette::ws::{Decoder, Event};

    fn unmask_one(frame: &[u8]) -> (bool, Vec<u8>) {
        // Decode with a server-role decoder, which unmasks.
        let mut buf = frame.to_vec();
        let mut dec = Decoder::new();
        let mut got = None;
        dec.decode(&mut buf, 1 << 20, |ev| {
            if let Event::Data { payload, text, .. } = ev {
                got = Some((text, payload.to_vec()));
            }
            true
        })
        .expect("valid frame");
        got.expect("one message")
    }

    #[test]
    fn base64_matches_rfc_sample() {
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn chat_message_round_trip() {
        let mut rng = Rng::new(7);
        let f = Frames::new(&[("h:1", "/ws")], Wire::Chat, 64, &mut rng);
        let mut out = Vec::new();
        f.push_msg(&mut out, 42, 1_234_567_890_123, 1_234_567_890_999);
        let (text, payload) = unmask_one(&out);
        assert!(text);
        let ServerMsg::Message(t) = parse_server(&payload).expect("parses") else {
            panic!("not a message")
        };
        assert_eq!(t.len(), 64);
        assert!(padding_ok(&t, 64));
        assert_eq!(
            parse_stamp(&t),
            Some(Stamp::Data {
                seq: 42,
                intended: 1_234_567_890_123,
                sent: 1_234_567_890_999
            })
        );
        // A second message in the same buffer at an odd offset still masks right.
        let mut out = vec![0u8; 3];
        f.push_msg(&mut out, 7, 1, 2);
        let (_, payload) = unmask_one(&out[3..]);
        let ServerMsg::Message(t) = parse_server(&payload).expect("parses") else {
            panic!("not a message")
        };
        assert_eq!(
            parse_stamp(&t),
            Some(Stamp::Data {
                seq: 7,
                intended: 1,
                sent: 2
            })
        );
    }

    #[test]
    fn echo_and_end_frames() {
        let mut rng = Rng::new(9);
        let f = Frames::new(&[("h", "/echo")], Wire::EchoBinary, 1000, &mut rng);
        let mut out = Vec::new();
        f.push_msg(&mut out, 3, 4, 5);
        let (text, payload) = unmask_one(&out);
        assert!(!text);
        assert!(padding_ok(&payload, 1000));
        let mut out = Vec::new();
        f.push_end(&mut out, 17, 99);
        let (_, payload) = unmask_one(&out);
        let ServerMsg::Message(t) = parse_server(&payload).expect("parses") else {
            panic!("not a message")
        };
        assert_eq!(parse_stamp(&t), Some(Stamp::End { count: 17, id: 99 }));
    }

    #[test]
    fn requests_per_url_and_tagged_find() {
        let mut rng = Rng::new(3);
        let f = Frames::new(
            &[("a:1", "/ws"), ("b:2", "/x/ws")],
            Wire::Chat,
            64,
            &mut rng,
        );
        assert_eq!(f.requests.len(), 2);
        let r0 = String::from_utf8_lossy(&f.requests[0]).into_owned();
        let r1 = String::from_utf8_lossy(&f.requests[1]).into_owned();
        assert!(r0.starts_with("GET /ws HTTP/1.1\r\nHost: a:1\r\n"), "{r0}");
        assert!(
            r1.starts_with("GET /x/ws HTTP/1.1\r\nHost: b:2\r\n"),
            "{r1}"
        );
        // One key for all, so one accept value checks every response.
        let key = |r: &str| {
            r.lines()
                .find(|l| l.starts_with("Sec-WebSocket-Key"))
                .map(str::to_owned)
        };
        assert_eq!(key(&r0), key(&r1));
        let mut out = Vec::new();
        f.push_find_tagged(&mut out, "lt7-00ff00ff");
        let (text, payload) = unmask_one(&out);
        assert!(text);
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"type": "find", "interests": ["lt7-00ff00ff"]})
        );
        let (_, plain) = unmask_one(&f.find);
        assert_eq!(plain, br#"{"type":"find"}"#);
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            parse_server(br#"{"type":"paired","common":[]}"#),
            Some(ServerMsg::Paired(vec![]))
        );
        assert_eq!(
            parse_server(br#"{"type":"paired","common":["lt3-0a1b2c3d"]}"#),
            Some(ServerMsg::Paired(vec!["lt3-0a1b2c3d".into()]))
        );
        assert_eq!(
            parse_server(br#"{"type":"paired"}"#),
            Some(ServerMsg::Paired(vec![]))
        );
        assert_eq!(
            parse_server(br#"{"type":"partner_left"}"#),
            Some(ServerMsg::PartnerLeft)
        );
        assert_eq!(
            parse_server(br#"{"type":"error","code":"not_chatting","message":"x"}"#),
            Some(ServerMsg::Error("not_chatting".into()))
        );
        assert_eq!(
            parse_server(br#"{"type":"message","text":"a\"b"}"#),
            Some(ServerMsg::Message(Cow::Owned(b"a\"b".to_vec())))
        );
        assert_eq!(parse_server(b"nope"), None);
        assert_eq!(parse_stamp(b"12 34"), None);
        assert_eq!(parse_stamp(b"E 1 2 3"), None);
    }

    #[test]
    fn upgrade_response() {
        let mut rng = Rng::new(1);
        let f = Frames::new(&[("h", "/ws")], Wire::Chat, 64, &mut rng);
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\nXY",
            f.accept
        );
        assert_eq!(
            parse_upgrade(ok.as_bytes(), &f.accept),
            Upgrade::Done(ok.len() - 2)
        );
        assert_eq!(
            parse_upgrade(&ok.as_bytes()[..20], &f.accept),
            Upgrade::Partial
        );
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse_upgrade(busy, &f.accept), Upgrade::Failed(_)));
    }
}
