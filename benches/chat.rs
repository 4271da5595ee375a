//! Chat-layer micro-benchmarks: client message parsing and validation, server message
//! writers, and the matchmaker.
//!
//! Matchmaker population: "5000 waiting" means 5,000 users queued with interests whose
//! interest wait (5 s) has not passed, each with its own rare tag (`rare-N`). They cannot
//! pair with each other or with the benchmarked users (who use a separate 200-tag pool or
//! none), so the population stays at 5,000 while the indexes (users, postings, deadlines)
//! are that large. Users pair at once if anyone shares a tag, so a waiting population with
//! common tags cannot stay waiting; this is the steady state a busy server with many picky
//! users looks like.
//!
//! Run: `cargo bench --bench chat`.
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use roulette::chat::matchmaker::Matchmaker;
use roulette::chat::protocol::{
    parse_client_message, write_message, write_paired, ClientMsg, ErrorCode,
};

const MAX_TEXT_CHARS: usize = 2000;
const INTEREST_WAIT: Duration = Duration::from_secs(5);
const WAITING: u64 = 5000;
const POOL: usize = 200;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_client_message");
    // 64 bytes of text.
    let line = "hey, where are you from? I'm in Lisbon, it's sunny here today :)";
    assert_eq!(line.len(), 64);
    let message = format!(r#"{{"type":"message","text":"{line}"}}"#);
    let find = r#"{"type":"find","interests":["Music"," rust ","Jazz"]}"#;
    let typing = r#"{"type":"typing","active":true}"#;
    let bad_field = r#"{"type":"message","text":5}"#;
    let bad_json = r#"{"type":"message","text":"unterminated"#;
    let unknown = r#"{"type":"hug"}"#;

    assert!(matches!(
        parse_client_message(message.as_bytes(), MAX_TEXT_CHARS),
        Ok(ClientMsg::Message { .. })
    ));
    assert_eq!(
        parse_client_message(find.as_bytes(), MAX_TEXT_CHARS),
        Ok(ClientMsg::Find {
            interests: vec!["music".into(), "rust".into(), "jazz".into()]
        })
    );
    assert_eq!(
        parse_client_message(bad_field.as_bytes(), MAX_TEXT_CHARS),
        Err(ErrorCode::BadJson)
    );
    assert_eq!(
        parse_client_message(bad_json.as_bytes(), MAX_TEXT_CHARS),
        Err(ErrorCode::BadJson)
    );
    assert_eq!(
        parse_client_message(unknown.as_bytes(), MAX_TEXT_CHARS),
        Err(ErrorCode::UnknownType)
    );

    for (name, json) in [
        ("message_64B_text", message.as_str()),
        ("find_3_interests", find),
        ("typing", typing),
        ("bad_field_type", bad_field),
        ("bad_json_truncated", bad_json),
        ("unknown_type", unknown),
    ] {
        g.throughput(Throughput::Bytes(json.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let _ = black_box(parse_client_message(
                    black_box(json.as_bytes()),
                    MAX_TEXT_CHARS,
                ));
            })
        });
    }
    g.finish();
}

fn writers(c: &mut Criterion) {
    let mut g = c.benchmark_group("write");
    let mut out = Vec::with_capacity(16 * 1024);
    let short = "hey, where are you from? I'm in Lisbon, it's sunny here today :)";
    // 2000 characters with a few characters to escape and some non-ASCII.
    let long: String = "He said \"hi\"\nand café ☕ was good. "
        .chars()
        .cycle()
        .take(2000)
        .collect();
    for (name, text) in [
        ("message_64B", short),
        ("message_2000_chars", long.as_str()),
    ] {
        out.clear();
        write_message(&mut out, text);
        g.throughput(Throughput::Bytes(out.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                write_message(&mut out, black_box(text));
                black_box(&out);
            })
        });
    }
    let common = vec!["jazz".to_string(), "music".to_string(), "rust".to_string()];
    out.clear();
    write_paired(&mut out, &common);
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("paired_3_common", |b| {
        b.iter(|| {
            out.clear();
            write_paired(&mut out, black_box(&common));
            black_box(&out);
        })
    });
    g.finish();
}

