//! HTTP micro-benchmarks: deciding the answer to a browser's upgrade request (parse, header
//! rules, accept key, 101 response) and the accept key alone.
//!
//! Run: `cargo bench --bench http`.
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use roulette::http::{accept_key, handle_request, Endpoint, HttpContext, HttpOutcome};

/// What Chrome sends to open `wss://…/ws` (about 500 bytes).
const BROWSER_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\n\
Host: chat.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://chat.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

fn http(c: &mut Criterion) {
    let origins = vec!["https://chat.example.com".to_string()];
    let open = HttpContext {
        max_head_bytes: 8192,
        echo_enabled: false,
        draining: false,
        at_capacity: false,
        allowed_origins: &[],
    };
    let with_origins = HttpContext {
        allowed_origins: &origins,
        ..open
    };
    for ctx in [&open, &with_origins] {
        match handle_request(BROWSER_UPGRADE, ctx) {
            HttpOutcome::Upgrade {
                endpoint: Endpoint::Chat,
                head_len,
                ..
            } => assert_eq!(head_len, BROWSER_UPGRADE.len()),
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Bytes(BROWSER_UPGRADE.len() as u64));
    g.bench_function("handle_request/browser_upgrade_no_allowlist", |b| {
        b.iter(|| handle_request(black_box(BROWSER_UPGRADE), black_box(&open)))
    });
    g.bench_function("handle_request/browser_upgrade_origin_allowlist", |b| {
        b.iter(|| handle_request(black_box(BROWSER_UPGRADE), black_box(&with_origins)))
    });
    // A request cut before its end: the parse that answers "read more".
    let partial = &BROWSER_UPGRADE[..BROWSER_UPGRADE.len() / 2];
    assert_eq!(handle_request(partial, &open), HttpOutcome::Incomplete);
    g.throughput(Throughput::Bytes(partial.len() as u64));
    g.bench_function("handle_request/incomplete_half_head", |b| {
        b.iter(|| handle_request(black_box(partial), black_box(&open)))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    g.finish();
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = http
}
criterion_main!(benches);
