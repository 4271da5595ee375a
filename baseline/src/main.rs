//! BASELINE — not the roulette server. The ordinary way a Rust developer would write the
//! roulette chat protocol (docs/PROTOCOL.md, `/ws` and `/echo`): tokio's multi-thread
//! runtime, tokio-tungstenite, one task per connection plus one writer task fed by an
//! unbounded mpsc channel, and all chat state behind one `Mutex`. It exists only as the
//! peer in `scripts/bench-compare.sh`.
//!
//! What it leaves out on purpose (not needed to compare throughput, latency and memory):
//! rate limiting, outbound caps, idle pings, the connection limit, origin checks, draining,
//! metrics, `/healthz` and the web page.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Baseline tokio + tokio-tungstenite server of the roulette protocol (benchmark peer only).
#[derive(Parser, Debug)]
#[command(name = "baseline", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed to stderr).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// tungstenite's per-connection read buffer (`WebSocketConfig::read_buffer_size`);
    /// tungstenite's default (128 KiB) when absent.
    #[arg(long)]
    read_buffer: Option<usize>,
    /// tokio worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Interest wait in seconds before a waiting client with interests is open to anyone.
    #[arg(long, default_value_t = 5.0)]
    interest_wait: f64,
    /// Longest chat line, in characters after trimming.
    #[arg(long, default_value_t = 2000)]
    max_text_chars: usize,
}

/// Limits from PROTOCOL.md.
const MAX_CHAT_MESSAGE: usize = 64 * 1024;
const MAX_ECHO_MESSAGE: usize = 16 * 1024 * 1024;
const MAX_INTERESTS: usize = 8;
const MAX_TAG_CHARS: usize = 32;

type Tx = mpsc::UnboundedSender<Message>;

enum State {
    Idle,
    Waiting { seq: u64, since: Instant },
    Chatting { partner: u64 },
}

struct Client {
    tx: Tx,
    state: State,
    /// Interests of the last `find`.
    interests: Vec<String>,
    /// The partner of the chat this client last ended by `next`/`find` (or that ended so).
    avoid: Option<u64>,
}

/// All chat state: clients and the queue of waiting ones (oldest first).
struct Hub {
    clients: HashMap<u64, Client>,
    queue: Vec<(u64, u64)>,
    next_seq: u64,
    interest_wait: Duration,
}

fn send(tx: &Tx, v: Value) {
    let _ = tx.send(Message::text(v.to_string()));
}

fn common_interests(a: &[String], b: &[String]) -> Vec<String> {
    let mut c: Vec<String> = a.iter().filter(|t| b.contains(t)).cloned().collect();
    c.sort();
    c.dedup();
    c
}

impl Hub {
    fn send_to(&self, id: u64, v: Value) {
        if let Some(c) = self.clients.get(&id) {
            send(&c.tx, v);
        }
    }

