//! An unrelated pair that keeps chatting while a fault is going on, and what it saw.

use super::ws::{msg, pair_tagged, Client, Recv};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// What an unrelated pair saw while a fault was going on (see [`Chatter`]).
#[derive(Debug, Default)]
pub struct ChatReport {
    /// Messages sent by a (index 0) and by b (index 1).
    pub sent: [u32; 2],
    /// The sequence numbers a received (from b) and b received (from a), in arrival order.
    pub got: [Vec<u32>; 2],
    /// The longest time from sending a message to its arrival at the partner.
    pub max_latency: Duration,
    /// Anything unexpected (a message from elsewhere, an error reply, a close).
    pub errors: Vec<String>,
    /// How long the pair chatted.
    pub ran_for: Duration,
}

impl ChatReport {
    /// Each side received exactly the other's sequence 0..sent, in order, and nothing else.
    pub fn assert_complete(&self, what: &str) {
        assert!(
            self.errors.is_empty(),
            "{what}: the unrelated pair was disturbed: {:?} ({})",
            self.errors,
            self.summary()
        );
        for (side, other) in [(0, 1), (1, 0)] {
            let want: Vec<u32> = (0..self.sent[other]).collect();
            if self.got[side] != want {
                let first_bad = self.got[side]
                    .iter()
                    .zip(&want)
                    .position(|(g, w)| g != w)
                    .unwrap_or(self.got[side].len().min(want.len()));
                panic!(
                    "{what}: the unrelated pair's {} received {} messages, expected exactly \
                     0..{} in order (first difference at index {first_bad}) ({})",
                    ["a", "b"][side],
                    self.got[side].len(),
                    self.sent[other],
                    self.summary()
                );
            }
        }
        assert!(
            self.sent[0] > 0 && self.sent[1] > 0,
            "{what}: the pair sent nothing"
        );
    }

    pub fn summary(&self) -> String {
        format!(
            "sent {:?}, received [{}, {}] over {:?}, max latency {:?}",
            self.sent,
            self.got[0].len(),
            self.got[1].len(),
            self.ran_for,
            self.max_latency
        )
    }
}

/// A pair of chat clients, paired with each other on a tag no other test client uses, that
/// exchange numbered messages in both directions every `interval` on a thread of their own
/// until stopped. Then every message sent must have arrived, in order: the pair was not
/// affected by whatever the test did meanwhile.
pub struct Chatter {
    stop: Arc<AtomicBool>,
    delivered: Arc<[std::sync::atomic::AtomicU32; 2]>,
    handle: Option<JoinHandle<(ChatReport, [Client; 2])>>,
}

pub const CHATTER_TAG: &str = "unrelated-pair";

impl Chatter {
    pub fn start(addr: SocketAddr, interval: Duration) -> Chatter {
        let (a, b) = pair_tagged(addr, addr, CHATTER_TAG);
        let stop = Arc::new(AtomicBool::new(false));
        let delivered: Arc<[std::sync::atomic::AtomicU32; 2]> = Arc::new(Default::default());
        let (stop2, delivered2) = (stop.clone(), delivered.clone());
        let handle = std::thread::Builder::new()
            .name("chatter".into())
            .spawn(move || chatter_loop([a, b], interval, &stop2, &delivered2))
            .expect("spawn the chatter");
        Chatter {
            stop,
            delivered,
            handle: Some(handle),
        }
    }

    /// Messages delivered so far (to a, to b).
    pub fn delivered(&self) -> [u32; 2] {
        [
            self.delivered[0].load(Ordering::SeqCst),
            self.delivered[1].load(Ordering::SeqCst),
        ]
    }

