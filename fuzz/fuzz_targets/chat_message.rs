//! The chat message parser on arbitrary text: never panics, and what it accepts obeys the
//! protocol's limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roulette::chat::protocol::{parse_client_message, ClientMsg};

fuzz_target!(|data: &[u8]| {
    // The server only hands it valid UTF-8 (the codec checks text messages).
    if std::str::from_utf8(data).is_err() {
        return;
    }
    match parse_client_message(data, 2000) {
        Ok(ClientMsg::Message { text }) => {
            let n = text.chars().count();
            assert!((1..=2000).contains(&n));
            assert_eq!(text.trim(), &*text);
        }
        Ok(ClientMsg::Find { interests }) => {
            assert!(interests.len() <= 8);
            for t in &interests {
                assert!((1..=32).contains(&t.chars().count()));
            }
        }
        _ => {}
    }
});
