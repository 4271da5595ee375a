//! Raw WebSocket frames: a hand-driven client that sends exact bytes (protocol violations
//! included) and checks every frame the server sends.

use super::http::{check_101, is_timeout, read_head, tcp, upgrade_request, SAMPLE_ACCEPT};
use super::server::SOON;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encode one frame. `rsv` holds the three reserved bits (0..=7); `mask` None = unmasked.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame.
pub fn cframe(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, Some(MASK))
}

/// A masked client text message in one frame.
pub fn ctext(s: &str) -> Vec<u8> {
    cframe(true, OP_TEXT, s.as_bytes())
}

/// A masked client close frame with a code and reason.
pub fn cclose(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    cframe(true, OP_CLOSE, &p)
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

#[derive(Debug)]
pub enum End {
    Timeout,
    Eof,
    Error(io::Error),
}

/// A hand-driven WebSocket client: exact bytes out, frames in (checked to be well formed
/// server frames: unmasked, no reserved bits, control frames final and ≤ 125 bytes).
pub struct RawWs {
    pub s: TcpStream,
    buf: Vec<u8>,
    /// A fragmented data message being reassembled (control frames may come in between).
    partial: Option<(u8, Vec<u8>)>,
}

impl RawWs {
    pub fn connect(addr: SocketAddr, path: &str) -> RawWs {
        RawWs::connect_pipelined(addr, path, &[])
    }

    /// Send the upgrade request and `extra` bytes in one write, then expect a 101.
    pub fn connect_pipelined(addr: SocketAddr, path: &str, extra: &[u8]) -> RawWs {
        let mut req = upgrade_request(path, "").into_bytes();
        req.extend_from_slice(extra);
        RawWs::upgrade_with(addr, &req)
    }

    /// Send exactly `request` (a hand-written upgrade using the RFC sample key, possibly
    /// followed by frames), then expect a 101 with the sample accept value.
    pub fn upgrade_with(addr: SocketAddr, request: &[u8]) -> RawWs {
        let mut s = tcp(addr);
        s.write_all(request).expect("write upgrade");
        let (head, rest) = read_head(&mut s, SOON).unwrap_or_else(|e| panic!("upgrade: {e}"));
        check_101(&head, SAMPLE_ACCEPT);
        RawWs {
            s,
            buf: rest,
            partial: None,
        }
    }

    /// Wrap a socket whose 101 was already read; `buffered` holds bytes read after it.
    pub fn from_parts(s: TcpStream, buffered: Vec<u8>) -> RawWs {
        RawWs {
            s,
            buf: buffered,
            partial: None,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to server");
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        let now = Instant::now();
        if now >= deadline {
            return Err(End::Timeout);
        }
        self.s.set_read_timeout(Some(deadline - now)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => Err(End::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if is_timeout(&e) => Ok(()),
            Err(e) => Err(End::Error(e)),
        }
    }

    /// One frame from the server.
    pub fn read_frame(&mut self, within: Duration) -> Result<Frame, End> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((f, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(f);
            }
            self.fill(deadline)?;
        }
    }

    /// The next data message (fragments reassembled) or control frame. Returns
    /// `(opcode, payload)` where a reassembled message carries its first frame's opcode.
    pub fn read_message(&mut self, within: Duration) -> Result<(u8, Vec<u8>), End> {
        let deadline = Instant::now() + within;
        loop {
            let now = Instant::now();
            let f = self.read_frame(deadline.saturating_duration_since(now))?;
            if f.opcode >= 8 {
                return Ok((f.opcode, f.payload));
            }
            match (self.partial.as_mut(), f.opcode) {
                (None, OP_TEXT | OP_BINARY) => {
                    if f.fin {
                        return Ok((f.opcode, f.payload));
                    }
                    self.partial = Some((f.opcode, f.payload));
                }
                (Some((_, data)), OP_CONT) => {
                    data.extend_from_slice(&f.payload);
                    if f.fin {
                        return Ok(self.partial.take().expect("partial"));
                    }
                }
                (partial, op) => panic!(
                    "server sent a badly fragmented message: opcode {op} while partial={}",
                    partial.is_some()
                ),
            }
        }
    }

    /// Read until a close frame: returns its code (None for an empty close payload). Data and
    /// ping/pong frames before it are skipped. The close payload is checked (RFC 6455 §5.5.1).
    pub fn read_close(&mut self, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        loop {
            match self.read_frame(deadline.saturating_duration_since(Instant::now())) {
                Ok(f) if f.opcode == OP_CLOSE => {
                    assert!(f.payload.len() != 1, "close payload of one byte");
                    assert!(
                        std::str::from_utf8(f.payload.get(2..).unwrap_or(&[])).is_ok(),
                        "close reason is not UTF-8"
                    );
                    return f.close_code();
                }
                Ok(_) => {}
                Err(e) => panic!("expected a close frame, got {e:?}"),
            }
        }
    }

    /// Expect a close frame with `code` (skipping other frames), answer it like a good client,
    /// then expect the server to close the TCP connection.
    pub fn expect_close(&mut self, code: u16) {
        let got = self.read_close(SOON);
        assert_eq!(got, Some(code), "close code");
        let _ = self.try_send(&cclose(code, ""));
        self.expect_tcp_closed(SOON);
    }

    /// Expect EOF (or a reset) within `within`, discarding any frames that still arrive
    /// except that a data frame after our close would be a bug we do not check here.
    pub fn expect_tcp_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.buf.clear();
            match self.fill(deadline) {
                Ok(()) => {}
                Err(End::Eof) | Err(End::Error(_)) => return,
                Err(End::Timeout) => {
                    panic!("the server did not close the TCP connection within {within:?}")
                }
            }
        }
    }

    /// No frame at all within `within`.
    pub fn expect_no_frame(&mut self, within: Duration) {
        match self.read_frame(within) {
            Err(End::Timeout) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }
}

/// Parse one server frame from `buf`; `None` if incomplete. Panics on frames a server must
/// not send.
pub fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 7;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    assert!(!masked, "server frame is masked (RFC 6455 §5.1)");
    assert_eq!(rsv, 0, "server frame has reserved bits set");
    assert!(
        matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10),
        "server frame with opcode {opcode}"
    );
    let (len, hdr) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if opcode >= 8 {
        assert!(fin && len <= 125, "bad server control frame");
    }
    if buf.len() < hdr + len {
        return None;
    }
    Some((
        Frame {
            fin,
            rsv,
            opcode,
            payload: buf[hdr..hdr + len].to_vec(),
        },
        hdr + len,
    ))
}