    /// Wait until both sides received at least `n` more messages than now (the pair is
    /// chatting at this moment), or panic after `within`.
    pub fn expect_progress(&self, n: u32, within: Duration) {
        let before = self.delivered();
        let deadline = Instant::now() + within;
        loop {
            let now = self.delivered();
            if now[0] >= before[0] + n && now[1] >= before[1] + n {
                return;
            }
            assert!(
                !self.handle.as_ref().is_some_and(|h| h.is_finished()),
                "the unrelated pair stopped chatting (delivered {before:?} → {now:?}); its \
                 report, from `stop`, says why"
            );
            assert!(
                Instant::now() < deadline,
                "the unrelated pair made too little progress: delivered {before:?} → {now:?} \
                 in {within:?}, expected {n} more each"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop sending, wait (up to 10 s) for what is in flight, and return the report and the
    /// two clients (still connected unless something went wrong).
    pub fn stop_keep(mut self) -> (ChatReport, [Client; 2]) {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().expect("chatter thread").join() {
            Ok(r) => r,
            Err(_) => panic!("the chatter thread panicked"),
        }
    }

    /// Like `stop_keep`, and disconnect the pair.
    pub fn stop(self) -> ChatReport {
        self.stop_keep().0
    }
}

impl Drop for Chatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn chatter_loop(
    mut c: [Client; 2],
    interval: Duration,
    stop: &AtomicBool,
    delivered: &[std::sync::atomic::AtomicU32; 2],
) -> (ChatReport, [Client; 2]) {
    const NAMES: [&str; 2] = ["a", "b"];
    const DRAIN: Duration = Duration::from_secs(10);
    let start = Instant::now();
    let mut rep = ChatReport::default();
    let mut sent_at: [Vec<Instant>; 2] = Default::default();
    let mut next_send = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    'run: loop {
        let now = Instant::now();
        if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
            stopped_at = Some(now);
        }
        if stopped_at.is_none() && now >= next_send {
            for side in 0..2 {
                let text = format!("{}:{}", NAMES[side], rep.sent[side]);
                if let Err(e) = c[side].ws.send(Message::text(msg(&text))) {
                    rep.errors
                        .push(format!("{} could not send {text:?}: {e}", NAMES[side]));
                    break 'run;
                }
                sent_at[side].push(Instant::now());
                rep.sent[side] += 1;
            }
            // Paced, never bursting to catch up after a stall (the rate limit is on).
            next_send = (next_send + interval).max(Instant::now());
        }
        for side in 0..2 {
            let other = 1 - side;
            loop {
                match c[side].recv(Duration::from_millis(1)) {
                    Recv::Timeout => break,
                    Recv::Msg(Message::Ping(_)) | Recv::Msg(Message::Pong(_)) => {}
                    Recv::Msg(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                        let n = v["text"]
                            .as_str()
                            .and_then(|s| s.strip_prefix(NAMES[other]))
                            .and_then(|s| s.strip_prefix(':'))
                            .and_then(|s| s.parse::<u32>().ok());
                        match n {
                            Some(n) if v["type"] == "message" => {
                                if let Some(at) = sent_at[other].get(n as usize) {
                                    rep.max_latency = rep.max_latency.max(at.elapsed());
                                }
                                rep.got[side].push(n);
                                delivered[side].fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {
                                rep.errors.push(format!(
                                    "{} received {t:?} at {:?}",
                                    NAMES[side],
                                    start.elapsed()
                                ));
                                break 'run;
                            }
                        }
                    }
                    Recv::Msg(m) => {
                        rep.errors.push(format!(
                            "{} received {m:?} at {:?}",
                            NAMES[side],
                            start.elapsed()
                        ));
                        break 'run;
                    }
                    Recv::Closed(e) => {
                        rep.errors.push(format!(
                            "{}'s connection ended at {:?}: {e}",
                            NAMES[side],
                            start.elapsed()
                        ));
                        break 'run;
                    }
                }
            }
        }
        if let Some(t) = stopped_at {
            if rep.got[0].len() >= rep.sent[1] as usize && rep.got[1].len() >= rep.sent[0] as usize
            {
                break;
            }
            if t.elapsed() > DRAIN {
                rep.errors.push(format!(
                    "messages still missing {DRAIN:?} after the pair stopped sending"
                ));
                break;
            }
        }
    }
    rep.ran_for = start.elapsed();
    (rep, c)
}
