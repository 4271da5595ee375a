//! What one node publishes to another: a batch of records in one pub/sub payload. Pure, no
//! I/O: encoded by the bridge thread, decoded by the subscriber thread.
//!
//! A payload is `"RL1" | sender node id (u8 len + bytes) | batch seq (u64) | records`. The
//! sequence number counts the batches one sender incarnation sent to one receiver, from 1;
//! a receiver that sees a gap cannot prove nothing was lost and resets the link (see
//! `Record::Reset`). Connection ids in a record are `(shard u16, slot u32, gen u32)`; the
//! partner's node is always the sender.
//!
//! Records:
//! - `P` paired: to, ticket u32, partner, epoch u64, n u8, n × (u8 len + tag)
//! - `M` relay:  to, epoch u64, u32 len + an encoded WebSocket frame
//! - `L` partner left: to, epoch u64, avoid u8
//! - `R` reset: end every pair between the two nodes
//! - `T` tick: the sender's own liveness probe (sent to itself)

use crate::xshard::{ConnId, Peer, PeerMsg};

/// A connection on the receiving (or, for `partner`, the sending) node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireConn {
    pub shard: u16,
    pub slot: u32,
    pub gen: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Paired {
        to: WireConn,
        ticket: u32,
        partner: WireConn,
        epoch: u64,
        common: Vec<&'a str>,
    },
    Relay {
        to: WireConn,
        epoch: u64,
        frame: &'a [u8],
    },
    PartnerLeft {
        to: WireConn,
        epoch: u64,
        avoid: bool,
    },
    Reset,
    Tick,
}

const MAGIC: &[u8; 3] = b"RL1";

/// Start a batch from `sender` with sequence number `seq`.
pub fn begin(out: &mut Vec<u8>, sender: &str, seq: u64) {
    out.clear();
    out.extend_from_slice(MAGIC);
    let name = clip(sender).as_bytes();
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&seq.to_be_bytes());
}

/// At most 255 bytes of `s`, cut at a character boundary (node names and tags are far
/// shorter; this only keeps an over-long one from making the payload invalid UTF-8).
fn clip(s: &str) -> &str {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

fn put_conn(out: &mut Vec<u8>, c: WireConn) {
    out.extend_from_slice(&c.shard.to_be_bytes());
    out.extend_from_slice(&c.slot.to_be_bytes());
    out.extend_from_slice(&c.gen.to_be_bytes());
}

/// Append one record to a batch.
pub fn push(out: &mut Vec<u8>, rec: &Record<'_>) {
    match rec {
        Record::Paired {
            to,
            ticket,
            partner,
            epoch,
            common,
        } => {
            out.push(b'P');
            put_conn(out, *to);
            out.extend_from_slice(&ticket.to_be_bytes());
            put_conn(out, *partner);
            out.extend_from_slice(&epoch.to_be_bytes());
            let tags: Vec<&[u8]> = common
                .iter()
                .map(|t| clip(t).as_bytes())
                .take(255)
                .collect();
            out.push(tags.len() as u8);
            for t in tags {
                out.push(t.len() as u8);
                out.extend_from_slice(t);
            }
        }
        Record::Relay { to, epoch, frame } => {
            out.push(b'M');
            put_conn(out, *to);
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            out.extend_from_slice(frame);
        }
        Record::PartnerLeft { to, epoch, avoid } => {
            out.push(b'L');
            put_conn(out, *to);
            out.extend_from_slice(&epoch.to_be_bytes());
            out.push(u8::from(*avoid));
        }
        Record::Reset => out.push(b'R'),
        Record::Tick => out.push(b'T'),
    }
}

/// Why a payload was rejected. A malformed payload can only come from a foreign or buggy
/// publisher; the receiver drops it whole and treats it as a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    BadMagic,
    Truncated,
    UnknownRecord(u8),
    BadTag,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        self.take(1)?.first().copied().ok_or(WireError::Truncated)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn conn(&mut self) -> Result<WireConn, WireError> {
        Ok(WireConn {
            shard: self.u16()?,
            slot: self.u32()?,
            gen: self.u32()?,
        })
    }
}

/// A decoded batch header; the records follow in `records`.
#[derive(Debug)]
pub struct Batch<'a> {
    pub sender: &'a str,
    pub seq: u64,
    pub records: Vec<Record<'a>>,
}

/// Decode a whole payload (all or nothing).
pub fn decode(payload: &[u8]) -> Result<Batch<'_>, WireError> {
    let mut r = Reader { buf: payload };
    if r.take(3)? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let n = usize::from(r.u8()?);
    let sender = std::str::from_utf8(r.take(n)?).map_err(|_| WireError::BadTag)?;
    let seq = r.u64()?;
    let mut records = Vec::new();
    while !r.buf.is_empty() {
        let rec = match r.u8()? {
            b'P' => {
                let to = r.conn()?;
                let ticket = r.u32()?;
                let partner = r.conn()?;
                let epoch = r.u64()?;
                let n = r.u8()?;
                let mut common = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let len = usize::from(r.u8()?);
                    let tag = std::str::from_utf8(r.take(len)?).map_err(|_| WireError::BadTag)?;
                    common.push(tag);
                }
                Record::Paired {
                    to,
                    ticket,
                    partner,
                    epoch,
                    common,
                }
            }
            b'M' => {
                let to = r.conn()?;
                let epoch = r.u64()?;
                let len = r.u32()? as usize;
                Record::Relay {
                    to,
                    epoch,
                    frame: r.take(len)?,
                }
            }
            b'L' => Record::PartnerLeft {
                to: r.conn()?,
                epoch: r.u64()?,
                avoid: r.u8()? != 0,
            },
            b'R' => Record::Reset,
            b'T' => Record::Tick,
            other => return Err(WireError::UnknownRecord(other)),
        };
        records.push(rec);
    }
    Ok(Batch {
        sender,
        seq,
        records,
    })
}

