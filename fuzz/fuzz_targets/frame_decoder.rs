//! The server decoder on arbitrary bytes delivered in arbitrary splits (uWS `makeChunked`):
//! the first bytes of the input choose the chunk lengths. Whatever the split, the events
//! (concatenated data, control frames) and the verdict must be the same as for one read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roulette::ws::{Decoder, Event};

#[derive(Debug, PartialEq)]
enum Seen {
    Data(Vec<u8>, bool, bool),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn run(input: &[u8], chunks: &[usize]) -> (Vec<Seen>, Option<u16>) {
    let mut dec = Decoder::new();
    let mut seen: Vec<Seen> = Vec::new();
    let mut rest = input.to_vec();
    let mut cuts = chunks.iter().cycle();
    let mut err = None;
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
        let mut piece: Vec<u8> = rest.drain(..n).collect();
        let r = dec.decode(&mut piece, 70_000, |ev| {
            match ev {
                Event::Data { payload, first, last, .. } => {
                    // Merge pieces of one message so splits compare equal.
                    match seen.last_mut() {
                        Some(Seen::Data(buf, _, done)) if !first && !*done => {
                            buf.extend_from_slice(payload);
                            *done = last;
                        }
                        _ => seen.push(Seen::Data(payload.to_vec(), first, last)),
                    }
                }
                Event::Ping(p) => seen.push(Seen::Ping(p.to_vec())),
                Event::Pong(p) => seen.push(Seen::Pong(p.to_vec())),
                Event::Close { code, reason } => seen.push(Seen::Close(code, reason.to_string())),
            }
            true
        });
        if let Err(e) = r {
            err = Some(e.close_code());
            break;
        }
    }
    (seen, err)
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(8));
    let chunks: Vec<usize> = head.iter().map(|&b| usize::from(b) + 1).collect();
    let whole = run(body, &[usize::MAX]);
    let split = run(body, if chunks.is_empty() { &[1] } else { &chunks });
    // A split may end the input inside a partial piece of a message, but complete events and
    // the error verdict must agree.
    assert_eq!(whole.1, split.1, "verdict differs with splits {chunks:?}");
    if whole.1.is_none() {
        assert_eq!(whole.0, split.0, "events differ with splits {chunks:?}");
    }
});
