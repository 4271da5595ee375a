//! Payload (un)masking (RFC 6455 §5.3), word at a time.

/// XOR `buf` with `mask`, starting at byte `offset` of the mask cycle (offset % 4).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let _ = (buf, mask, offset);
    todo!()
}