/// xorshift64*: deterministic tag choices without a `rand` dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// 1024 (A, B) interest pairs from the pool: A has 3 distinct tags; B has 3 tags, one of
/// them one of A's, so that B pairs with A.
fn interest_pairs(pool: &[String]) -> Vec<(Vec<String>, Vec<String>)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let three = |rng: &mut Rng| -> Vec<String> {
        let mut v: Vec<String> = Vec::with_capacity(3);
        while v.len() < 3 {
            let t = &pool[rng.below(pool.len())];
            if !v.contains(t) {
                v.push(t.clone());
            }
        }
        v
    };
    (0..1024)
        .map(|_| {
            let a = three(&mut rng);
            let mut b = three(&mut rng);
            b[rng.below(3)] = a[rng.below(3)].clone();
            b.sort();
            b.dedup();
            (a, b)
        })
        .collect()
}

/// A matchmaker with `WAITING` users queued, each with its own tag; ids `0..WAITING`.
fn populated(now: Instant) -> Matchmaker<u64> {
    let mut mm = Matchmaker::new(INTEREST_WAIT);
    for id in 0..WAITING {
        assert!(mm
            .find(id, 0, vec![format!("rare-{id}")], None, now)
            .is_none());
    }
    assert_eq!(mm.waiting_count(), WAITING as usize);
    mm
}

fn matchmaker(c: &mut Criterion) {
    let now = Instant::now();
    let pool: Vec<String> = (0..POOL).map(|i| format!("tag{i:03}")).collect();
    let pairs = interest_pairs(&pool);
    let mut g = c.benchmark_group("matchmaker");
    // One element = one pair made and dissolved: two `find`s (the second pairs) and two
    // `remove`s (disconnects).
    g.throughput(Throughput::Elements(1));

    for (label, mut mm) in [
        ("empty", Matchmaker::new(INTEREST_WAIT)),
        ("5000_waiting", populated(now)),
    ] {
        let mut id = WAITING;
        g.bench_function(format!("cycle_no_interests/{label}"), |b| {
            b.iter(|| {
                let (a, bb) = (id, id + 1);
                id += 2;
                assert!(mm.find(a, 1, Vec::new(), None, now).is_none());
                let p = mm.find(bb, 2, Vec::new(), None, now).expect("pairs");
                black_box(&p);
                mm.remove(a);
                mm.remove(bb);
            })
        });
    }

    let mut mm = populated(now);
    let mut id = WAITING;
    let mut k = 0usize;
    g.bench_function("cycle_3_interests_200_tag_pool/5000_waiting", |b| {
        b.iter_batched(
            || {
                k = (k + 1) % pairs.len();
                pairs[k].clone()
            },
            |(ia, ib)| {
                let (a, bb) = (id, id + 1);
                id += 2;
                assert!(mm.find(a, 1, ia, None, now).is_none());
                let p = mm.find(bb, 2, ib, None, now).expect("shares a tag");
                debug_assert!(!p.common.is_empty());
                black_box(&p);
                mm.remove(a);
                mm.remove(bb);
                p
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(mm.waiting_count(), WAITING as usize);

    // A waiting user leaves the queue and queues again (with its last interests: `next`).
    let mut mm = populated(now);
    let mut who = 0u64;
    g.bench_function("leave_then_next/5000_waiting", |b| {
        b.iter(|| {
            who = (who + 1) % WAITING;
            mm.leave(who);
            assert!(mm.next(who, 3, None, now).is_none());
        })
    });
    // A waiting user disconnects (`remove`) and a new user queues with its own tag, so the
    // population stays at 5000.
    let mut mm = populated(now);
    let mut gone = 0u64;
    let mut id = WAITING;
    g.bench_function("remove_waiting_then_find_new/5000_waiting", |b| {
        b.iter_batched(
            || {
                let new = id;
                id += 1;
                (new, vec![format!("rare-{new}")])
            },
            |(new, tags)| {
                mm.remove(gone);
                gone += 1;
                assert!(mm.find(new, 4, tags, None, now).is_none());
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(mm.waiting_count(), WAITING as usize);
    g.finish();

    // All 5000 interest waits pass at once: 2500 pairs of open users.
    let mut g = c.benchmark_group("matchmaker_expire");
    g.throughput(Throughput::Elements(WAITING));
    let base = populated(now);
    let later = now + INTEREST_WAIT;
    g.bench_function("expire_5000_waiting_users", |b| {
        b.iter_batched(
            || base.clone(),
            |mut mm| {
                let made = mm.expire(later);
                assert_eq!(made.len(), WAITING as usize / 2);
                (mm, made)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = parse, writers, matchmaker
}
criterion_main!(benches);
