//! Protocol v1 messages (docs/PROTOCOL.md): parsing and validation of client messages,
//! JSON encoding of server messages.
//!
//! Parsing is one pass of serde_json over the message with hand-written, lenient visitors:
//! every field is first read as "whatever JSON it is" (so a field of another type, or an
//! unknown field, never fails the parse), then the message is validated in the order the
//! contract gives: JSON, `type`, then the type's own fields. Every string anywhere in the
//! message, including ignored ones, is decoded as UTF-8, so a lone surrogate escape such as
//! `"\ud800"` makes the whole message `bad_json` (PROTOCOL.md, Transport).
//!
//! The writers append compact JSON to a caller-owned buffer and allocate nothing else.
use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg<'a> {
    /// Interests trimmed, lower-cased, de-duplicated (first occurrence order kept).
    Find {
        interests: Vec<String>,
    },
    /// Text already trimmed and within the limit.
    Message {
        text: Cow<'a, str>,
    },
    Typing {
        active: bool,
    },
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

/// At most this many interests may be sent in one `find` (duplicates count).
pub const MAX_INTERESTS: usize = 8;
/// A tag is 1..=`MAX_TAG_CHARS` characters after trimming and lower-casing.
pub const MAX_TAG_CHARS: usize = 32;

impl ErrorCode {
    /// Every code, in the order of PROTOCOL.md's table.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::NotChatting,
        ErrorCode::TooLong,
        ErrorCode::Empty,
        ErrorCode::BadInterests,
        ErrorCode::RateLimited,
    ];

    /// The wire code, e.g. `"bad_json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotChatting => "not_chatting",
            ErrorCode::TooLong => "too_long",
            ErrorCode::Empty => "empty",
            ErrorCode::BadInterests => "bad_interests",
            ErrorCode::RateLimited => "rate_limited",
        }
    }
    /// A human-readable sentence for the `message` field.
    pub fn sentence(self) -> &'static str {
        match self {
            ErrorCode::BadJson => {
                "That message was not valid: send one JSON object with a string \"type\" and the fields it needs."
            }
            ErrorCode::UnknownType => {
                "Unknown message type; use find, message, typing, next or leave."
            }
            ErrorCode::NotChatting => "You're not chatting with anyone right now.",
            ErrorCode::TooLong => "Your message is too long; please shorten it.",
            ErrorCode::Empty => "Your message is empty.",
            ErrorCode::BadInterests => {
                "Interests must be a list of at most 8 words, each 1 to 32 characters long."
            }
            ErrorCode::RateLimited => "You're sending messages too fast; slow down.",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shape nearly every client message has, `{"type":"message","text":"…"}` with no
/// escape, quote or control character in the text: the text, read without the JSON parser.
/// Anything else is left to the parser, which gives the same answer for this shape.
fn plain_chat_line(json: &[u8]) -> Option<&str> {
    let text = json
        .strip_prefix(br#"{"type":"message","text":""#)?
        .strip_suffix(br#""}"#)?;
    if text.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
        return None;
    }
    std::str::from_utf8(text).ok()
}

/// Parse and fully validate one client text message (the JSON of one WebSocket text message).
pub fn parse_client_message(
    json: &[u8],
    max_text_chars: usize,
) -> Result<ClientMsg<'_>, ErrorCode> {
    if let Some(text) = plain_chat_line(json) {
        return validate_text(Cow::Borrowed(text), max_text_chars)
            .map(|text| ClientMsg::Message { text });
    }
    parse_with_serde(json, max_text_chars)
}

/// The general parser: any JSON, every field rule.
fn parse_with_serde(json: &[u8], max_text_chars: usize) -> Result<ClientMsg<'_>, ErrorCode> {
    let raw: RawMsg<'_> = serde_json::from_slice(json).map_err(|_| ErrorCode::BadJson)?;
    match raw.kind {
        Field::Absent | Field::Other => Err(ErrorCode::BadJson),
        Field::Value(Kind::Unknown) => Err(ErrorCode::UnknownType),
        Field::Value(Kind::Find) => match raw.interests {
            Field::Absent => Ok(ClientMsg::Find {
                interests: Vec::new(),
            }),
            Field::Other => Err(ErrorCode::BadInterests),
            Field::Value(tags) => {
                normalise_interests(tags).map(|interests| ClientMsg::Find { interests })
            }
        },
        Field::Value(Kind::Message) => match raw.text {
            Field::Value(text) => {
                validate_text(text, max_text_chars).map(|text| ClientMsg::Message { text })
            }
            Field::Absent | Field::Other => Err(ErrorCode::BadJson),
        },
        Field::Value(Kind::Typing) => match raw.active {
            Field::Value(active) => Ok(ClientMsg::Typing { active }),
            Field::Absent | Field::Other => Err(ErrorCode::BadJson),
        },
        Field::Value(Kind::Next) => Ok(ClientMsg::Next),
        Field::Value(Kind::Leave) => Ok(ClientMsg::Leave),
    }
}