    /// End `id`'s chat, if any; the partner gets `partner_left`. With `avoid`, the two are
    /// not paired again until one of them pairs with someone else.
    fn end_chat(&mut self, id: u64, avoid: bool) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let State::Chatting { partner } = c.state else {
            return;
        };
        c.state = State::Idle;
        if avoid {
            c.avoid = Some(partner);
        }
        if let Some(p) = self.clients.get_mut(&partner) {
            p.state = State::Idle;
            if avoid {
                p.avoid = Some(id);
            }
            send(&p.tx, json!({"type": "partner_left"}));
        }
    }

    fn dequeue(&mut self, id: u64) {
        if let Some(c) = self.clients.get_mut(&id) {
            if let State::Waiting { seq, .. } = c.state {
                c.state = State::Idle;
                self.queue.retain(|&(s, _)| s != seq);
            }
        }
    }

    fn is_open(&self, c: &Client, now: Instant) -> bool {
        match c.state {
            State::Waiting { since, .. } => {
                c.interests.is_empty() || since + self.interest_wait <= now
            }
            _ => c.interests.is_empty(),
        }
    }

    /// The best waiting candidate for `id`: sharing an interest first, then (if `id` is
    /// open) any open one; oldest first within each group.
    fn candidate(&self, id: u64, now: Instant) -> Option<u64> {
        let me = self.clients.get(&id)?;
        let eligible = |other: u64| {
            other != id
                && !(me.avoid == Some(other)
                    && self.clients.get(&other).and_then(|o| o.avoid) == Some(id))
        };
        let mut shared = self.queue.iter().filter(|&&(_, o)| {
            eligible(o)
                && self
                    .clients
                    .get(&o)
                    .is_some_and(|c| c.interests.iter().any(|t| me.interests.contains(t)))
        });
        if let Some(&(_, o)) = shared.next() {
            return Some(o);
        }
        if !self.is_open(me, now) {
            return None;
        }
        self.queue
            .iter()
            .find(|&&(_, o)| {
                eligible(o) && self.clients.get(&o).is_some_and(|c| self.is_open(c, now))
            })
            .map(|&(_, o)| o)
    }

    fn pair(&mut self, a: u64, b: u64) {
        self.dequeue(a);
        self.dequeue(b);
        for (me, partner) in [(a, b), (b, a)] {
            let old = self.clients.get_mut(&me).and_then(|c| {
                c.state = State::Chatting { partner };
                c.avoid.take()
            });
            if let Some(x) = old {
                if let Some(xc) = self.clients.get_mut(&x) {
                    if xc.avoid == Some(me) {
                        xc.avoid = None;
                    }
                }
            }
        }
        let common = match (self.clients.get(&a), self.clients.get(&b)) {
            (Some(ca), Some(cb)) => common_interests(&ca.interests, &cb.interests),
            _ => Vec::new(),
        };
        let msg = json!({"type": "paired", "common": common});
        self.send_to(a, msg.clone());
        self.send_to(b, msg);
    }

    /// Queue `id` (idle) at the back, pairing it at once if it can. Returns the queue
    /// sequence number when it is left waiting with interests (its wait must be timed).
    fn enqueue(&mut self, id: u64) -> Option<u64> {
        let now = Instant::now();
        let seq = self.next_seq;
        self.next_seq += 1;
        let c = self.clients.get_mut(&id)?;
        c.state = State::Waiting { seq, since: now };
        let has_interests = !c.interests.is_empty();
        self.queue.push((seq, id));
        if let Some(other) = self.candidate(id, now) {
            self.pair(id, other);
            return None;
        }
        self.send_to(id, json!({"type": "waiting"}));
        has_interests.then_some(seq)
    }

    /// `id`'s interest wait (for queue entry `seq`) has passed: it is now open to anyone.
    fn wait_passed(&mut self, id: u64, seq: u64) {
        let still = matches!(
            self.clients.get(&id).map(|c| &c.state),
            Some(State::Waiting { seq: s, .. }) if *s == seq
        );
        if still {
            if let Some(other) = self.candidate(id, Instant::now()) {
                self.pair(id, other);
            }
        }
    }

    fn disconnect(&mut self, id: u64) {
        self.end_chat(id, false);
        self.dequeue(id);
        if let Some(c) = self.clients.remove(&id) {
            if let Some(x) = c.avoid {
                if let Some(xc) = self.clients.get_mut(&x) {
                    if xc.avoid == Some(id) {
                        xc.avoid = None;
                    }
                }
            }
        }
    }
}

enum ClientMsg {
    Find(Vec<String>),
    Message(String),
    Typing(bool),
    Next,
    Leave,
}

fn parse(text: &str, max_text_chars: usize) -> Result<ClientMsg, &'static str> {
    let v: Value = serde_json::from_str(text).map_err(|_| "bad_json")?;
    let obj = v.as_object().ok_or("bad_json")?;
    let kind = obj.get("type").and_then(Value::as_str).ok_or("bad_json")?;
    match kind {
        "find" => {
            let tags = match obj.get("interests") {
                None | Some(Value::Null) => return Ok(ClientMsg::Find(Vec::new())),
                Some(Value::Array(a)) => a,
                Some(_) => return Err("bad_interests"),
            };
            if tags.len() > MAX_INTERESTS {
                return Err("bad_interests");
            }
            let mut out: Vec<String> = Vec::new();
            for t in tags {
                let tag = t.as_str().ok_or("bad_interests")?.trim().to_lowercase();
                let n = tag.chars().count();
                if n == 0 || n > MAX_TAG_CHARS {
                    return Err("bad_interests");
                }
                if !out.contains(&tag) {
                    out.push(tag);
                }
            }
            Ok(ClientMsg::Find(out))
        }
        "message" => {
            let t = obj.get("text").and_then(Value::as_str).ok_or("bad_json")?;
            let t = t.trim();
            if t.is_empty() {
                Err("empty")
            } else if t.chars().count() > max_text_chars {
                Err("too_long")
            } else {
                Ok(ClientMsg::Message(t.to_string()))
            }
        }
        "typing" => obj
            .get("active")
            .and_then(Value::as_bool)
            .map(ClientMsg::Typing)
            .ok_or("bad_json"),
        "next" => Ok(ClientMsg::Next),
        "leave" => Ok(ClientMsg::Leave),
        _ => Err("unknown_type"),
    }
}

fn error_sentence(code: &str) -> &'static str {
    match code {
        "bad_json" => "That message was not valid JSON with a string \"type\".",
        "unknown_type" => "Unknown message type.",
        "not_chatting" => "You're not chatting with anyone right now.",
        "too_long" => "Your message is too long.",
        "empty" => "Your message is empty.",
        _ => "Interests must be a list of at most 8 words of 1 to 32 characters.",
    }
}

struct Server {
    hub: Mutex<Hub>,
    online: AtomicU64,
    next_id: AtomicU64,
    config: WebSocketConfig,
    max_text_chars: usize,
}

