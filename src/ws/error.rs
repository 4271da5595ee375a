//! Codec errors and the close code each maps to (RFC 6455 §7.4.1).

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    Todo,
}

impl WsError {
    /// 1002 protocol error, 1007 invalid payload data, 1009 message too big.
    pub fn close_code(&self) -> u16 {
        todo!()
    }
}