/// Trim (by slicing when borrowed), then check `1..=max_text_chars` characters.
fn validate_text(text: Cow<'_, str>, max_text_chars: usize) -> Result<Cow<'_, str>, ErrorCode> {
    let text = match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) => {
            let trimmed = s.trim();
            if trimmed.len() == s.len() {
                Cow::Owned(s)
            } else {
                Cow::Owned(trimmed.to_owned())
            }
        }
    };
    if text.is_empty() {
        return Err(ErrorCode::Empty);
    }
    // A char is at least one byte: no need to count when the bytes already fit.
    if text.len() > max_text_chars && text.chars().count() > max_text_chars {
        return Err(ErrorCode::TooLong);
    }
    Ok(text)
}

/// Trim, lower-case, check 1..=32 characters, merge duplicates keeping the first.
/// `tags` has at most `MAX_INTERESTS` elements (checked while parsing).
fn normalise_interests(tags: Vec<Cow<'_, str>>) -> Result<Vec<String>, ErrorCode> {
    if tags.len() > MAX_INTERESTS {
        return Err(ErrorCode::BadInterests);
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in &tags {
        let tag = tag.trim().to_lowercase();
        let chars = tag.chars().count();
        if chars == 0 || chars > MAX_TAG_CHARS {
            return Err(ErrorCode::BadInterests);
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Lenient deserialisation.

/// The five client types, or another string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Find,
    Message,
    Typing,
    Next,
    Leave,
    Unknown,
}

/// A field as found in the object: absent, of the expected JSON type, or anything else.
#[derive(Debug, Default)]
enum Field<T> {
    #[default]
    Absent,
    Value(T),
    Other,
}

/// The fields of every client type, each read leniently.
#[derive(Debug, Default)]
struct RawMsg<'a> {
    kind: Field<Kind>,
    text: Field<Cow<'a, str>>,
    active: Field<bool>,
    /// `Absent` also stands for `null` and `[]`; `Other` for anything that is not a list of
    /// at most `MAX_INTERESTS` strings.
    interests: Field<Vec<Cow<'a, str>>>,
}

/// A value that is parsed (so that it must be valid JSON, with valid strings) and dropped.
/// Unlike `serde::de::IgnoredAny`, serde_json decodes the strings it visits, so a lone
/// surrogate in an ignored field is still rejected. Nesting depth is bounded by serde_json's
/// recursion limit.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// Implements the non-matching `visit_*` methods of a lenient field visitor: scalars become
/// `Field::Other`, lists and objects are skipped (still validated) and become `Field::Other`.
macro_rules! other_for_the_rest {
    ($t:ty; $($skip:ident),*) => {
        $(other_for_the_rest!(@one $t; $skip);)*
    };
    (@one $t:ty; bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field<$t>, E> { Ok(Field::Other) }
    };
    (@one $t:ty; num) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field<$t>, E> { Ok(Field::Other) }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field<$t>, E> { Ok(Field::Other) }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<$t>, E> { Ok(Field::Other) }
    };
    (@one $t:ty; str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Field<$t>, E> { Ok(Field::Other) }
    };
    (@one $t:ty; unit) => {
        fn visit_unit<E: de::Error>(self) -> Result<Field<$t>, E> { Ok(Field::Other) }
    };
    (@one $t:ty; seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<$t>, A::Error> {
            SkipVisitor.visit_seq(seq).map(|_| Field::Other)
        }
    };
    (@one $t:ty; map) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<$t>, A::Error> {
            SkipVisitor.visit_map(map).map(|_| Field::Other)
        }
    };
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Field<Kind>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<Kind>, E> {
        Ok(Field::Value(match v {
            "find" => Kind::Find,
            "message" => Kind::Message,
            "typing" => Kind::Typing,
            "next" => Kind::Next,
            "leave" => Kind::Leave,
            _ => Kind::Unknown,
        }))
    }
    other_for_the_rest!(Kind; bool, num, unit, seq, map);
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Field<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Value(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Value(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Value(Cow::Owned(v)))
    }
    other_for_the_rest!(Cow<'de, str>; bool, num, unit, seq, map);
}

struct ActiveVisitor;

impl<'de> Visitor<'de> for ActiveVisitor {
    type Value = Field<bool>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field<bool>, E> {
        Ok(Field::Value(v))
    }
    other_for_the_rest!(bool; num, str, unit, seq, map);
}

struct InterestsVisitor;

impl<'de> Visitor<'de> for InterestsVisitor {
    type Value = Field<Vec<Cow<'de, str>>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    /// `null` means no interests.
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Absent)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut tags = Vec::new();
        loop {
            match seq.next_element_seed(TextSeed)? {
                None => break,
                Some(Field::Value(tag)) if tags.len() < MAX_INTERESTS => tags.push(tag),
                // Too many, or not a string: the rest only has to be valid JSON.
                Some(_) => {
                    while seq.next_element::<Skip>()?.is_some() {}
                    return Ok(Field::Other);
                }
            }
        }
        if tags.is_empty() {
            Ok(Field::Absent)
        } else {
            Ok(Field::Value(tags))
        }
    }
    other_for_the_rest!(Vec<Cow<'de, str>>; bool, num, str, map);
}

