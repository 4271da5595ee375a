//! Codec errors and the close code each maps to (RFC 6455 §7.4.1).
use super::close;
use std::fmt;

/// Why the decoder failed the connection. Every variant maps to one close code through
/// [`WsError::close_code`] (one table, below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// Server role: a client frame without the mask bit ("The server MUST close the
    /// connection upon receiving a frame that is not masked", RFC 6455 §5.1).
    UnmaskedFrame,
    /// Client role: a server frame with the mask bit ("A client MUST close a connection if it
    /// detects a masked frame", RFC 6455 §5.1).
    MaskedFrame,
    /// RSV1, RSV2 or RSV3 set with no extension negotiated (RFC 6455 §5.2).
    ReservedBits,
    /// Opcode 0x3–0x7 or 0xB–0xF (RFC 6455 §5.2). Carries the opcode.
    ReservedOpcode(u8),
    /// A control frame with FIN clear ("All control frames MUST NOT be fragmented",
    /// RFC 6455 §5.5).
    FragmentedControl,
    /// A control frame with a payload over 125 bytes (RFC 6455 §5.5). Carries the length.
    ControlTooLong(u64),
    /// A continuation frame with no fragmented message open (RFC 6455 §5.4).
    UnexpectedContinuation,
    /// A new Text or Binary frame while a fragmented message is still open (RFC 6455 §5.4).
    ExpectedContinuation,
    /// A 64-bit payload length with the most significant bit set (RFC 6455 §5.2).
    LengthMsbSet,
    /// A close frame with a code a peer may not send (RFC 6455 §7.4).
    InvalidCloseCode(u16),
    /// A close frame whose payload is exactly 1 byte (RFC 6455 §5.5.1: a body starts with a
    /// 2-byte code).
    InvalidClosePayload,
    /// A close frame whose reason is not valid UTF-8 (RFC 6455 §5.5.1).
    InvalidCloseReason,
    /// A text message that is not valid UTF-8 (RFC 6455 §8.1), reported at the first byte
    /// that makes it invalid, or at the end of the final frame for a truncated character.
    InvalidUtf8,
    /// The message would exceed the configured limit. `size` is the message size including
    /// the frame whose header triggered the check; `max` is the limit.
    MessageTooBig { size: u64, max: u64 },
}

impl WsError {
    /// 1002 protocol error, 1007 invalid payload data, 1009 message too big.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::UnmaskedFrame
            | WsError::MaskedFrame
            | WsError::ReservedBits
            | WsError::ReservedOpcode(_)
            | WsError::FragmentedControl
            | WsError::ControlTooLong(_)
            | WsError::UnexpectedContinuation
            | WsError::ExpectedContinuation
            | WsError::LengthMsbSet
            | WsError::InvalidCloseCode(_)
            | WsError::InvalidClosePayload => close::PROTOCOL_ERROR,
            WsError::InvalidUtf8 | WsError::InvalidCloseReason => close::INVALID_PAYLOAD,
            WsError::MessageTooBig { .. } => close::MESSAGE_TOO_BIG,
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::UnmaskedFrame => f.write_str("client frame is not masked"),
            WsError::MaskedFrame => f.write_str("server frame is masked"),
            WsError::ReservedBits => f.write_str("reserved bits set without an extension"),
            WsError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            WsError::FragmentedControl => f.write_str("fragmented control frame"),
            WsError::ControlTooLong(len) => {
                write!(f, "control frame payload of {len} bytes (max 125)")
            }
            WsError::UnexpectedContinuation => {
                f.write_str("continuation frame with no message open")
            }
            WsError::ExpectedContinuation => f.write_str("new data frame while a message is open"),
            WsError::LengthMsbSet => {
                f.write_str("64-bit payload length with the most significant bit set")
            }
            WsError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            WsError::InvalidClosePayload => f.write_str("close payload of 1 byte"),
            WsError::InvalidCloseReason => f.write_str("close reason is not valid UTF-8"),
            WsError::InvalidUtf8 => f.write_str("text message is not valid UTF-8"),
            WsError::MessageTooBig { size, max } => {
                write!(f, "message of {size} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl std::error::Error for WsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_table() {
        assert_eq!(WsError::ReservedBits.close_code(), 1002);
        assert_eq!(WsError::ReservedOpcode(3).close_code(), 1002);
        assert_eq!(WsError::UnmaskedFrame.close_code(), 1002);
        assert_eq!(WsError::MaskedFrame.close_code(), 1002);
        assert_eq!(WsError::FragmentedControl.close_code(), 1002);
        assert_eq!(WsError::ControlTooLong(126).close_code(), 1002);
        assert_eq!(WsError::UnexpectedContinuation.close_code(), 1002);
        assert_eq!(WsError::ExpectedContinuation.close_code(), 1002);
        assert_eq!(WsError::LengthMsbSet.close_code(), 1002);
        assert_eq!(WsError::InvalidCloseCode(1005).close_code(), 1002);
        assert_eq!(WsError::InvalidClosePayload.close_code(), 1002);
        assert_eq!(WsError::InvalidCloseReason.close_code(), 1007);
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        assert_eq!(
            WsError::MessageTooBig { size: 2, max: 1 }.close_code(),
            1009
        );
    }

    #[test]
    fn display_is_informative() {
        assert_eq!(
            WsError::ReservedOpcode(0xB).to_string(),
            "reserved opcode 0xb"
        );
        assert_eq!(
            WsError::MessageTooBig { size: 10, max: 4 }.to_string(),
            "message of 10 bytes exceeds the limit of 4"
        );
    }
}