impl Server {
    fn on_text(self: &Arc<Self>, id: u64, text: &str) {
        let msg = match parse(text, self.max_text_chars) {
            Ok(m) => m,
            Err(code) => {
                let hub = self.hub.lock().unwrap();
                hub.send_to(
                    id,
                    json!({"type": "error", "code": code, "message": error_sentence(code)}),
                );
                return;
            }
        };
        let mut hub = self.hub.lock().unwrap();
        let timed = match msg {
            ClientMsg::Message(t) => {
                if let Some(State::Chatting { partner }) = hub.clients.get(&id).map(|c| &c.state) {
                    hub.send_to(*partner, json!({"type": "message", "text": t}));
                } else {
                    hub.send_to(
                        id,
                        json!({"type": "error", "code": "not_chatting",
                               "message": error_sentence("not_chatting")}),
                    );
                }
                None
            }
            ClientMsg::Typing(active) => {
                if let Some(State::Chatting { partner }) = hub.clients.get(&id).map(|c| &c.state) {
                    hub.send_to(*partner, json!({"type": "typing", "active": active}));
                }
                None
            }
            ClientMsg::Find(interests) => {
                hub.end_chat(id, true);
                hub.dequeue(id);
                if let Some(c) = hub.clients.get_mut(&id) {
                    c.interests = interests;
                }
                hub.enqueue(id)
            }
            ClientMsg::Next => match hub.clients.get(&id).map(|c| &c.state) {
                Some(State::Waiting { .. }) => {
                    hub.send_to(id, json!({"type": "waiting"}));
                    None
                }
                _ => {
                    hub.end_chat(id, true);
                    hub.enqueue(id)
                }
            },
            ClientMsg::Leave => {
                hub.end_chat(id, false);
                hub.dequeue(id);
                None
            }
        };
        if let Some(seq) = timed {
            let wait = hub.interest_wait;
            drop(hub);
            let server = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                server.hub.lock().unwrap().wait_passed(id, seq);
            });
        }
    }
}

fn close_msg(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

// `ErrorResponse` is tungstenite's type for a rejected handshake (its callback API).
#[allow(clippy::result_large_err)]
async fn handle(server: Arc<Server>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    let route = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().path().to_string();
        if path == "/ws" || path == "/echo" {
            Ok(resp)
        } else {
            let mut not_found = ErrorResponse::new(Some("not found\n".into()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            Err(not_found)
        }
    };
    let ws =
        match tokio_tungstenite::accept_hdr_async_with_config(stream, route, Some(server.config))
            .await
        {
            Ok(ws) => ws,
            Err(_) => return,
        };
    if path == "/echo" {
        echo(ws).await;
        return;
    }

    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let id = server.next_id.fetch_add(1, Ordering::Relaxed);
    let online = server.online.fetch_add(1, Ordering::Relaxed) + 1;
    send(&tx, json!({"type": "hello", "online": online}));
    server.hub.lock().unwrap().clients.insert(
        id,
        Client {
            tx: tx.clone(),
            state: State::Idle,
            interests: Vec::new(),
            avoid: None,
        },
    );
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let last = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || last {
                break;
            }
        }
    });

    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                if t.len() > MAX_CHAT_MESSAGE {
                    let _ = tx.send(close_msg(CloseCode::Size, "message too big"));
                    break;
                }
                server.on_text(id, t.as_str());
            }
            Ok(Message::Binary(_)) => {
                let _ = tx.send(close_msg(CloseCode::Unsupported, "binary not accepted"));
                break;
            }
            // tungstenite queues the Close reply and flushes it on the next read, which
            // then ends the stream: keep reading until it does.
            Ok(Message::Close(_)) => {}
            Ok(_) => {}
            Err(WsError::Capacity(_)) => {
                let _ = tx.send(close_msg(CloseCode::Size, "message too big"));
                break;
            }
            Err(_) => break,
        }
    }
    server.hub.lock().unwrap().disconnect(id);
    server.online.fetch_sub(1, Ordering::Relaxed);
    drop(tx);
    let _ = writer.await;
}

async fn echo(mut ws: tokio_tungstenite::WebSocketStream<TcpStream>) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    let mut config = WebSocketConfig::default().max_message_size(Some(MAX_ECHO_MESSAGE));
    if let Some(n) = args.read_buffer {
        config = config.read_buffer_size(n);
    }
    let server = Arc::new(Server {
        hub: Mutex::new(Hub {
            clients: HashMap::new(),
            queue: Vec::new(),
            next_seq: 0,
            interest_wait: Duration::from_secs_f64(args.interest_wait.max(0.0)),
        }),
        online: AtomicU64::new(0),
        next_id: AtomicU64::new(0),
        config,
        max_text_chars: args.max_text_chars,
    });
    rt.block_on(async move {
        let listener = TcpListener::bind(args.listen).await?;
        eprintln!("baseline listening on {}", listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(Arc::clone(&server), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning or exiting.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}
