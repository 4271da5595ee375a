//! Close codes: which a peer may send (RFC 6455 §7.4), and close payload parsing.
use super::error::WsError;

// Close codes this server sends (RFC 6455 §7.4.1), by name.
/// Normal closure: the reply to a close frame that carried no code.
pub const NORMAL: u16 = 1000;
/// Going away: shutdown, or an idle ping left unanswered.
pub const GOING_AWAY: u16 = 1001;
/// Protocol error: any RFC 6455 violation that is not about the payload.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Unsupported data: a binary message on the chat endpoint.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Invalid frame payload data: text that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation: rate abuse, or a client that does not read.
pub const POLICY_VIOLATION: u16 = 1008;
/// Message too big.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Internal error (counted when a peer sends it).
pub const INTERNAL_ERROR: u16 = 1011;
/// Try again later: the server could not pass this client's messages on in time.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// The reason sent with each of this server's close codes.
pub fn reason(code: u16) -> &'static str {
    match code {
        PROTOCOL_ERROR => "protocol error",
        UNSUPPORTED_DATA => "binary messages are not supported",
        INVALID_PAYLOAD => "invalid UTF-8",
        MESSAGE_TOO_BIG => "message too big",
        _ => "",
    }
}

/// Longest close reason that fits a control frame: 125 bytes of payload minus the 2-byte code
/// (RFC 6455 §5.5).
pub const MAX_CLOSE_REASON: usize = 123;

/// Codes a peer may put in a close frame: 1000–1003, 1007–1011, 3000–4999.
///
/// Also accepted: 1012–1014 (IANA registry: Service Restart, Try Again Later, Bad Gateway).
/// Rejected: 0–999 (unused), 1004 (reserved), 1005/1006/1015 ("MUST NOT be set as a status
/// code in a Close control frame", RFC 6455 §7.4.1), 1016–2999 (reserved for future
/// protocol revisions), 5000+ (undefined).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parse a complete close frame payload (already unmasked): empty → `(None, "")`;
/// otherwise a valid 2-byte big-endian code and a UTF-8 reason (RFC 6455 §5.5.1).
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<u16>, &str), WsError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(WsError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(WsError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidCloseReason)?;
            Ok((Some(code), reason))
        }
    }
}

/// `reason` cut to at most [`MAX_CLOSE_REASON`] bytes, on a char boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.get(..end).unwrap_or("")
}

/// Append a close payload (code + reason truncated by [`truncate_reason`]) to `out`; ≤ 125 bytes.
pub fn write_close_payload(out: &mut Vec<u8>, code: u16, reason: &str) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(truncate_reason(reason).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autobahn_valid_codes() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_close_code(c), "{c}");
        }
        for c in [1012, 1013, 1014] {
            assert!(is_valid_close_code(c), "{c}");
        }
    }

    #[test]
    fn autobahn_invalid_codes() {
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_close_code(c), "{c}");
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(parse_close_payload(&[]), Ok((None, "")));
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(WsError::InvalidClosePayload)
        );
        assert_eq!(parse_close_payload(&[0x03, 0xe8]), Ok((Some(1000), "")));
        assert_eq!(parse_close_payload(b"\x03\xe8bye"), Ok((Some(1000), "bye")));
        assert_eq!(
            parse_close_payload(&[0x03, 0xed]),
            Err(WsError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(
                b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
            ),
            Err(WsError::InvalidCloseReason)
        );
        // A truncated character in the reason is invalid too.
        assert_eq!(
            parse_close_payload(b"\x03\xe8a\xc3"),
            Err(WsError::InvalidCloseReason)
        );
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate_reason("short"), "short");
        let exact = "a".repeat(123);
        assert_eq!(truncate_reason(&exact), exact);
        let long = "a".repeat(200);
        assert_eq!(truncate_reason(&long).len(), 123);
        // 122 ASCII + a 2-byte char straddling 123.
        let s = format!("{}é", "a".repeat(122));
        assert_eq!(truncate_reason(&s), "a".repeat(122));
        let s = "€".repeat(50); // 3 bytes each: 41 fit in 123.
        assert_eq!(truncate_reason(&s).len(), 123);
        let s = format!("a{}", "€".repeat(50));
        assert_eq!(truncate_reason(&s).len(), 121);
    }

    #[test]
    fn write_payload_fits_a_control_frame() {
        let mut out = Vec::new();
        write_close_payload(&mut out, 1001, &"é".repeat(100));
        assert!(out.len() <= 125);
        assert_eq!(parse_close_payload(&out).map(|(c, _)| c), Ok(Some(1001)));
    }
}
