//! Random operation sequences on the matchmaker, driven the way the chat sessions drive it
//! (a `find`/`next` by a chatting user names its partner): nobody is paired with itself,
//! pairings name two users that were waiting, nobody is in two pairs at once, and the
//! matchmaker holds an entry for exactly the users that are waiting, have interests, or
//! avoid a former partner (nothing for a chatting user without interests).
#![no_main]
use libfuzzer_sys::fuzz_target;
use roulette::chat::matchmaker::{Matchmaker, Status};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const TAGS: [&str; 4] = ["a", "b", "c", "d"];
const USERS: u8 = 16;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let mut mm: Matchmaker<u8> = Matchmaker::new(Duration::from_millis(50));
    let mut partner: HashMap<u8, u8> = HashMap::new();
    let mut avoid: HashMap<u8, u8> = HashMap::new();
    let mut with_interests: HashSet<u8> = HashSet::new();
    let mut ticket = 0u32;
    for op in data.chunks(2) {
        let (&kind, user) = match op {
            [k, u] => (k, u % USERS),
            _ => break,
        };
        ticket += 1;
        let made = match kind % 6 {
            0 => {
                let interests: Vec<String> = TAGS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| kind & (8 << i) != 0)
                    .map(|(_, t)| t.to_string())
                    .collect();
                if interests.is_empty() {
                    with_interests.remove(&user);
                } else {
                    with_interests.insert(user);
                }
                let ended = end(&mut partner, &mut avoid, user);
                mm.find(user, ticket, interests, ended, now)
                    .into_iter()
                    .collect()
            }
            1 => {
                let ended = end(&mut partner, &mut avoid, user);
                mm.next(user, ticket, ended, now).into_iter().collect()
            }
            2 => {
                partner_left(&mut partner, user);
                mm.leave(user);
                vec![]
            }
            3 => {
                partner_left(&mut partner, user);
                unavoid(&mut avoid, user);
                with_interests.remove(&user);
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
            assert!(
                !partner.contains_key(&p.a) && !partner.contains_key(&p.b),
                "double pairing"
            );
            assert!(
                avoid.get(&p.a) != Some(&p.b),
                "paired with the partner it avoids"
            );
            partner.insert(p.a, p.b);
            partner.insert(p.b, p.a);
            unavoid(&mut avoid, p.a);
            unavoid(&mut avoid, p.b);
        }
        let mut held = 0;
        for u in 0..USERS {
            let waiting = matches!(mm.status(u), Status::Waiting { .. });
            assert!(
                !(waiting && partner.contains_key(&u)),
                "{u} waiting while chatting"
            );
            if waiting || with_interests.contains(&u) || avoid.contains_key(&u) {
                held += 1;
            }
        }
        assert_eq!(
            mm.known_users(),
            held,
            "entries for exactly the users with something to keep"
        );
    }
});

/// `user` ends its chat by `find`/`next`: the two avoid each other. Returns the partner.
fn end(partner: &mut HashMap<u8, u8>, avoid: &mut HashMap<u8, u8>, user: u8) -> Option<u8> {
    let p = partner_left(partner, user)?;
    avoid.insert(user, p);
    avoid.insert(p, user);
    Some(p)
}

/// `user` is out of its chat, if it was in one. Returns the partner.
fn partner_left(partner: &mut HashMap<u8, u8>, user: u8) -> Option<u8> {
    let p = partner.remove(&user)?;
    partner.remove(&p);
    Some(p)
}

/// `user`'s avoid relation ends.
fn unavoid(avoid: &mut HashMap<u8, u8>, user: u8) {
    if let Some(o) = avoid.remove(&user) {
        avoid.remove(&o);
    }
}