/// Reads one list element leniently with `TextVisitor`.
struct TextSeed;

impl<'de> de::DeserializeSeed<'de> for TextSeed {
    type Value = Field<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

/// The keys we look at; escapes in keys are decoded before matching.
enum Key {
    Type,
    Text,
    Active,
    Interests,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "type" => Key::Type,
                    "text" => Key::Text,
                    "active" => Key::Active,
                    "interests" => Key::Interests,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for RawMsg<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MsgVisitor;
        impl<'de> Visitor<'de> for MsgVisitor {
            type Value = RawMsg<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            /// Duplicate keys: the last one wins, as in `serde_json::Value`.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMsg<'de>, A::Error> {
                let mut raw = RawMsg::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Type => raw.kind = map.next_value_seed(Seed(KindVisitor))?,
                        Key::Text => raw.text = map.next_value_seed(Seed(TextVisitor))?,
                        Key::Active => raw.active = map.next_value_seed(Seed(ActiveVisitor))?,
                        Key::Interests => {
                            raw.interests = map.next_value_seed(Seed(InterestsVisitor))?
                        }
                        Key::Other => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(raw)
            }
        }
        // Not an object (including a list): serde_json reports an invalid type.
        d.deserialize_map(MsgVisitor)
    }
}

/// Drives any of the lenient visitors with `deserialize_any`.
struct Seed<V>(V);

impl<'de, V: Visitor<'de>> de::DeserializeSeed<'de> for Seed<V> {
    type Value = V::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0)
    }
}

// ---------------------------------------------------------------------------------------
// Writers: compact JSON appended to `out`, no other allocation.

