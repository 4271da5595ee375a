//! WebSocket codec micro-benchmarks: decode (masked client frames), unmask, UTF-8, encode.
//!
//! The decoder unmasks in place, so every decode iteration first restores its input from a
//! pristine copy with `copy_from_slice` *inside the timed loop* (one buffer, kept hot in
//! cache as a freshly received socket buffer would be). Each decode group therefore also has
//! a `copy_only` entry, the cost of that restore alone, to subtract.
//!
//! Run: `cargo bench --bench codec`.
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use roulette::ws::mask::apply_mask;
use roulette::ws::utf8::Utf8Validator;
use roulette::ws::{write_frame, write_masked_frame, Decoder, Event, OpCode};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The `/echo` limit: large enough for every message below.
const MAX_MESSAGE: usize = 16 << 20;

fn ascii_text(len: usize) -> Vec<u8> {
    const LINE: &[u8] = b"hello stranger, which music do you like? I am into rust and jazz. ";
    LINE.iter().copied().cycle().take(len).collect()
}

/// Mixed Greek, Cyrillic, CJK and emoji (2-, 3- and 4-byte characters) with some ASCII,
/// cut back to a character boundary at or below `len` bytes.
fn multibyte_text(len: usize) -> Vec<u8> {
    const LINE: &str = "Καλημέρα κόσμε, привет мир, こんにちは世界 🦀🎵🎸 ";
    let mut s = String::with_capacity(len + LINE.len());
    while s.len() < len {
        s.push_str(LINE);
    }
    let mut cut = len;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.into_bytes()
}

/// Decode `wire` (restored from the pristine copy each iteration); the closure checks that
/// the expected number of payload bytes and complete messages came out.
fn bench_decode(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    wire: &[u8],
    payload_bytes: usize,
    messages: usize,
) {
    let mut buf = wire.to_vec();
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            buf.copy_from_slice(wire);
            let mut dec = Decoder::new();
            let (mut bytes, mut done) = (0usize, 0usize);
            dec.decode(&mut buf, MAX_MESSAGE, |ev| {
                if let Event::Data { payload, last, .. } = ev {
                    bytes += payload.len();
                    done += usize::from(last);
                    black_box(payload);
                }
                true
            })
            .expect("valid frames");
            assert_eq!((bytes, done), (payload_bytes, messages));
        })
    });
    g.bench_function(format!("{name}/copy_only"), |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(wire));
            black_box(&mut buf);
        })
    });
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");

    // 1000 text frames of 64 B each in one read buffer (70 B on the wire each).
    let line = ascii_text(64);
    let mut small = Vec::new();
    for _ in 0..1000 {
        write_masked_frame(&mut small, OpCode::Text, true, &line, MASK);
    }
    bench_decode(&mut g, "text_64B_x1000", &small, 64 * 1000, 1000);

    // One 64 KiB binary frame.
    let bin: Vec<u8> = (0..65536u32).map(|i| (i * 31 + 7) as u8).collect();
    let mut one = Vec::new();
    write_masked_frame(&mut one, OpCode::Binary, true, &bin, MASK);
    bench_decode(&mut g, "binary_64KiB", &one, bin.len(), 1);

    // One 1 MiB text message (ASCII) in 256 fragments of 4 KiB.
    let big = ascii_text(1 << 20);
    let mut frag = Vec::new();
    let chunks: Vec<&[u8]> = big.chunks(4096).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        write_masked_frame(&mut frag, op, i + 1 == chunks.len(), chunk, MASK);
    }
    bench_decode(&mut g, "text_1MiB_in_4KiB_fragments", &frag, big.len(), 1);
    g.finish();
}

fn naive_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

fn mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    for (label, len) in [("64B", 64usize), ("4KiB", 4096), ("1MiB", 1 << 20)] {
        // Masking is an involution, so the same buffer is masked again each iteration. The
        // slice starts at offset 1 to be unaligned, as a payload after a header is.
        let mut backing: Vec<u8> = (0..len + 1).map(|i| i as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("apply_mask/{label}"), |b| {
            b.iter(|| apply_mask(black_box(&mut backing[1..]), black_box(MASK), 0))
        });
        g.bench_function(format!("naive_byte_loop/{label}"), |b| {
            b.iter(|| naive_mask(black_box(&mut backing[1..]), black_box(MASK), 0))
        });
    }
    g.finish();
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let len = 64 * 1024;
    for (label, text) in [
        ("ascii", ascii_text(len)),
        ("multibyte", multibyte_text(len)),
    ] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("validator_whole/{label}_64KiB"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                assert!(v.feed(black_box(&text)) && v.is_complete());
            })
        });
        // Pieces of an odd size, so most piece boundaries fall inside a character (as
        // fragment and read boundaries do).
        g.bench_function(format!("validator_1021B_pieces/{label}_64KiB"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(&text).chunks(1021) {
                    assert!(v.feed(piece));
                }
                assert!(v.is_complete());
            })
        });
        g.bench_function(format!("std_from_utf8/{label}_64KiB"), |b| {
            b.iter(|| assert!(std::str::from_utf8(black_box(&text)).is_ok()))
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let mut out = Vec::with_capacity(2 << 20);
    for (label, len) in [("text_64B", 64usize), ("binary_64KiB", 65536)] {
        let payload = ascii_text(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("write_frame/{label}"), |b| {
            b.iter(|| {
                out.clear();
                write_frame(&mut out, OpCode::Text, black_box(&payload));
                black_box(&out);
            })
        });
    }
    // A batch of 1000 small server frames into one output buffer (corked writes).
    let payload = ascii_text(64);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("write_frame/text_64B_x1000_frames", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..1000 {
                write_frame(&mut out, OpCode::Text, black_box(&payload));
            }
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = decode, mask, utf8, encode
}
criterion_main!(benches);
