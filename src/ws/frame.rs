//! Frame opcodes and header layout (RFC 6455 §5.2).
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
use super::error::WsError;

/// Longest possible header: 2 + 8 (64-bit length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;
/// "All control frames MUST have a payload length of 125 bytes or less" (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    pub fn to_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }
    /// `None` for the reserved opcodes 0x3–0x7 and 0xB–0xF.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// The whole header length implied by its second byte (the mask bit and the 7-bit length).
pub fn header_len(second_byte: u8) -> usize {
    let ext = match second_byte & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second_byte & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// Length of an encoded header for a payload of `len` bytes (minimal length form).
pub fn encoded_header_len(len: usize, masked: bool) -> usize {
    let ext = if len < 126 {
        0
    } else if len <= 0xFFFF {
        2
    } else {
        8
    };
    2 + ext + if masked { 4 } else { 0 }
}

impl FrameHeader {
    /// The stateless rules visible in the first two bytes, so that a bad frame fails before
    /// the rest of its header arrives. Returns `(fin, opcode, masked)`.
    ///
    /// - "RSV1, RSV2, RSV3 … MUST be 0 unless an extension is negotiated" (RFC 6455 §5.2).
    /// - "If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket
    ///   Connection_" (RFC 6455 §5.2).
    /// - "All control frames … MUST NOT be fragmented" (RFC 6455 §5.5).
    pub fn check_prefix(b0: u8, b1: u8) -> Result<(bool, OpCode, bool), WsError> {
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        let op = b0 & 0x0F;
        let opcode = OpCode::from_u8(op).ok_or(WsError::ReservedOpcode(op))?;
        let fin = b0 & 0x80 != 0;
        if opcode.is_control() && !fin {
            return Err(WsError::FragmentedControl);
        }
        Ok((fin, opcode, b1 & 0x80 != 0))
    }

    /// Parse a header from the start of `buf`: `Ok(None)` while more bytes are needed,
    /// otherwise the header and its length in bytes. Checks every stateless rule: those of
    /// [`FrameHeader::check_prefix`], control payload ≤ 125 bytes (RFC 6455 §5.5) and "the
    /// most significant bit MUST be 0" of a 64-bit length (RFC 6455 §5.2). Non-minimal length
    /// encodings are accepted (the RFC does not require receivers to reject them). The
    /// masking role, fragmentation state and size limit are the decoder's checks.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, WsError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let (fin, opcode, masked) = Self::check_prefix(b0, b1)?;
        let total = header_len(b1);
        // Length rules are checked as soon as the length is in, before the mask.
        let rest = buf.get(2..).unwrap_or(&[]);
        let (payload_len, rest) = match (b1 & 0x7F, rest) {
            (126, [a, b, rest @ ..]) => (u64::from(u16::from_be_bytes([*a, *b])), rest),
            (127, [a, b, c, d, e, f, g, h, rest @ ..]) => {
                let len = u64::from_be_bytes([*a, *b, *c, *d, *e, *f, *g, *h]);
                if len >> 63 != 0 {
                    return Err(WsError::LengthMsbSet);
                }
                (len, rest)
            }
            (126 | 127, _) => return Ok(None),
            (len, rest) => (u64::from(len), rest),
        };
        if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(WsError::ControlTooLong(payload_len));
        }
        let mask = match (masked, rest) {
            (true, [a, b, c, d, ..]) => Some([*a, *b, *c, *d]),
            (false, _) => None,
            _ => return Ok(None),
        };
        Ok(Some((
            FrameHeader {
                fin,
                opcode,
                mask,
                payload_len,
            },
            total,
        )))
    }

    /// Append this header, with the minimal length form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let b0 = (u8::from(self.fin) << 7) | self.opcode.to_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        if self.payload_len < 126 {
            out.extend_from_slice(&[b0, mask_bit | self.payload_len as u8]);
        } else if let Ok(len) = u16::try_from(self.payload_len) {
            out.extend_from_slice(&[b0, mask_bit | 126]);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.extend_from_slice(&[b0, mask_bit | 127]);
            out.extend_from_slice(&self.payload_len.to_be_bytes());
        }
        if let Some(mask) = self.mask {
            out.extend_from_slice(&mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_round_trip() {
        for v in 0..=15u8 {
            match OpCode::from_u8(v) {
                Some(op) => assert_eq!(op.to_u8(), v),
                None => assert!(matches!(v, 3..=7 | 11..=15), "{v}"),
            }
        }
        assert!(OpCode::Ping.is_control() && !OpCode::Text.is_control());
    }

    #[test]
    fn parse_rfc_examples() {
        // RFC 6455 §5.7: unmasked "Hello".
        let h = FrameHeader::parse(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!(
            h,
            (
                FrameHeader {
                    fin: true,
                    opcode: OpCode::Text,
                    mask: None,
                    payload_len: 5
                },
                2
            )
        );
        // Masked "Hello".
        let h = FrameHeader::parse(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f])
            .unwrap()
            .unwrap();
        assert_eq!(h.0.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.1, 6);
        // 256 bytes binary in one unmasked frame.
        let h = FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!((h.0.payload_len, h.1), (256, 4));
        // 64 KiB binary in one unmasked frame.
        let h = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.0.payload_len, h.1), (65536, 10));
    }

    #[test]
    fn parse_needs_every_header_byte() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0, 0, 1, 2, 3, 4];
        for n in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..n]), Ok(None), "{n}");
        }
        assert_eq!(FrameHeader::parse(&full).unwrap().unwrap().1, 14);
    }

    #[test]
    fn parse_rejects() {
        assert_eq!(
            FrameHeader::parse(&[0xC1, 0x80]),
            Err(WsError::ReservedBits)
        );
        assert_eq!(
            FrameHeader::parse(&[0xA1, 0x80]),
            Err(WsError::ReservedBits)
        );
        assert_eq!(
            FrameHeader::parse(&[0x91, 0x80]),
            Err(WsError::ReservedBits)
        );
        assert_eq!(
            FrameHeader::parse(&[0x83, 0x80]),
            Err(WsError::ReservedOpcode(3))
        );
        assert_eq!(
            FrameHeader::parse(&[0x8F, 0x80]),
            Err(WsError::ReservedOpcode(15))
        );
        assert_eq!(
            FrameHeader::parse(&[0x09, 0x80]),
            Err(WsError::FragmentedControl)
        );
        assert_eq!(
            FrameHeader::parse(&[0x89, 0x7E, 0, 126]),
            Err(WsError::ControlTooLong(126))
        );
        assert_eq!(
            FrameHeader::parse(&[0x88, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1]),
            Err(WsError::LengthMsbSet)
        );
        // Non-minimal lengths are allowed.
        let h = FrameHeader::parse(&[0x82, 0x7E, 0, 5]).unwrap().unwrap();
        assert_eq!(h.0.payload_len, 5);
        // A control frame with a non-minimal length ≤ 125 is fine.
        let h = FrameHeader::parse(&[0x89, 0x7E, 0, 125]).unwrap().unwrap();
        assert_eq!(h.0.payload_len, 125);
    }

    #[test]
    fn encode_minimal_forms() {
        for (len, hl) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (1 << 40, 10),
        ] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = FrameHeader {
                    fin: true,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len as u64,
                };
                let mut out = Vec::new();
                h.encode(&mut out);
                let want = hl + if mask.is_some() { 4 } else { 0 };
                assert_eq!(out.len(), want);
                assert_eq!(encoded_header_len(len, mask.is_some()), want);
                assert_eq!(header_len(out[1]), want);
                assert_eq!(FrameHeader::parse(&out), Ok(Some((h, want))));
            }
        }
    }
}