/// Append `s` as a JSON string literal (quotes included). `"`, `\` and control characters
/// are escaped; everything else, non-ASCII included, is copied as is.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Append the decimal digits of `n`.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Append the JSON of a server message to `out`.
pub fn write_hello(out: &mut Vec<u8>, online: u64) {
    out.extend_from_slice(b"{\"type\":\"hello\",\"online\":");
    write_u64(out, online);
    out.push(b'}');
}
pub fn write_waiting(out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"waiting\"}");
}
/// `common` is already sorted.
pub fn write_paired(out: &mut Vec<u8>, common: &[String]) {
    out.extend_from_slice(b"{\"type\":\"paired\",\"common\":[");
    for (i, tag) in common.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, tag);
    }
    out.extend_from_slice(b"]}");
}
pub fn write_message(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"{\"type\":\"message\",\"text\":");
    write_json_str(out, text);
    out.push(b'}');
}
pub fn write_typing(out: &mut Vec<u8>, active: bool) {
    out.extend_from_slice(if active {
        b"{\"type\":\"typing\",\"active\":true}"
    } else {
        b"{\"type\":\"typing\",\"active\":false}"
    });
}
pub fn write_partner_left(out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"partner_left\"}");
}
pub fn write_error(out: &mut Vec<u8>, code: ErrorCode) {
    out.extend_from_slice(b"{\"type\":\"error\",\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    write_json_str(out, code.sentence());
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const MAX: usize = 2000;

    fn parse(s: &str) -> Result<ClientMsg<'_>, ErrorCode> {
        parse_client_message(s.as_bytes(), MAX)
    }

    fn find(tags: &[&str]) -> Result<ClientMsg<'static>, ErrorCode> {
        Ok(ClientMsg::Find {
            interests: tags.iter().map(|t| t.to_string()).collect(),
        })
    }

    fn msg(t: &str) -> Result<ClientMsg<'_>, ErrorCode> {
        Ok(ClientMsg::Message {
            text: Cow::Borrowed(t),
        })
    }

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> Value {
        let mut out = b"prefix".to_vec();
        f(&mut out);
        assert_eq!(&out[..6], b"prefix", "writers append");
        serde_json::from_slice(&out[6..]).expect("writer output is JSON")
    }

    #[test]
    fn valid_messages() {
        assert_eq!(parse(r#"{"type":"find"}"#), find(&[]));
        assert_eq!(
            parse(r#"{"type":"find","interests":["music","rust"]}"#),
            find(&["music", "rust"])
        );
        assert_eq!(parse(r#"{"type":"message","text":"hi"}"#), msg("hi"));
        assert_eq!(
            parse(r#"{"type":"typing","active":true}"#),
            Ok(ClientMsg::Typing { active: true })
        );
        assert_eq!(
            parse(r#"{"type":"typing","active":false}"#),
            Ok(ClientMsg::Typing { active: false })
        );
        assert_eq!(parse(r#"{"type":"next"}"#), Ok(ClientMsg::Next));
        assert_eq!(parse(r#"{"type":"leave"}"#), Ok(ClientMsg::Leave));
        assert_eq!(
            parse(" \n{ \"type\" : \"leave\" }\r\n\t"),
            Ok(ClientMsg::Leave)
        );
    }

    #[test]
    fn bad_json() {
        for s in [
            "",
            " ",
            "{",
            "nope",
            r#"{"type":"leave"}x"#,
            r#"{"type":"leave"}{}"#,
            r#"{"type":"leave",}"#,
            r#"{'type':'leave'}"#,
            "[]",
            r#"["type","leave"]"#,
            "null",
            "5",
            r#""leave""#,
            "{}",
            r#"{"typ":"leave"}"#,
            r#"{"type":5}"#,
            r#"{"type":null}"#,
            r#"{"type":true}"#,
            r#"{"type":["leave"]}"#,
            r#"{"type":{"leave":1}}"#,
            r#"{"type":"message"}"#,
            r#"{"type":"message","text":5}"#,
            r#"{"type":"message","text":null}"#,
            r#"{"type":"message","text":["hi"]}"#,
            r#"{"type":"typing"}"#,
            r#"{"type":"typing","active":"yes"}"#,
            r#"{"type":"typing","active":1}"#,
            r#"{"type":"typing","active":null}"#,
            // Invalid anywhere, even in an ignored field.
            r#"{"type":"leave","x":[1,2,}"#,
            r#"{"type":"leave","x":01}"#,
            r#"{"type":"leave","x":"\q"}"#,
        ] {
            assert_eq!(parse(s), Err(ErrorCode::BadJson), "{s:?}");
        }
        // Invalid UTF-8 (the caller normally rejects it earlier).
        assert_eq!(
            parse_client_message(b"{\"type\":\"message\",\"text\":\"\xff\"}", MAX),
            Err(ErrorCode::BadJson)
        );
    }

    #[test]
    fn lone_surrogates_are_bad_json() {
        for s in [
            r#"{"type":"message","text":"\ud800"}"#,
            r#"{"type":"message","text":"a\udc00b"}"#,
            r#"{"type":"message","text":"\ud800\u0041"}"#,
            r#"{"type":"message","text":"\ud800\ud800"}"#,
            r#"{"type":"\ud800"}"#,
            r#"{"type":"find","interests":["\ud800"]}"#,
            // In ignored places too: unknown field, other type's field, key, nested.
            r#"{"type":"leave","x":"\ud800"}"#,
            r#"{"type":"leave","text":"\ud800"}"#,
            r#"{"type":"leave","\ud800":1}"#,
            r#"{"type":"leave","x":[{"y":["\udfff"]}]}"#,
            r#"{"type":"find","interests":[1,"\ud800"]}"#,
            r#"{"type":"find","interests":["a","b","c","d","e","f","g","h","i","\ud800"]}"#,
            r#"{"type":"message","text":{"a":"\ud800"}}"#,
        ] {
            assert_eq!(parse(s), Err(ErrorCode::BadJson), "{s:?}");
        }
        // A valid pair is fine.
        assert_eq!(
            parse(r#"{"type":"message","text":"\ud83d\ude00"}"#),
            Ok(ClientMsg::Message {
                text: Cow::Owned("😀".into())
            })
        );
    }

    #[test]
    fn unknown_type() {
        for s in [
            r#"{"type":"x"}"#,
            r#"{"type":""}"#,
            r#"{"type":"Find"}"#,
            r#"{"type":" find"}"#,
            r#"{"type":"hello"}"#,
            r#"{"type":"x","text":5}"#,
            r#"{"type":"x","interests":5}"#,
        ] {
            assert_eq!(parse(s), Err(ErrorCode::UnknownType), "{s:?}");
        }
    }

    #[test]
    fn escapes_in_type_and_keys() {
        assert_eq!(parse(r#"{"type":"me\u0073sage","text":"hi"}"#), msg("hi"));
        assert_eq!(parse(r#"{"t\u0079pe":"leave"}"#), Ok(ClientMsg::Leave));
        assert_eq!(parse(r#"{"type":"le\/ave"}"#), Err(ErrorCode::UnknownType));
        assert_eq!(parse(r#"{"type":"\u006ce\u0061ve"}"#), Ok(ClientMsg::Leave));
    }

    #[test]
    fn other_fields_are_ignored() {
        assert_eq!(
            parse(
                r#"{"x":{"a":[1,2.5,null,true,"s"]},"type":"leave","text":5,"active":"y","interests":7}"#
            ),
            Ok(ClientMsg::Leave)
        );
        assert_eq!(parse(r#"{"type":"find","text":5,"active":[]}"#), find(&[]));
        assert_eq!(
            parse(r#"{"type":"message","text":"hi","interests":5,"active":{}}"#),
            msg("hi")
        );
        assert_eq!(
            parse(r#"{"active":true,"type":"typing","text":null}"#),
            Ok(ClientMsg::Typing { active: true })
        );
        // Field order does not matter.
        assert_eq!(parse(r#"{"text":"yo","type":"message"}"#), msg("yo"));
    }

    #[test]
    fn duplicate_keys_do_not_panic() {
        // The last one wins.
        assert_eq!(
            parse(r#"{"type":"x","type":"leave"}"#),
            Ok(ClientMsg::Leave)
        );
        assert_eq!(
            parse(r#"{"type":"message","text":"a","text":"b"}"#),
            msg("b")
        );
        assert_eq!(
            parse(r#"{"type":"leave","type":5}"#),
            Err(ErrorCode::BadJson)
        );
    }

    #[test]
    fn text_trimming_and_limits() {
        assert_eq!(
            parse(r#"{"type":"message","text":"  hi there \n"}"#),
            msg("hi there")
        );
        assert_eq!(
            parse(r#"{"type":"message","text":" a\u00a0b\t"}"#),
            Ok(ClientMsg::Message {
                text: Cow::Owned("a\u{a0}b".into())
            })
        );
        // Unicode White_Space, escaped or raw, is trimmed too.
        assert_eq!(
            parse("{\"type\":\"message\",\"text\":\"\u{3000}x\u{2003}\"}"),
            msg("x")
        );
        assert_eq!(parse(r#"{"type":"message","text":"\u00a0x\n"}"#), msg("x"));
        for s in [
            r#"{"type":"message","text":""}"#,
            r#"{"type":"message","text":"   "}"#,
            r#"{"type":"message","text":"\n\t\r "}"#,
            r#"{"type":"message","text":"\u2028\u00a0"}"#,
        ] {
            assert_eq!(parse(s), Err(ErrorCode::Empty), "{s:?}");
        }
        // The limit counts chars, after trimming.
        let json = |t: &str| format!(r#"{{"type":"message","text":"  {t}  "}}"#);
        let ok = json(&"é".repeat(5));
        assert!(matches!(
            parse_client_message(ok.as_bytes(), 5),
            Ok(ClientMsg::Message { .. })
        ));
        let long = json(&"é".repeat(6));
        assert_eq!(
            parse_client_message(long.as_bytes(), 5),
            Err(ErrorCode::TooLong)
        );
        let ok = json(&"a".repeat(2000));
        assert!(parse(&ok).is_ok());
        let long = json(&"a".repeat(2001));
        assert_eq!(parse(&long), Err(ErrorCode::TooLong));
        let emoji = json(&"😀".repeat(2000));
        assert!(parse(&emoji).is_ok());
        let emoji = json(&"😀".repeat(2001));
        assert_eq!(parse(&emoji), Err(ErrorCode::TooLong));
        // Empty wins over nothing; too long is checked after trimming.
        assert_eq!(
            parse_client_message(br#"{"type":"message","text":"   "}"#, 0),
            Err(ErrorCode::Empty)
        );
    }

    #[test]
    fn message_text_borrows_when_unescaped() {
        let s = r#"{"type":"message","text":"  hello  "}"#;
        match parse(s) {
            Ok(ClientMsg::Message {
                text: Cow::Borrowed(t),
            }) => {
                assert_eq!(t, "hello");
                let start = t.as_ptr() as usize - s.as_ptr() as usize;
                assert_eq!(&s[start..start + 5], "hello");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"type":"message","text":"a\"b"}"#),
            Ok(ClientMsg::Message { text: Cow::Owned(t) }) if t == "a\"b"
        ));
    }

    #[test]
    fn every_other_character_is_kept() {
        let text = "a  b\u{0}\u{1f}\"\\/<>&\u{7f}\u{2028}é😀";
        let mut j = Vec::new();
        j.extend_from_slice(b"{\"type\":\"message\",\"text\":");
        write_json_str(&mut j, &format!(" {text}\n"));
        j.push(b'}');
        assert_eq!(
            parse_client_message(&j, MAX),
            Ok(ClientMsg::Message {
                text: Cow::Owned(text.into())
            })
        );
    }

    #[test]
    fn interests_normalised() {
        assert_eq!(
            parse(r#"{"type":"find","interests":[" Rust ","RUST","music","rust"]}"#),
            find(&["rust", "music"])
        );
        assert_eq!(parse(r#"{"type":"find","interests":null}"#), find(&[]));
        assert_eq!(parse(r#"{"type":"find","interests":[]}"#), find(&[]));
        assert_eq!(
            parse(r#"{"type":"find","interests":["ÉCOLE","Straße"," \u00a0Ωμέγα\t"]}"#),
            find(&["école", "straße", "ωμέγα"])
        );
        // Inner spaces stay.
        assert_eq!(
            parse(r#"{"type":"find","interests":["  Rock Music  "]}"#),
            find(&["rock music"])
        );
    }

    #[test]
    fn bad_interests() {
        for s in [
            r#"{"type":"find","interests":5}"#,
            r#"{"type":"find","interests":"rust"}"#,
            r#"{"type":"find","interests":true}"#,
            r#"{"type":"find","interests":{"a":"b"}}"#,
            r#"{"type":"find","interests":["rust",5]}"#,
            r#"{"type":"find","interests":[null]}"#,
            r#"{"type":"find","interests":[["rust"]]}"#,
            r#"{"type":"find","interests":[""]}"#,
            r#"{"type":"find","interests":["   "]}"#,
            r#"{"type":"find","interests":["ok","\t"]}"#,
        ] {
            assert_eq!(parse(s), Err(ErrorCode::BadInterests), "{s:?}");
        }
    }

    #[test]
    fn eight_interests_but_not_nine() {
        let list = |n: usize, same: bool| {
            let tags: Vec<String> = (0..n)
                .map(|i| if same { "x".into() } else { format!("t{i}") })
                .collect();
            json!({"type":"find","interests":tags}).to_string()
        };
        assert_eq!(
            parse(&list(8, false)).map(|m| match m {
                ClientMsg::Find { interests } => interests.len(),
                _ => 0,
            }),
            Ok(8)
        );
        assert_eq!(parse(&list(9, false)), Err(ErrorCode::BadInterests));
        // Duplicates count as sent.
        assert_eq!(parse(&list(8, true)), find(&["x"]));
        assert_eq!(parse(&list(9, true)), Err(ErrorCode::BadInterests));
        assert_eq!(parse(&list(100, true)), Err(ErrorCode::BadInterests));
    }

    #[test]
    fn tag_length_32_but_not_33() {
        let one = |t: &str| json!({"type":"find","interests":[t]}).to_string();
        for (tag, ok) in [
            ("a".repeat(32), true),
            ("a".repeat(33), false),
            (format!("  {}  ", "a".repeat(32)), true),
            ("é".repeat(32), true),
            ("é".repeat(33), false),
            ("😀".repeat(32), true),
            ("😀".repeat(33), false),
            // Counted after lower-casing: 'İ' lower-cases to two chars.
            ("İ".repeat(16), true),
            ("İ".repeat(17), false),
        ] {
            let j = one(&tag);
            let r = parse(&j);
            if ok {
                assert!(matches!(r, Ok(ClientMsg::Find { .. })), "{tag:?} {r:?}");
            } else {
                assert_eq!(r, Err(ErrorCode::BadInterests), "{tag:?}");
            }
        }
    }

    #[test]
    fn validation_order() {
        // bad JSON before anything
        assert_eq!(
            parse(r#"{"type":"x","text":"\ud800"}"#),
            Err(ErrorCode::BadJson)
        );
        // unknown type before field checks
        assert_eq!(
            parse(r#"{"type":"y","interests":[1]}"#),
            Err(ErrorCode::UnknownType)
        );
        // a field of another type is not checked
        assert_eq!(
            parse(r#"{"type":"next","interests":[1]}"#),
            Ok(ClientMsg::Next)
        );
        assert_eq!(
            parse(r#"{"type":"typing","active":true,"text":""}"#),
            Ok(ClientMsg::Typing { active: true })
        );
    }

    #[test]
    fn does_not_panic_on_deep_nesting() {
        let deep = format!(
            r#"{{"type":"leave","x":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(parse(&deep), Err(ErrorCode::BadJson));
        let ok = format!(
            r#"{{"type":"leave","x":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse(&ok), Ok(ClientMsg::Leave));
    }

    #[test]
    fn error_codes() {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            codes,
            [
                "bad_json",
                "unknown_type",
                "not_chatting",
                "too_long",
                "empty",
                "bad_interests",
                "rate_limited"
            ]
        );
        for c in ErrorCode::ALL {
            let s = c.sentence();
            assert!(s.ends_with('.') && s.len() > 10, "{s}");
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(
            ErrorCode::RateLimited.sentence(),
            "You're sending messages too fast; slow down."
        );
    }

    #[test]
    fn writers_exact_output() {
        let mut out = Vec::new();
        write_hello(&mut out, 3);
        assert_eq!(out, br#"{"type":"hello","online":3}"#);
        out.clear();
        write_hello(&mut out, 0);
        assert_eq!(out, br#"{"type":"hello","online":0}"#);
        out.clear();
        write_hello(&mut out, u64::MAX);
        assert_eq!(out, br#"{"type":"hello","online":18446744073709551615}"#);
        out.clear();
        write_waiting(&mut out);
        assert_eq!(out, br#"{"type":"waiting"}"#);
        out.clear();
        write_paired(&mut out, &["a".into(), "b".into()]);
        assert_eq!(out, br#"{"type":"paired","common":["a","b"]}"#);
        out.clear();
        write_paired(&mut out, &[]);
        assert_eq!(out, br#"{"type":"paired","common":[]}"#);
        out.clear();
        write_message(&mut out, "hi");
        assert_eq!(out, br#"{"type":"message","text":"hi"}"#);
        out.clear();
        write_typing(&mut out, true);
        assert_eq!(out, br#"{"type":"typing","active":true}"#);
        out.clear();
        write_typing(&mut out, false);
        assert_eq!(out, br#"{"type":"typing","active":false}"#);
        out.clear();
        write_partner_left(&mut out);
        assert_eq!(out, br#"{"type":"partner_left"}"#);
        out.clear();
        write_error(&mut out, ErrorCode::BadJson);
        assert!(out.starts_with(br#"{"type":"error","code":"bad_json","message":""#));
    }

    #[test]
    fn writers_parse_back() {
        assert_eq!(
            written(|o| write_hello(o, 1234)),
            json!({"type":"hello","online":1234})
        );
        assert_eq!(written(write_waiting), json!({"type":"waiting"}));
        assert_eq!(
            written(|o| write_paired(o, &["mü\"sic".into(), "rust".into()])),
            json!({"type":"paired","common":["mü\"sic","rust"]})
        );
        assert_eq!(
            written(|o| write_typing(o, true)),
            json!({"type":"typing","active":true})
        );
        assert_eq!(written(write_partner_left), json!({"type":"partner_left"}));
        for c in ErrorCode::ALL {
            assert_eq!(
                written(|o| write_error(o, c)),
                json!({"type":"error","code":c.as_str(),"message":c.sentence()})
            );
        }
        let nasty: String = (0u32..0x100)
            .filter_map(char::from_u32)
            .chain("\u{2028}\u{2029}😀\u{fffd}\u{10ffff}".chars())
            .collect();
        for text in [
            "",
            "hi",
            "a\"b\\c/d",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "line\nbreak\r\t\u{8}\u{c}",
            &nasty,
        ] {
            assert_eq!(
                written(|o| write_message(o, text)),
                json!({"type":"message","text":text})
            );
        }
        // Non-ASCII stays raw UTF-8; control characters are escaped.
        let mut out = Vec::new();
        write_message(&mut out, "é\u{1}\n");
        assert_eq!(
            out,
            "{\"type\":\"message\",\"text\":\"é\\u0001\\n\"}".as_bytes()
        );
    }

    #[test]
    fn writers_do_not_reallocate_with_room() {
        let mut out = Vec::with_capacity(4096);
        let ptr = out.as_ptr();
        write_hello(&mut out, 42);
        write_waiting(&mut out);
        write_paired(&mut out, &["x".into()]);
        write_message(&mut out, "some \"text\"\n");
        write_typing(&mut out, false);
        write_partner_left(&mut out);
        for c in ErrorCode::ALL {
            write_error(&mut out, c);
        }
        assert_eq!(out.as_ptr(), ptr);
    }

    #[test]
    fn round_trip_message_through_writer_and_parser() {
        // What a client sends, trimmed, is what the partner gets.
        let mut out = Vec::new();
        for text in [
            "  hello  ",
            "\u{1}a\u{1f}",
            "😀 \"q\" \\",
            " \u{a0} x \u{a0} ",
        ] {
            out.clear();
            write_message(&mut out, text);
            match parse_client_message(&out, MAX) {
                Ok(ClientMsg::Message { text: t }) => assert_eq!(t, text.trim()),
                other => panic!("{other:?}"),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_client_message(&bytes, 10);
        }

        #[test]
        fn parse_arbitrary_string_never_panics(s in "\\PC{0,80}") {
            let _ = parse(&s);
            let j = format!(r#"{{"type":"find","interests":["{s}"]}}"#);
            let _ = parse(&j);
        }

        /// The shortcut for plain chat lines answers exactly as the JSON parser does, for
        /// any text put in that shape, and for the shape cut or padded.
        #[test]
        fn plain_chat_lines_parse_as_the_json_parser_does(
            text in "[ -~\\u{80}-\\u{10ffff}\\\\\"\\n]{0,40}",
            max in 1usize..30,
            cut in 0usize..4,
        ) {
            let line = format!(r#"{{"type":"message","text":"{text}"}}"#);
            let padded = format!(" {line}");
            let bytes = line.as_bytes();
            for json in [bytes, &bytes[..bytes.len() - cut], padded.as_bytes()] {
                proptest::prop_assert_eq!(
                    parse_client_message(json, max),
                    parse_with_serde(json, max),
                    "{:?}", String::from_utf8_lossy(json)
                );
            }
        }

        #[test]
        fn writer_roundtrips_any_text(text in "\\PC{0,64}", ctl in proptest::collection::vec(0u8..0x20, 0..4)) {
            let mut t = text;
            for c in ctl { t.push(char::from(c)); }
            let v = written(|o| write_message(o, &t));
            proptest::prop_assert_eq!(v, json!({"type":"message","text":t}));
        }
    }
}
