//! The subscriber thread: listens on this node's pub/sub channel and hands every record to the
//! shard of its connection, in arrival order. It proves the link carries everything: batches
//! from each sender are numbered, and the bridge publishes a tick to this channel every
//! second, so a gap or a silent link is noticed and reported instead of losing messages.
use super::bridge::CHANNEL_PREFIX;
use super::wire::{self, Record};
use super::{ClusterStats, NodeTable};
use crate::xshard::{ShardHandle, ShardMsg};
use crossbeam_channel::{Receiver, Sender};
use log::warn;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// From the bridge.
pub enum SubCtl {
    /// Subscribe to this incarnation's channel (dropping any older subscription), on the Redis
    /// the bridge's command link uses: behind Sentinels the two must not ask separately and
    /// end up on different servers mid-failover.
    Subscribe {
        channel: String,
        client: Box<redis::Client>,
        tls: bool,
    },
    /// Stop listening (the bridge gave up on this incarnation).
    Unsubscribe,
}

/// To the bridge.
#[derive(Debug)]
pub enum SubEvent {
    Subscribed {
        channel: String,
    },
    /// The subscription failed or went silent: messages may have been lost.
    Lost {
        channel: String,
        why: String,
    },
    /// Batches from node `node` went missing: tell it to reset the link.
    Gap {
        node: u16,
    },
    /// A Sentinel announced a new master (`host:port`), from the failover watcher.
    SwitchMaster {
        to: Option<String>,
    },
}

/// No tick for this long means the pub/sub link is not carrying messages. A Redis that
/// answers just inside the bridge's 2 s read timeout still works, but then one bridge turn
/// (a batch, then the heartbeat that publishes the tick) takes up to 4 s, so ticks may come
/// 4 s apart; at 3 s such a Redis ended every cross-node chat (tests/hostile.rs).
const SILENCE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);

pub struct Subscriber {
    pub ctl: Receiver<SubCtl>,
    pub events: Sender<SubEvent>,
    pub shards: Vec<ShardHandle>,
    pub table: Arc<Mutex<NodeTable>>,
    pub stats: Arc<ClusterStats>,
}

impl Subscriber {
    pub fn run(self) {
        let mut want: Option<(String, Box<redis::Client>, bool)> = None;
        loop {
            let (channel, client, tls) = match want.take() {
                Some(c) => c,
                None => match self.ctl.recv() {
                    Ok(SubCtl::Subscribe {
                        channel,
                        client,
                        tls,
                    }) => (channel, client, tls),
                    Ok(SubCtl::Unsubscribe) => continue,
                    Err(_) => return,
                },
            };
            match self.listen(&channel, &client, tls) {
                Next::Resubscribe(c) => want = Some(c),
                Next::Idle => {}
                Next::Exit => return,
            }
        }
    }

    fn lost(&self, channel: &str, why: String) {
        let _ = self.events.send(SubEvent::Lost {
            channel: channel.to_string(),
            why,
        });
    }

