//! The PROXY protocol header parser and the X-Forwarded-For walk (`roulette::http::proxy`).
//!
//! 1. Arbitrary bytes into `parse_proxy_header` never panic; `Done.len` lies within the
//!    input and the header re-parses identically from exactly its bytes; `Incomplete` only
//!    under the cap; and a verdict is final: every prefix that already has one has this one.
//! 2. The same bytes, read as X-Forwarded-For lines (split at LF, the first byte choosing
//!    the peer), never panic, never name a trusted address, answer nothing for an untrusted
//!    peer, and keep their answer when trusted hops are appended on the right.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use roulette::http::proxy::{
    client_from_forwarded_for, parse_proxy_header, Cidr, ProxyParse, TrustedProxies, PROXY_MAX_LEN,
};

fn check_header(data: &[u8]) {
    let out = parse_proxy_header(data);
    match out {
        ProxyParse::Done { len, .. } => {
            assert!(len <= data.len());
            assert_eq!(parse_proxy_header(&data[..len]), out);
        }
        ProxyParse::Incomplete => assert!(data.len() < PROXY_MAX_LEN),
        ProxyParse::NotProxy | ProxyParse::Invalid(_) => {}
    }
    // Past the cap nothing more is read, so the prefixes up to it say everything.
    for cut in 0..data.len().min(PROXY_MAX_LEN + 1) {
        let early = parse_proxy_header(&data[..cut]);
        if early != ProxyParse::Incomplete {
            assert_eq!(early, out, "cut at {cut}");
        }
    }
}

fn check_forwarded_for(data: &[u8]) {
    let trusted: TrustedProxies = ["10.0.0.0/8", "192.0.2.7", "2001:db8:ffff::/48"]
        .iter()
        .filter_map(|s| s.parse::<Cidr>().ok())
        .collect();
    let peers = [
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
    ];
    let (pick, rest) = data.split_first().unwrap_or((&0, &[]));
    let peer = peers[usize::from(*pick) % peers.len()];
    let values: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let found = client_from_forwarded_for(&values, peer, &trusted);
    if !trusted.contains(peer) {
        assert_eq!(found, None);
    }
    if let Some(ip) = found {
        assert!(!trusted.contains(ip));
    }
    let mut longer = values.clone();
    longer.push(b"10.1.2.3:443, [2001:db8:ffff::9]");
    longer.push(b" 192.0.2.7 ");
    assert_eq!(client_from_forwarded_for(&longer, peer, &trusted), found);
}

fuzz_target!(|data: &[u8]| {
    check_header(data);
    check_forwarded_for(data);
});
