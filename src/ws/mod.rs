//! RFC 6455 codec: pure, no I/O, no clock. Frames in, events out; frames out into a `Vec<u8>`.
pub mod close;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod frame;
pub mod mask;
pub mod utf8;

pub use decoder::{Decoder, Event};
pub use encoder::{write_close, write_frame, write_frame_header, write_masked_frame};
pub use error::WsError;
pub use frame::OpCode;