    /// Listen on `channel` until told otherwise or the link fails.
    fn listen(&self, channel: &str, client: &redis::Client, tls: bool) -> Next {
        let mut con = match client.get_connection_with_timeout(Duration::from_secs(2)) {
            Ok(c) => c,
            Err(e) => {
                self.lost(channel, super::target::explain(&e, tls).text);
                return Next::Idle;
            }
        };
        // Our own incarnation id: the channel is named after it.
        let own_id = channel.strip_prefix(CHANNEL_PREFIX).unwrap_or(channel);
        let _: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("roulette-{own_id}-sub"))
            .query(&mut con);
        let mut ps = con.as_pubsub();
        if let Err(e) = ps.subscribe(channel) {
            self.lost(channel, e.to_string());
            return Next::Idle;
        }
        if let Err(e) = ps.set_read_timeout(Some(POLL)) {
            self.lost(channel, e.to_string());
            return Next::Idle;
        }
        let _ = self.events.send(SubEvent::Subscribed {
            channel: channel.to_string(),
        });
        // Next batch number expected from each sender, by sender name.
        let mut expected: HashMap<String, u64> = HashMap::new();
        let mut last_heard = Instant::now();
        loop {
            match self.ctl.try_recv() {
                Ok(SubCtl::Subscribe {
                    channel: c,
                    client,
                    tls,
                }) => return Next::Resubscribe((c, client, tls)),
                Ok(SubCtl::Unsubscribe) => return Next::Idle,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Next::Exit,
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            match ps.get_message() {
                Ok(msg) => {
                    last_heard = Instant::now();
                    self.on_payload(msg.get_payload_bytes(), own_id, &mut expected);
                }
                Err(e) if e.is_timeout() => {
                    // Forget the sequence numbers of senders that are dead (a node that comes
                    // back is a new incarnation with a name of its own).
                    if let Ok(t) = self.table.lock() {
                        expected.retain(|sender, _| t.is_live_name(sender));
                    }
                    if last_heard.elapsed() > SILENCE {
                        self.lost(channel, format!("no message for {SILENCE:?}"));
                        return Next::Idle;
                    }
                }
                Err(e) => {
                    self.lost(channel, e.to_string());
                    return Next::Idle;
                }
            }
        }
    }

    fn on_payload(&self, payload: &[u8], own_id: &str, expected: &mut HashMap<String, u64>) {
        ClusterStats::add(&self.stats.payloads_in, 1);
        let batch = match wire::decode(payload) {
            Ok(b) => b,
            Err(e) => {
                // Not from a roulette node of this version: nothing to route it by.
                ClusterStats::add(&self.stats.errors, 1);
                warn!("cluster: dropped a malformed relay payload ({e:?})");
                return;
            }
        };
        if batch.sender == own_id {
            // Our own tick: proves the channel delivers; nothing to route.
            return;
        }
        let node = match self.table.lock() {
            Ok(mut t) => t.intern(batch.sender),
            Err(_) => None,
        };
        let Some(node) = node else { return };
        let want = expected.entry(batch.sender.to_string()).or_insert(1);
        if batch.seq != *want {
            ClusterStats::add(&self.stats.gaps, 1);
            warn!(
                "cluster: batches from {} went missing (got #{}, expected #{}); ending the pairs with it",
                batch.sender, batch.seq, *want
            );
            self.node_down(node);
            let _ = self.events.send(SubEvent::Gap { node });
        }
        *want = batch.seq.wrapping_add(1);
        ClusterStats::add(&self.stats.records_in, batch.records.len() as u64);
        // A relay's frame goes to a client's socket as it is: it must be what a roulette node
        // encodes (one final, unmasked text frame of valid UTF-8), or the whole link is
        // suspect and every pair with that node ends, as after a gap.
        if let Some(bad) = batch.records.iter().find_map(|r| match r {
            Record::Relay { frame, .. } => server_text_frame(frame).err(),
            _ => None,
        }) {
            ClusterStats::add(&self.stats.errors, 1);
            warn!(
                "cluster: {} relayed a malformed frame ({bad}); ending the pairs with it",
                batch.sender
            );
            self.node_down(node);
            let _ = self.events.send(SubEvent::Gap { node });
            return;
        }
        for rec in batch.records {
            if matches!(rec, Record::Reset) {
                self.node_down(node);
                continue;
            }
            let Some(peer) = rec.into_peer(node) else {
                continue;
            };
            if let Some(h) = self.shards.get(usize::from(peer.to.shard)) {
                // Blocking is safe: shards never wait on this thread.
                let _ = h.send_blocking(ShardMsg::Peer(peer));
            }
        }
    }

    fn node_down(&self, node: u16) {
        for h in &self.shards {
            let _ = h.send_blocking(ShardMsg::NodeDown { node });
        }
    }
}

