//! One client connection: its socket, phase and the small state each phase needs.
use crate::chat::ratelimit::RateLimiter;
use crate::ws::Decoder;
use crate::xshard::ConnId;
use mio::net::TcpStream;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP request head.
    Handshake,
    /// A non-101 response is queued; then shut down the write side and linger.
    HttpReply,
    /// WebSocket open.
    Open,
    /// We queued a close frame. With `SHUT_AFTER_FLUSH` we shut down the write side once it is
    /// sent; without it we keep decoding until the peer's close arrives (or the deadline).
    Closing,
    /// Write side shut down: read and discard until EOF or the linger deadline, so the peer
    /// reads our last bytes instead of a reset.
    Linger,
}

/// Flag bits in [`Conn::flags`].
pub mod flag {
    /// The endpoint is `/echo` (otherwise `/ws`).
    pub const ECHO: u16 = 1;
    /// The kernel accepted our last write without `WouldBlock`.
    pub const WRITABLE: u16 = 1 << 1;
    /// On the shard's dirty list (output to flush at the end of the turn).
    pub const DIRTY: u16 = 1 << 2;
    /// An idle ping is outstanding.
    pub const PING_SENT: u16 = 1 << 3;
    /// Shut down the write side once the output queue is empty.
    pub const SHUT_AFTER_FLUSH: u16 = 1 << 4;
    /// Counted in `Shared::ws_open`.
    pub const COUNTED_WS: u16 = 1 << 5;
    /// Counted in `Shared::online`.
    pub const COUNTED_ONLINE: u16 = 1 << 6;
    /// The message being assembled is text.
    pub const ASSEMBLING_TEXT: u16 = 1 << 7;
    /// Closed for not reading: do not wait long for its output to drain.
    pub const SLOW: u16 = 1 << 8;
    /// Scheduled to be closed at the end of this turn.
    pub const DOOMED: u16 = 1 << 9;
    /// Writing failed (reset or broken pipe): no more output; read what is left, then close.
    pub const WRITE_DEAD: u16 = 1 << 10;
    /// Cluster mode: this user has a "do not re-pair" relation stored in Redis (a chat of its
    /// ended by `next`/`find`), to clear when it pairs here with someone else or leaves.
    pub const AVOIDS: u16 = 1 << 11;
}

/// Chat state of a `/ws` connection, mirrored from the matchmaker's decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatPhase {
    Idle,
    Waiting,
    Paired,
}

#[derive(Debug, Clone, Copy)]
pub struct ChatState {
    pub phase: ChatPhase,
    /// Increases with each find/next sent to the matchmaker; a pairing answering an older
    /// request is stale. 0 = never asked.
    pub ticket: u32,
    pub partner: ConnId,
    pub epoch: u64,
    /// When the current wait began (shard clock, ms), for the time-to-match histogram.
    pub waiting_since: u32,
}

impl Default for ChatState {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatState {
    pub const fn new() -> Self {
        ChatState {
            phase: ChatPhase::Idle,
            ticket: 0,
            partner: ConnId {
                node: 0,
                shard: 0,
                slot: 0,
                gen: 0,
            },
            epoch: 0,
            waiting_since: 0,
        }
    }
}

pub struct Conn {
    pub sock: TcpStream,
    pub gen: u32,
    pub phase: Phase,
    pub flags: u16,
    /// When the phase began, or the idle ping was sent (shard clock, ms, wrapping).
    pub since: u32,
    /// When the last bytes arrived.
    pub last_rx: u32,
    pub decoder: Decoder,
    /// Pending output (empty and unallocated while idle); `out_pos` bytes of it are sent.
    pub out: Vec<u8>,
    pub out_pos: usize,
    /// The partial request head, or the partial message being reassembled. Allocated only
    /// while one spans several reads.
    pub assembly: Option<Box<Vec<u8>>>,
    pub chat: ChatState,
    pub rate: RateLimiter,
}

impl Conn {
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }
    pub fn pending_out(&self) -> usize {
        self.out.len().saturating_sub(self.out_pos)
    }
}