impl WireConn {
    /// The wire form of a connection of the receiving node (its node is implied).
    pub fn of(c: ConnId) -> WireConn {
        WireConn {
            shard: c.shard,
            slot: c.slot,
            gen: c.gen,
        }
    }

    /// The connection on node `node` (0 = this node).
    pub fn on(self, node: u16) -> ConnId {
        ConnId {
            node,
            shard: self.shard,
            slot: self.slot,
            gen: self.gen,
        }
    }
}

impl<'a> Record<'a> {
    /// The record that carries `peer` to the node of its connection.
    pub fn of(peer: &'a Peer) -> Record<'a> {
        let to = WireConn::of(peer.to);
        match &peer.msg {
            PeerMsg::Paired {
                ticket,
                partner,
                epoch,
                common,
            } => Record::Paired {
                to,
                ticket: *ticket,
                partner: WireConn::of(*partner),
                epoch: *epoch,
                common: common.iter().map(String::as_str).collect(),
            },
            PeerMsg::Relay { epoch, frame } => Record::Relay {
                to,
                epoch: *epoch,
                frame,
            },
            PeerMsg::PartnerLeft { epoch, avoid } => Record::PartnerLeft {
                to,
                epoch: *epoch,
                avoid: *avoid,
            },
        }
    }

    /// The message this record carries for a connection of ours, sent by node `sender`
    /// (every partner in a record lives on its sender). `None` for the link's own records.
    pub fn into_peer(self, sender: u16) -> Option<Peer> {
        let (to, msg) = match self {
            Record::Paired {
                to,
                ticket,
                partner,
                epoch,
                common,
            } => (
                to,
                PeerMsg::Paired {
                    ticket,
                    partner: partner.on(sender),
                    epoch,
                    common: common.into_iter().map(str::to_string).collect(),
                },
            ),
            Record::Relay { to, epoch, frame } => (
                to,
                PeerMsg::Relay {
                    epoch,
                    frame: frame.into(),
                },
            ),
            Record::PartnerLeft { to, epoch, avoid } => (to, PeerMsg::PartnerLeft { epoch, avoid }),
            Record::Reset | Record::Tick => return None,
        };
        Some(Peer { to: to.on(0), msg })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(shard: u16, slot: u32, gen: u32) -> WireConn {
        WireConn { shard, slot, gen }
    }

    #[test]
    fn a_batch_round_trips() {
        let recs = vec![
            Record::Paired {
                to: c(1, 7, 3),
                ticket: 9,
                partner: c(0, 70000, u32::MAX),
                epoch: (1 << 62) | 5,
                common: vec!["music", "ß"],
            },
            Record::Relay {
                to: c(1, 7, 3),
                epoch: 42,
                frame: b"\x81\x02hi",
            },
            Record::PartnerLeft {
                to: c(1, 7, 3),
                epoch: 42,
                avoid: true,
            },
            Record::Reset,
            Record::Tick,
        ];
        let mut out = Vec::new();
        begin(&mut out, "node-a~0badf00d", 77);
        for r in &recs {
            push(&mut out, r);
        }
        let b = decode(&out).expect("decodes");
        assert_eq!(b.sender, "node-a~0badf00d");
        assert_eq!(b.seq, 77);
        assert_eq!(b.records, recs);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        begin(&mut out, "n", 1);
        push(
            &mut out,
            &Record::Paired {
                to: c(0, 1, 1),
                ticket: 1,
                partner: c(0, 2, 2),
                epoch: 3,
                common: vec!["a"],
            },
        );
        push(
            &mut out,
            &Record::Relay {
                to: c(0, 1, 1),
                epoch: 3,
                frame: b"xyz",
            },
        );
        for cut in 0..out.len() {
            let r = decode(&out[..cut]);
            // A cut exactly between records is a valid shorter batch.
            if let Ok(b) = r {
                assert!(b.records.len() < 2, "cut {cut}");
            }
        }
        assert!(decode(&out).is_ok());
    }

    #[test]
    fn over_long_names_and_tags_are_cut_at_a_character_boundary() {
        let long = format!("{}é", "a".repeat(254));
        let mut out = Vec::new();
        begin(&mut out, &long, 1);
        push(
            &mut out,
            &Record::Paired {
                to: c(0, 1, 1),
                ticket: 1,
                partner: c(0, 2, 2),
                epoch: 3,
                common: vec![&long],
            },
        );
        let b = decode(&out).expect("still valid UTF-8");
        assert_eq!(b.sender, "a".repeat(254));
        match &b.records[..] {
            [Record::Paired { common, .. }] => assert_eq!(common, &vec!["a".repeat(254).as_str()]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(decode(b"XYZ").unwrap_err(), WireError::BadMagic);
        let mut out = Vec::new();
        begin(&mut out, "n", 1);
        out.push(b'?');
        assert_eq!(decode(&out).unwrap_err(), WireError::UnknownRecord(b'?'));
        // Arbitrary bytes never panic.
        let mut x: u32 = 1;
        for len in 0..400 {
            let mut buf = b"RL1".to_vec();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            let _ = decode(&buf);
        }
    }
}