/// Is `frame` exactly one final, unmasked text frame with a UTF-8 payload?
pub fn server_text_frame(frame: &[u8]) -> Result<(), &'static str> {
    use crate::ws::frame::{FrameHeader, OpCode};
    let (h, head) = match FrameHeader::parse(frame) {
        Ok(Some(x)) => x,
        Ok(None) => return Err("truncated header"),
        Err(_) => return Err("bad header"),
    };
    if !h.fin || h.opcode != OpCode::Text || h.mask.is_some() {
        return Err("not a final unmasked text frame");
    }
    let payload = frame.get(head..).ok_or("truncated")?;
    if payload.len() as u64 != h.payload_len {
        return Err("length does not match");
    }
    std::str::from_utf8(payload).map_err(|_| "text is not UTF-8")?;
    Ok(())
}

enum Next {
    Resubscribe((String, Box<redis::Client>, bool)),
    Idle,
    Exit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::WireConn;
    use crate::ws::{self, OpCode};
    use crate::xshard::PeerMsg;

    #[test]
    fn only_well_formed_server_text_frames_pass() {
        let mut ok = Vec::new();
        ws::write_frame(&mut ok, OpCode::Text, br#"{"type":"message","text":"hi"}"#);
        assert_eq!(server_text_frame(&ok), Ok(()));
        let mut binary = Vec::new();
        ws::write_frame(&mut binary, OpCode::Binary, b"x");
        let mut bad_utf8 = Vec::new();
        ws::write_frame(&mut bad_utf8, OpCode::Text, b"\xff");
        let mut masked = Vec::new();
        ws::write_masked_frame(&mut masked, OpCode::Text, true, b"hi", [1, 2, 3, 4]);
        let mut two = ok.clone();
        two.extend_from_slice(&ok);
        for (what, f) in [
            ("binary", &binary),
            ("bad UTF-8", &bad_utf8),
            ("masked", &masked),
            ("two frames", &two),
            ("truncated", &ok[..ok.len() - 1].to_vec()),
            ("empty", &Vec::new()),
            ("close", &vec![0x88, 0x00]),
        ] {
            assert!(server_text_frame(f).is_err(), "{what} passed");
        }
    }

    /// A subscriber whose one shard is an inbox the test reads.
    fn subscriber() -> (Subscriber, crossbeam_channel::Receiver<ShardMsg>, mio::Poll) {
        let poll = mio::Poll::new().unwrap();
        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(16);
        let (ev_tx, _ev_rx) = crossbeam_channel::unbounded();
        let (_ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let sub = Subscriber {
            ctl: ctl_rx,
            events: ev_tx,
            shards: vec![ShardHandle::new(tx, waker, 1 << 20)],
            table: Arc::new(Mutex::new(NodeTable::new())),
            stats: Arc::new(ClusterStats::default()),
        };
        (sub, rx, poll)
    }

    fn batch(frame: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        wire::begin(&mut p, "other~1", 1);
        wire::push(
            &mut p,
            &Record::Relay {
                to: WireConn {
                    shard: 0,
                    slot: 3,
                    gen: 1,
                },
                epoch: 9,
                frame,
            },
        );
        p
    }

    #[test]
    fn a_malformed_relayed_frame_ends_the_pairs_with_its_node_instead_of_reaching_a_socket() {
        let (sub, rx, _poll) = subscriber();
        let mut expected = HashMap::new();
        let mut good = Vec::new();
        ws::write_frame(&mut good, OpCode::Text, b"{}");
        sub.on_payload(&batch(&good), "me~1", &mut expected);
        assert!(matches!(
            rx.try_recv(),
            Ok(ShardMsg::Peer(crate::xshard::Peer {
                msg: PeerMsg::Relay { epoch: 9, .. },
                ..
            }))
        ));
        let mut evil = Vec::new();
        ws::write_frame(&mut evil, OpCode::Close, &[0x03, 0xe8]);
        let mut p = Vec::new();
        wire::begin(&mut p, "other~1", 2);
        wire::push(
            &mut p,
            &Record::Relay {
                to: WireConn {
                    shard: 0,
                    slot: 3,
                    gen: 1,
                },
                epoch: 9,
                frame: &evil,
            },
        );
        sub.on_payload(&p, "me~1", &mut expected);
        assert!(matches!(rx.try_recv(), Ok(ShardMsg::NodeDown { node: 1 })));
        assert!(rx.try_recv().is_err(), "nothing else is delivered");
    }
}
