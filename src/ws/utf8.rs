//! Incremental, fail-fast UTF-8 validation across frame and read boundaries.

#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Validator {
    _todo: u8,
}

impl Utf8Validator {
    /// Feed more bytes; `false` as soon as the bytes so far cannot be the prefix of valid UTF-8.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let _ = bytes;
        todo!()
    }
    /// True when the bytes fed so far end on a character boundary.
    pub fn is_complete(&self) -> bool {
        todo!()
    }
    pub fn reset(&mut self) {
        todo!()
    }
}
