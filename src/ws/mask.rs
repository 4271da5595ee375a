//! Payload (un)masking (RFC 6455 §5.3), word at a time.
//!
//! "octet i of the transformed data is the XOR of octet i of the original data with octet at
//! index i modulo 4 of the masking key" (RFC 6455 §5.3). Because 8 is a multiple of 4, the
//! mask repeated twice is the same for every 8-byte word once it is rotated to `offset`, so
//! the bulk of the buffer is XORed one `u64` at a time with no `unsafe`: `as_chunks_mut`
//! gives `[u8; 8]` words whatever the alignment (unaligned loads are free on x86-64 and
//! cheap on aarch64), and LLVM vectorises the loop.

/// The mask as it applies from `offset` on: byte `j` is `mask[(offset + j) % 4]`.
#[inline]
pub fn rotate_mask(mask: [u8; 4], offset: usize) -> [u8; 4] {
    // Little-endian so that byte 0 is the low byte; rotating right by 8·k moves mask[k] there.
    let shift = ((offset % 4) * 8) as u32;
    u32::from_le_bytes(mask).rotate_right(shift).to_le_bytes()
}

/// XOR `buf` with `mask`, starting at byte `offset` of the mask cycle (offset % 4).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let m = rotate_mask(mask, offset);
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ word).to_ne_bytes();
    }
    // `words` covered a multiple of 8 (so of 4) bytes: the tail starts at mask phase 0 of `m`.
    for (b, k) in tail.iter_mut().zip(m.iter().cycle()) {
        *b ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_example_mask() {
        // RFC 6455 §5.7: masked "Hello".
        let mut p = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut p, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&p, b"Hello");
    }

    #[test]
    fn rotate_mask_matches_index() {
        let m = [1, 2, 3, 4];
        assert_eq!(rotate_mask(m, 0), [1, 2, 3, 4]);
        assert_eq!(rotate_mask(m, 1), [2, 3, 4, 1]);
        assert_eq!(rotate_mask(m, 2), [3, 4, 1, 2]);
        assert_eq!(rotate_mask(m, 3), [4, 1, 2, 3]);
        assert_eq!(rotate_mask(m, 7), [4, 1, 2, 3]);
    }

    #[test]
    fn matches_byte_loop_at_every_alignment_offset_and_length() {
        let mask = [0xA5, 0x3C, 0x0F, 0xF1];
        let backing: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(151) ^ (i >> 3)) as u8)
            .collect();
        for align in 0..16 {
            for offset in 0..8 {
                for len in 0..=64 {
                    let mut a = backing.clone();
                    let mut b = backing.clone();
                    apply_mask(&mut a[align..align + len], mask, offset);
                    naive(&mut b[align..align + len], mask, offset);
                    assert_eq!(a, b, "align {align} offset {offset} len {len}");
                }
            }
        }
    }

    #[test]
    fn split_application_equals_whole() {
        let mask = [9, 8, 7, 6];
        let orig: Vec<u8> = (0..100u8).collect();
        let mut whole = orig.clone();
        apply_mask(&mut whole, mask, 0);
        for cut in 0..=orig.len() {
            let mut parts = orig.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut);
            assert_eq!(parts, whole, "cut {cut}");
        }
    }

    #[test]
    fn involution() {
        let mut v: Vec<u8> = (0..77u8).collect();
        apply_mask(&mut v, [1, 2, 3, 4], 3);
        apply_mask(&mut v, [1, 2, 3, 4], 3);
        assert_eq!(v, (0..77u8).collect::<Vec<_>>());
    }
}
