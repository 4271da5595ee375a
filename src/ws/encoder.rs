//! Frame encoding: server frames (unmasked) and client frames (masked).
use super::frame::OpCode;

/// Append one complete, unfragmented, unmasked frame.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let _ = (out, opcode, payload);
    todo!()
}
/// Append only a header (unmasked) for a payload of `len` bytes.
pub fn write_frame_header(out: &mut Vec<u8>, opcode: OpCode, fin: bool, len: usize) {
    let _ = (out, opcode, fin, len);
    todo!()
}
/// Append a close frame with a status code and a reason (truncated to fit 125 bytes on a
/// char boundary).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let _ = (out, code, reason);
    todo!()
}
/// Append one masked frame (client role).
pub fn write_masked_frame(out: &mut Vec<u8>, opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) {
    let _ = (out, opcode, fin, payload, mask);
    todo!()
}
