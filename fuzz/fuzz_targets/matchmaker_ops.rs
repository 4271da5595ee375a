//! Random operation sequences on the matchmaker: nobody is paired with itself, pairings name
//! two users that were waiting, and nobody is in two pairs at once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roulette::chat::matchmaker::Matchmaker;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TAGS: [&str; 4] = ["a", "b", "c", "d"];

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let mut mm: Matchmaker<u8> = Matchmaker::new(Duration::from_millis(50));
    let mut partner: HashMap<u8, u8> = HashMap::new();
    let mut ticket = 0u32;
    for op in data.chunks(2) {
        let (&kind, user) = match op {
            [k, u] => (k, u % 16),
            _ => break,
        };
        ticket += 1;
        let made = match kind % 6 {
            0 => {
                let interests = TAGS.iter().enumerate().filter(|(i, _)| kind & (8 << i) != 0).map(|(_, t)| t.to_string()).collect();
                end(&mut partner, user);
                mm.find(user, ticket, interests, now).into_iter().collect()
            }
            1 => {
                end(&mut partner, user);
                mm.next(user, ticket, now).into_iter().collect()
            }
            2 => {
                end(&mut partner, user);
                mm.leave(user);
                vec![]
            }
            3 => {
                end(&mut partner, user);
                mm.remove(user);
                vec![]
            }
            _ => {
                now += Duration::from_millis(u64::from(kind % 64));
                mm.expire(now)
            }
        };
        for p in made {
            assert_ne!(p.a, p.b, "paired with itself");
            assert!(!partner.contains_key(&p.a) && !partner.contains_key(&p.b), "double pairing");
            partner.insert(p.a, p.b);
            partner.insert(p.b, p.a);
        }
        assert_eq!(mm.paired_count(), partner.len());
    }
});

fn end(partner: &mut HashMap<u8, u8>, user: u8) {
    if let Some(p) = partner.remove(&user) {
        partner.remove(&p);
    }
}
