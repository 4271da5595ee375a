//! Regression tests, each named after the bug it pins down.
mod util;

use std::io::Write;
use std::time::Duration;
use util::*;

/// A request head split over two reads, where the second read also carries a WebSocket frame
/// larger than the head limit: the bytes after the head must reach the decoder in full
/// (they were once cut at --max-head-bytes + 1).
#[test]
fn head_split_across_reads_keeps_a_large_pipelined_frame() {
    let _w = watchdog(30);
    let server = Server::start(&["--enable-echo", "--shards", "1"]);
    let req = upgrade_request("/echo", "").into_bytes();
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let frame = cframe(true, 0x2, &payload);
    let mut s = tcp(server.addr);
    let (first, rest) = req.split_at(40);
    s.write_all(first).expect("write first part");
    s.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(200));
    let mut second = rest.to_vec();
    second.extend_from_slice(&frame);
    s.write_all(&second).expect("write rest and frame");
    let (head, buffered) = read_head(&mut s, Duration::from_secs(5)).expect("101");
    check_101(&head, SAMPLE_ACCEPT);
    let mut ws = RawWs::from_parts(s, buffered);
    let (op, got) = ws.read_message(Duration::from_secs(5)).expect("echo");
    assert_eq!(op, 0x2);
    assert_eq!(got, payload, "the pipelined frame was not echoed whole");
}
