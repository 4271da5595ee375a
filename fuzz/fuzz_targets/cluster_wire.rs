//! The cluster pub/sub wire format (`roulette::cluster::wire`).
//!
//! 1. Arbitrary bytes into `decode` never panic; what it accepts re-encodes to a payload that
//!    decodes to the same batch.
//! 2. The same input, read by hand as a batch description (sender, seq, records with tags
//!    and frames kept within the encoder's limits), is encoded with `begin`/`push` and must
//!    decode to exactly that batch.
//! 3. Every prefix of an encoded payload is an error, except a cut at the end of the header
//!    or of a record, which decodes to the header and the records before the cut.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roulette::cluster::wire::{begin, decode, push, Batch, Record, WireConn};

/// Reads the fuzz input as a stream of choices; zeros once it runs out.
struct Input<'a> {
    buf: &'a [u8],
}

impl<'a> Input<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.buf.split_at(n.min(self.buf.len()));
        self.buf = rest;
        head
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
    fn conn(&mut self) -> WireConn {
        WireConn {
            shard: self.u16(),
            slot: self.u32(),
            gen: self.u32(),
        }
    }
    /// A UTF-8 string of at most 255 bytes (the wire limit), possibly with multi-byte
    /// characters (invalid input bytes become U+FFFD).
    fn name(&mut self) -> String {
        let n = usize::from(self.u8());
        let mut s = String::from_utf8_lossy(self.bytes(n)).into_owned();
        let mut cut = s.len().min(255);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s
    }
}

/// An owned description of a record (the wire `Record` borrows its strings).
enum Spec<'a> {
    Paired {
        to: WireConn,
        ticket: u32,
        partner: WireConn,
        epoch: u64,
        common: Vec<String>,
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

impl Spec<'_> {
    fn record(&self) -> Record<'_> {
        match self {
            Spec::Paired {
                to,
                ticket,
                partner,
                epoch,
                common,
            } => Record::Paired {
                to: *to,
                ticket: *ticket,
                partner: *partner,
                epoch: *epoch,
                common: common.iter().map(String::as_str).collect(),
            },
            Spec::Relay { to, epoch, frame } => Record::Relay {
                to: *to,
                epoch: *epoch,
                frame,
            },
            Spec::PartnerLeft { to, epoch, avoid } => Record::PartnerLeft {
                to: *to,
                epoch: *epoch,
                avoid: *avoid,
            },
            Spec::Reset => Record::Reset,
            Spec::Tick => Record::Tick,
        }
    }
}

fn encode(sender: &str, seq: u64, recs: &[Record<'_>]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    begin(&mut out, sender, seq);
    // Lengths at which the payload is a whole batch: after the header, after each record.
    let mut ends = vec![out.len()];
    for r in recs {
        push(&mut out, r);
        ends.push(out.len());
    }
    (out, ends)
}

fn same(b: &Batch<'_>, sender: &str, seq: u64, recs: &[Record<'_>]) {
    assert_eq!(b.sender, sender);
    assert_eq!(b.seq, seq);
    assert_eq!(b.records, recs);
}

/// Cuts to try: all of them for small payloads, else about 64 spread over the payload plus
/// both sides of every record boundary (all cuts cost a decode each: quadratic).
fn cuts(len: usize, ends: &[usize]) -> Vec<usize> {
    if len <= 256 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..len).step_by(len / 64 + 1).collect();
    for &e in ends {
        v.extend(
            [e.saturating_sub(1), e, e + 1]
                .into_iter()
                .filter(|&c| c < len),
        );
    }
    v.sort_unstable();
    v.dedup();
    v
}

fuzz_target!(|data: &[u8]| {
    // (1) Raw bytes: no panic; an accepted payload survives a re-encode.
    if let Ok(b) = decode(data) {
        let (out, _) = encode(b.sender, b.seq, &b.records);
        let again = decode(&out).expect("a re-encoded batch decodes");
        same(&again, b.sender, b.seq, &b.records);
    }

    // (2) The input as a batch description.
    let mut input = Input { buf: data };
    let sender = input.name();
    let seq = input.u64();
    let mut specs = Vec::new();
    while !input.buf.is_empty() && specs.len() < 64 {
        specs.push(match input.u8() % 5 {
            0 => {
                let to = input.conn();
                let ticket = input.u32();
                let partner = input.conn();
                let epoch = input.u64();
                let n = input.u8() % 5;
                Spec::Paired {
                    to,
                    ticket,
                    partner,
                    epoch,
                    common: (0..n).map(|_| input.name()).collect(),
                }
            }
            1 => {
                let to = input.conn();
                let epoch = input.u64();
                let n = usize::from(input.u16());
                Spec::Relay {
                    to,
                    epoch,
                    frame: input.bytes(n),
                }
            }
            2 => Spec::PartnerLeft {
                to: input.conn(),
                epoch: input.u64(),
                avoid: input.u8() & 1 != 0,
            },
            3 => Spec::Reset,
            _ => Spec::Tick,
        });
    }
    let recs: Vec<Record<'_>> = specs.iter().map(Spec::record).collect();
    let (out, ends) = encode(&sender, seq, &recs);
    let b = decode(&out).expect("an encoded batch decodes");
    same(&b, &sender, seq, &recs);

    // (3) Prefixes: a whole batch of the first k records at a boundary, an error elsewhere.
    for cut in cuts(out.len(), &ends) {
        match (decode(&out[..cut]), ends.iter().position(|&e| e == cut)) {
            (Ok(p), Some(k)) => same(&p, &sender, seq, &recs[..k]),
            (Err(_), None) => {}
            (Ok(p), None) => panic!("cut {cut} of {} decoded: {p:?}", out.len()),
            (Err(e), Some(k)) => panic!("cut {cut} (after {k} records) failed: {e:?}"),
        }
    }
});
