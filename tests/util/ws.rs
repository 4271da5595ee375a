//! An independent WebSocket client (tungstenite) and the chat protocol's messages.

use super::http::is_timeout;
use super::server::SOON;
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

pub const WAITING: &str = r#"{"type":"waiting"}"#;
pub const PARTNER_LEFT: &str = r#"{"type":"partner_left"}"#;

pub enum Recv {
    Msg(Message),
    Timeout,
    Closed(String),
}

pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

pub fn try_ws_connect(addr: SocketAddr, path: &str) -> Result<Client, String> {
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    match tungstenite::client::client(format!("ws://{addr}{path}"), s) {
        Ok((ws, _resp)) => Ok(Client { ws }),
        Err(e) => Err(e.to_string()),
    }
}

pub fn ws_connect(addr: SocketAddr, path: &str) -> Client {
    try_ws_connect(addr, path).unwrap_or_else(|e| panic!("WebSocket connect to {path}: {e}"))
}

/// A chat client on `/ws` whose `hello` has been read.
pub fn chat(addr: SocketAddr) -> Client {
    let mut c = ws_connect(addr, "/ws");
    c.hello();
    c
}

/// Two chat clients paired with each other (no interests).
pub fn pair(addr: SocketAddr) -> (Client, Client) {
    let mut a = chat(addr);
    let mut b = chat(addr);
    a.send_text(r#"{"type":"find"}"#);
    a.expect_json(WAITING);
    b.send_text(r#"{"type":"find"}"#);
    assert_eq!(b.expect_paired(), Vec::<String>::new());
    assert_eq!(a.expect_paired(), Vec::<String>::new());
    (a, b)
}

/// `a` on `a_at` and `b` on `b_at` (the same server or two cluster nodes), paired with each
/// other on the interest `tag`, which no other client may use.
pub fn pair_tagged(a_at: SocketAddr, b_at: SocketAddr, tag: &str) -> (Client, Client) {
    let mut a = chat(a_at);
    let mut b = chat(b_at);
    a.send_text(&find_msg(&[tag]));
    a.expect_json(WAITING);
    b.send_text(&find_msg(&[tag]));
    assert_eq!(b.expect_paired(), vec![tag.to_string()]);
    assert_eq!(a.expect_paired(), vec![tag.to_string()]);
    (a, b)
}

/// `n` numbered messages each way, interleaved; each side must receive the other's in order,
/// exactly once.
pub fn exchange(a: &mut Client, b: &mut Client, n: usize, tag: &str) {
    for i in 0..n {
        a.send_text(&msg(&format!("{tag} a->b {i}")));
        b.send_text(&msg(&format!("{tag} b->a {i}")));
    }
    for i in 0..n {
        b.expect_json(&msg(&format!("{tag} a->b {i}")));
    }
    for i in 0..n {
        a.expect_json(&msg(&format!("{tag} b->a {i}")));
    }
}

pub fn find_msg(interests: &[&str]) -> String {
    serde_json::json!({"type":"find","interests":interests}).to_string()
}

pub fn msg(text: &str) -> String {
    serde_json::json!({"type":"message","text":text}).to_string()
}

impl Client {
    pub fn send(&mut self, m: Message) {
        self.ws.send(m).expect("send");
    }

    pub fn send_text(&mut self, s: &str) {
        self.send(Message::text(s.to_string()));
    }

    /// The next message (any kind) within `within`.
    pub fn recv(&mut self, within: Duration) -> Recv {
        let deadline = Instant::now() + within;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Recv::Timeout;
            }
            self.ws
                .get_ref()
                .set_read_timeout(Some(deadline - now))
                .unwrap();
            match self.ws.read() {
                Ok(m) => return Recv::Msg(m),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                Err(e) => return Recv::Closed(e.to_string()),
            }
        }
    }

    /// The next text message, parsed as a JSON object (ping/pong skipped).
    pub fn next_json(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Msg(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent invalid JSON {t:?}: {e}"));
                    assert!(v.is_object(), "server message is not an object: {t}");
                    assert!(
                        v["type"].is_string(),
                        "server message without a string type: {t}"
                    );
                    return v;
                }
                Recv::Msg(Message::Ping(_)) | Recv::Msg(Message::Pong(_)) => {}
                Recv::Msg(m) => panic!("expected a text message, got {m:?}"),
                Recv::Timeout => panic!("no message within {within:?}"),
                Recv::Closed(e) => panic!("connection closed while waiting for a message: {e}"),
            }
        }
    }

    /// The next message must equal `expected` (a JSON text), compared as JSON values.
    pub fn expect_json(&mut self, expected: &str) -> Value {
        let want: Value = serde_json::from_str(expected).expect("expected JSON");
        let got = self.next_json(SOON);
        assert_eq!(got, want, "server message");
        got
    }

    pub fn expect_type(&mut self, ty: &str) -> Value {
        let got = self.next_json(SOON);
        assert_eq!(got["type"], ty, "expected a `{ty}` message, got {got}");
        got
    }

    /// `{"type":"error","code":CODE,"message":<non-empty sentence>}`.
    pub fn expect_error(&mut self, code: &str) {
        let got = self.next_json(SOON);
        assert_eq!(got["type"], "error", "expected error {code}, got {got}");
        assert_eq!(got["code"], code, "error code, got {got}");
        assert!(
            got["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty()),
            "error without a message sentence: {got}"
        );
    }

    /// Like `expect_error`, naming the offending input in the failure message.
    pub fn expect_error_for(&mut self, code: &str, what: &str) {
        let got = self.next_json(SOON);
        assert!(
            got["type"] == "error" && got["code"] == code,
            "for {what:?} expected error {code}, got {got}"
        );
        assert!(
            got["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty()),
            "error without a message: {got}"
        );
    }

    /// Reads `hello`, returns `online`.
    pub fn hello(&mut self) -> u64 {
        let v = self.expect_type("hello");
        v["online"]
            .as_u64()
            .unwrap_or_else(|| panic!("hello.online is not a count: {v}"))
    }

    /// `paired`, optionally preceded by one `waiting`; returns `common`.
    pub fn expect_paired(&mut self) -> Vec<String> {
        self.expect_paired_within(SOON)
    }

    pub fn expect_paired_within(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut v = self.next_json(within);
        if v["type"] == "waiting" {
            v = self.next_json(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
        }
        assert_eq!(v["type"], "paired", "expected paired, got {v}");
        let common = v["common"]
            .as_array()
            .unwrap_or_else(|| panic!("paired.common is not a list: {v}"));
        common
            .iter()
            .map(|c| c.as_str().expect("common tag is a string").to_string())
            .collect()
    }

    /// No text/binary message within `within` (time-based by nature: used only where the
    /// protocol is about time or to show that something did not happen).
    pub fn expect_quiet(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Timeout => return,
                Recv::Msg(Message::Ping(_)) | Recv::Msg(Message::Pong(_)) => {}
                Recv::Msg(m) => panic!("expected no message, got {m:?}"),
                Recv::Closed(e) => panic!("connection closed: {e}"),
            }
        }
    }

    /// Show that the server sent nothing since the last expected message: send a message the
    /// server must reject and check that the very next message is that rejection.
    pub fn expect_no_reply(&mut self) {
        self.send_text(r#"{"type":"probe-unknown"}"#);
        self.expect_error("unknown_type");
    }

    /// Expect a close frame with `code` (skipping other messages), then the end of the
    /// connection.
    pub fn expect_close(&mut self, code: u16) {
        let deadline = Instant::now() + SOON;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Msg(Message::Close(Some(f))) => {
                    assert_eq!(
                        u16::from(f.code),
                        code,
                        "close code (reason {:?})",
                        f.reason.as_str()
                    );
                    break;
                }
                Recv::Msg(Message::Close(None)) => panic!("close without a code, expected {code}"),
                Recv::Msg(_) => {}
                Recv::Timeout => panic!("no close {code} within {SOON:?}"),
                Recv::Closed(e) => {
                    panic!("connection ended without a close frame (expected {code}): {e}")
                }
            }
        }
        self.expect_end();
    }

    /// Start the close handshake ourselves: the server answers with a close frame and then
    /// closes the connection.
    pub fn close_and_end(&mut self) {
        self.ws.close(None).expect("send close");
        let deadline = Instant::now() + SOON;
        let mut replied = false;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Msg(Message::Close(f)) => {
                    let code = f.as_ref().map(|f| u16::from(f.code));
                    assert!(code.is_none() || code == Some(1000), "close reply {f:?}");
                    replied = true;
                }
                Recv::Msg(_) => {}
                Recv::Closed(e) => {
                    assert!(replied, "the connection ended without a close reply: {e}");
                    return;
                }
                Recv::Timeout => panic!("no end of the connection within {SOON:?} after our close"),
            }
        }
    }

    /// After a close frame: our reply goes out and the server closes the connection.
    pub fn expect_end(&mut self) {
        match self.recv(SOON) {
            Recv::Closed(_) => {}
            Recv::Timeout => {
                panic!("the connection was not closed within {SOON:?} after the close frame")
            }
            Recv::Msg(m) => panic!("message after close: {m:?}"),
        }
    }
}
