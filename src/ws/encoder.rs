//! Frame encoding: server frames (unmasked) and client frames (masked).
//!
//! "A server MUST NOT mask any frames that it sends to the client" (RFC 6455 §5.1); lengths
//! use the minimal 7/16/64-bit form (RFC 6455 §5.2).
use super::close::write_close_payload;
use super::frame::{FrameHeader, OpCode};
use super::mask::apply_mask;

/// Append one complete, unfragmented, unmasked frame.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    write_frame_header(out, opcode, true, payload.len());
    out.extend_from_slice(payload);
}
/// Append only a header (unmasked) for a payload of `len` bytes.
pub fn write_frame_header(out: &mut Vec<u8>, opcode: OpCode, fin: bool, len: usize) {
    debug_assert!(
        !opcode.is_control() || (fin && len <= 125),
        "invalid control frame"
    );
    FrameHeader {
        fin,
        opcode,
        mask: None,
        payload_len: len as u64,
    }
    .encode(out);
}
/// Append a close frame with a status code and a reason (truncated to fit 125 bytes on a
/// char boundary).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    // "1005 … 1006 … 1015 … MUST NOT be set as a status code in a Close control frame by an
    // endpoint" (RFC 6455 §7.4.1).
    debug_assert!(
        !matches!(code, 1005 | 1006 | 1015),
        "close code {code} must not be sent"
    );
    let start = out.len();
    // Payload ≤ 125 bytes: the header is always 2 bytes; write a placeholder and patch it.
    out.extend_from_slice(&[0, 0]);
    write_close_payload(out, code, reason);
    let len = out.len() - start - 2;
    debug_assert!(len <= 125);
    if let Some(h) = out.get_mut(start..start + 2) {
        h.copy_from_slice(&[0x80 | OpCode::Close.to_u8(), len as u8]);
    }
}
/// Append one masked frame (client role).
pub fn write_masked_frame(
    out: &mut Vec<u8>,
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    mask: [u8; 4],
) {
    FrameHeader {
        fin,
        opcode,
        mask: Some(mask),
        payload_len: payload.len() as u64,
    }
    .encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(body) = out.get_mut(start..) {
        apply_mask(body, mask, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_unmasked_hello() {
        let mut out = Vec::new();
        write_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn rfc_masked_hello() {
        let mut out = Vec::new();
        write_masked_frame(
            &mut out,
            OpCode::Text,
            true,
            b"Hello",
            [0x37, 0xfa, 0x21, 0x3d],
        );
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn rfc_fragmented_and_ping() {
        let mut out = Vec::new();
        write_frame_header(&mut out, OpCode::Text, false, 3);
        out.extend_from_slice(b"Hel");
        write_frame_header(&mut out, OpCode::Continuation, true, 2);
        out.extend_from_slice(b"lo");
        assert_eq!(out, [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
        let mut out = Vec::new();
        write_frame(&mut out, OpCode::Ping, b"Hello");
        assert_eq!(out, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn rfc_length_forms() {
        let mut out = Vec::new();
        write_frame(&mut out, OpCode::Binary, &[0u8; 256]);
        assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(out.len(), 4 + 256);
        let mut out = Vec::new();
        write_frame(&mut out, OpCode::Binary, &vec![0u8; 65536]);
        assert_eq!(out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
        assert_eq!(out.len(), 10 + 65536);
        let mut out = Vec::new();
        write_frame_header(&mut out, OpCode::Binary, true, 125);
        write_frame_header(&mut out, OpCode::Binary, true, 126);
        write_frame_header(&mut out, OpCode::Binary, true, 65535);
        assert_eq!(out, [0x82, 125, 0x82, 126, 0, 126, 0x82, 126, 0xFF, 0xFF]);
    }

    #[test]
    fn close_frames() {
        let mut out = vec![0xAA];
        write_close(&mut out, 1000, "");
        assert_eq!(out, [0xAA, 0x88, 0x02, 0x03, 0xe8]);
        let mut out = Vec::new();
        write_close(&mut out, 1001, &"ü".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert_eq!(out.len() - 2, 2 + 122); // 61 two-byte chars.
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
