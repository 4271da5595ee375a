//! Pairing strangers: interests first, anyone after the interest wait, longest-waiting first,
//! never straight back to the partner just skipped. Pure: time is passed in.
//!
//! Rules (PROTOCOL.md "Matching" and the state table):
//! - Two waiting users may pair when they share an interest, or when both are *open*: no
//!   interests, or their interest wait has passed.
//! - When a user is queued (`find`/`next`), and again when its interest wait passes
//!   (`expire`), it is paired at once with its best candidate: waiting users sharing an
//!   interest first, then (only if the user itself is open) open users; within each group
//!   the one queued longest ago. Never itself, never the user it mutually avoids.
//! - A chat ended by `next` or `find` makes the two avoid each other until one of them pairs
//!   with someone else or is removed (disconnects).
//!
//! Pairs themselves are not kept here: once paired, a user is the business of its chat
//! session, which knows its partner and says which chat a `find`/`next` ends (`ended`). That
//! is what lets the matchmaker hold nothing at all for a chatting user without interests:
//! an entry exists only for a user that is waiting, or that has something to remember (the
//! interests a later `next` queues with, or an avoided partner).
//!
//! Indexes keep every operation at O(tags · log n): each queued entry gets an increasing
//! sequence number; open waiters are in a `BTreeMap<seq, K>`, every waiter with interests
//! is in one posting list per tag (`BTreeMap<seq, K>`), and waiters that are not open yet are
//! in a `BTreeMap<(deadline, seq), K>`. A candidate search reads the first entries of the
//! user's posting lists (and of the open set), skipping at most the user and its avoided
//! partner.
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A pair the matchmaker made. `a` is the user whose request (or expiry) caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing<K> {
    pub a: K,
    pub a_ticket: u32,
    pub b: K,
    pub b_ticket: u32,
    /// Unique, increasing per matchmaker.
    pub epoch: u64,
    /// Shared interests, sorted.
    pub common: Vec<String>,
}

/// A user taken out of the queue by [`Matchmaker::take_waiting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub ticket: u32,
    /// Open to anyone already.
    pub open: bool,
    /// When its interest wait passes (if not open yet).
    pub open_at: Option<Instant>,
}

/// Where a user stands, as the matchmaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not queued here: idle, chatting (pairs are the sessions' business), never seen, or
    /// removed.
    Idle,
    /// Queued. `open`: may pair with anyone open (no interests, or the wait has passed).
    Waiting { ticket: u32, open: bool },
}

#[derive(Debug, Clone)]
enum State {
    /// Not queued (idle or chatting).
    Idle,
    Waiting {
        seq: u64,
        ticket: u32,
        /// `Some` while the user is in the deadline index (has interests, not open yet).
        deadline: Option<Instant>,
        open: bool,
    },
}

#[derive(Debug, Clone)]
struct User<K> {
    state: State,
    /// The interests of the last `find` (used by `next`, and while waiting).
    interests: Vec<String>,
    /// The partner of the chat this user last ended by `next`/`find` (or that the partner
    /// ended so), until one of the two pairs again or is removed. Kept symmetric:
    /// `x.avoid == Some(y)` implies `y.avoid == Some(x)`.
    avoid: Option<K>,
}

impl<K> User<K> {
    fn new() -> Self {
        User {
            state: State::Idle,
            interests: Vec::new(),
            avoid: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matchmaker<K> {
    interest_wait: Duration,
    /// Users that are waiting, or not queued with something to remember (interests or an
    /// avoided partner). Nothing for a chatting user without interests.
    users: HashMap<K, User<K>>,
    /// Waiting users that are open to anyone, by queue order.
    open: BTreeMap<u64, K>,
    /// Waiting users with each interest, by queue order.
    postings: HashMap<String, BTreeMap<u64, K>>,
    /// Waiting users whose interest wait has not passed yet.
    deadlines: BTreeMap<(Instant, u64), K>,
    next_seq: u64,
    next_epoch: u64,
    waiting: usize,
}

impl<K: Copy + Eq + Hash + Ord + std::fmt::Debug> Matchmaker<K> {
    pub fn new(interest_wait: Duration) -> Self {
        Matchmaker {
            interest_wait,
            users: HashMap::new(),
            open: BTreeMap::new(),
            postings: HashMap::new(),
            deadlines: BTreeMap::new(),
            next_seq: 0,
            next_epoch: 1,
            waiting: 0,
        }
    }
    /// `find`: `ended` is the partner of the chat this request ends, if the user was
    /// chatting (the two are then not re-paired until one pairs with someone else or
    /// disconnects). Remember `interests` (normalised) as the user's last ones, and queue it
    /// at the back, with a fresh interest wait. `ticket` is returned in the pairing.
    pub fn find(
        &mut self,
        user: K,
        ticket: u32,
        interests: Vec<String>,
        ended: Option<K>,
        now: Instant,
    ) -> Option<Pairing<K>> {
        self.dequeue(user);
        if let Some(partner) = ended {
            self.avoid_each_other(user, partner);
        }
        self.users.entry(user).or_insert_with(User::new).interests = interests;
        self.enqueue(user, ticket, now)
    }
    /// `next`: if waiting, nothing. Otherwise queue again with the last interests (none if
    /// never given); `ended` is the partner of the chat this ends, as for [`Self::find`].
    pub fn next(
        &mut self,
        user: K,
        ticket: u32,
        ended: Option<K>,
        now: Instant,
    ) -> Option<Pairing<K>> {
        if let Some(User {
            state: State::Waiting { .. },
            ..
        }) = self.users.get(&user)
        {
            return None;
        }
        if let Some(partner) = ended {
            self.avoid_each_other(user, partner);
        }
        self.users.entry(user).or_insert_with(User::new);
        self.enqueue(user, ticket, now)
    }
    /// `leave`: leave the queue, or end a chat (re-pairing stays allowed: nothing to do
    /// here).
    pub fn leave(&mut self, user: K) {
        self.dequeue(user);
        self.forget_if_idle(user);
    }
    /// The user disconnected: forget it entirely.
    pub fn remove(&mut self, user: K) {
        self.dequeue(user);
        if let Some(u) = self.users.remove(&user) {
            if let Some(other) = u.avoid {
                self.clear_avoid_of(other, user);
            }
        }
    }
    /// Pair the users whose interest wait passed by `now`, in order of their deadlines.
    pub fn expire(&mut self, now: Instant) -> Vec<Pairing<K>> {
        let mut made = Vec::new();
        while let Some((&(deadline, seq), &user)) = self.deadlines.first_key_value() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, seq));
            match self.users.get_mut(&user).map(|u| &mut u.state) {
                Some(State::Waiting {
                    seq: s,
                    deadline: d,
                    open,
                    ..
                }) if *s == seq => {
                    *d = None;
                    *open = true;
                }
                other => {
                    debug_assert!(false, "stale deadline for {user:?}: {other:?}");
                    continue;
                }
            }
            self.open.insert(seq, user);
            if let Some(candidate) = self.best_candidate(user, true) {
                if let Some(ticket) = self.dequeue(user) {
                    made.push(self.pair(user, ticket, candidate));
                }
            }
        }
        made
    }
    /// The earliest pending interest-wait deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|(&(d, _), _)| d)
    }
    pub fn waiting_count(&self) -> usize {
        self.waiting
    }

    /// Where `user` stands.
    pub fn status(&self, user: K) -> Status {
        match self.users.get(&user).map(|u| &u.state) {
            None | Some(State::Idle) => Status::Idle,
            Some(&State::Waiting { ticket, open, .. }) => Status::Waiting { ticket, open },
        }
    }
    /// The interests of `user`'s last `find` (what `next` queues with).
    pub fn last_interests(&self, user: K) -> &[String] {
        self.users.get(&user).map_or(&[], |u| &u.interests)
    }
    /// How many users the matchmaker holds any state for (memory accounting, tests).
    pub fn known_users(&self) -> usize {
        self.users.len()
    }
    pub fn interest_wait(&self) -> Duration {
        self.interest_wait
    }

    // -- cluster mode -------------------------------------------------------------------

    /// Take waiting `user` out of this matchmaker's queue (to queue it elsewhere). It stays
    /// known with its interests and its avoid relation, if it has any.
    pub fn take_waiting(&mut self, user: K) -> Option<Waiter> {
        let (open, open_at) = match self.users.get(&user).map(|u| &u.state) {
            Some(&State::Waiting { open, deadline, .. }) => (open, deadline),
            _ => return None,
        };
        let ticket = self.dequeue(user)?;
        self.forget_if_idle(user);
        Some(Waiter {
            ticket,
            open,
            open_at,
        })
    }

    /// Everyone waiting, longest-waiting first.
    pub fn waiting_users(&self) -> Vec<K> {
        let mut w: Vec<(u64, K)> = self
            .users
            .iter()
            .filter_map(|(&k, u)| match u.state {
                State::Waiting { seq, .. } => Some((seq, k)),
                _ => None,
            })
            .collect();
        w.sort_unstable();
        w.into_iter().map(|(_, k)| k).collect()
    }

    /// Somebody else (the cluster queue) paired `a` with `b`: neither waits here any more,
    /// and their avoid relations end, as for a pair made here. Either may be a user this
    /// matchmaker never queued (a user of another node).
    pub fn pair_external(&mut self, a: K, b: K) {
        if a == b {
            return;
        }
        self.dequeue(a);
        self.dequeue(b);
        self.paired_up(a, b);
    }

    // -- internals ----------------------------------------------------------------------

    /// Queue `user` (known, idle) at the back with its last interests; pair it at once with
    /// its best candidate if there is one.
    fn enqueue(&mut self, user: K, ticket: u32, now: Instant) -> Option<Pairing<K>> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let interests_empty = self.users.get(&user).is_none_or(|u| u.interests.is_empty());
        // An interest wait too long to represent never passes.
        let deadline = if interests_empty {
            None
        } else {
            now.checked_add(self.interest_wait)
        };
        let open = interests_empty || deadline.is_some_and(|d| d <= now);

        if let Some(candidate) = self.best_candidate(user, open) {
            return Some(self.pair(user, ticket, candidate));
        }

        let Some(u) = self.users.get_mut(&user) else {
            debug_assert!(false, "enqueue of unknown {user:?}");
            return None;
        };
        debug_assert!(matches!(u.state, State::Idle), "enqueue of busy {user:?}");
        for tag in &u.interests {
            match self.postings.get_mut(tag.as_str()) {
                Some(list) => {
                    list.insert(seq, user);
                }
                None => {
                    self.postings
                        .insert(tag.clone(), BTreeMap::from([(seq, user)]));
                }
            }
        }
        let deadline = if open { None } else { deadline };
        if open {
            self.open.insert(seq, user);
        } else if let Some(d) = deadline {
            self.deadlines.insert((d, seq), user);
        }
        u.state = State::Waiting {
            seq,
            ticket,
            deadline,
            open,
        };
        self.waiting += 1;
        None
    }

    /// The waiting user `user` should pair with now, if any. `user` may itself be waiting
    /// (it is skipped).
    fn best_candidate(&self, user: K, open: bool) -> Option<K> {
        let u = self.users.get(&user)?;
        let avoided = self.mutual_avoid(user);
        let eligible = |k: K| k != user && Some(k) != avoided;
        let mut best: Option<(u64, K)> = None;
        for tag in &u.interests {
            let Some(list) = self.postings.get(tag.as_str()) else {
                continue;
            };
            for (&seq, &k) in list {
                if best.is_some_and(|(s, _)| s < seq) {
                    break;
                }
                if eligible(k) {
                    best = Some((seq, k));
                    break;
                }
            }
        }
        if best.is_none() && open {
            best = self
                .open
                .iter()
                .find(|&(_, &k)| eligible(k))
                .map(|(&s, &k)| (s, k));
        }
        best.map(|(_, k)| k)
    }

    /// The user `user` must not be paired with: its avoid, if that one avoids it too.
    fn mutual_avoid(&self, user: K) -> Option<K> {
        let other = self.users.get(&user)?.avoid?;
        let theirs = self.users.get(&other)?.avoid;
        (theirs == Some(user)).then_some(other)
    }

    /// Pair `a` (not queued) with the waiting `b`.
    fn pair(&mut self, a: K, a_ticket: u32, b: K) -> Pairing<K> {
        debug_assert_ne!(a, b);
        let b_ticket = self.dequeue(b);
        debug_assert!(b_ticket.is_some(), "candidate {b:?} was not waiting");
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let common = match (self.users.get(&a), self.users.get(&b)) {
            (Some(ua), Some(ub)) => {
                let mut c: Vec<String> = ua
                    .interests
                    .iter()
                    .filter(|t| ub.interests.contains(t))
                    .cloned()
                    .collect();
                c.sort_unstable();
                c.dedup();
                c
            }
            _ => Vec::new(),
        };
        self.paired_up(a, b);
        Pairing {
            a,
            a_ticket,
            b,
            b_ticket: b_ticket.unwrap_or(0),
            epoch,
            common,
        }
    }

    /// If `user` is waiting, take it out of the queue (→ idle) and return its ticket.
    fn dequeue(&mut self, user: K) -> Option<u32> {
        let u = self.users.get_mut(&user)?;
        let State::Waiting {
            seq,
            ticket,
            deadline,
            open,
        } = u.state
        else {
            return None;
        };
        u.state = State::Idle;
        for tag in &u.interests {
            if let Some(list) = self.postings.get_mut(tag.as_str()) {
                list.remove(&seq);
                if list.is_empty() {
                    self.postings.remove(tag.as_str());
                }
            }
        }
        if open {
            self.open.remove(&seq);
        }
        if let Some(d) = deadline {
            self.deadlines.remove(&(d, seq));
        }
        self.waiting -= 1;
        Some(ticket)
    }

    /// `a` and `b` (neither queued) were just paired: each one's avoid relation ends, and
    /// each is forgotten unless it has interests to remember.
    fn paired_up(&mut self, a: K, b: K) {
        for me in [a, b] {
            // The relation may be the one between `a` and `b` themselves (they met again
            // through the cluster queue): taken from both sides before either is forgotten.
            if let Some(other) = self.users.get_mut(&me).and_then(|u| u.avoid.take()) {
                self.clear_avoid_of(other, me);
            }
        }
        self.forget_if_idle(a);
        self.forget_if_idle(b);
    }

    /// The chat between `a` and `b` was ended by `next`/`find`: they avoid each other now.
    /// Both normally have no relation at this point (a pairing ends it). If either has one
    /// with a third user, the request is late (it crossed the partner moving on, e.g. the
    /// partner ended the chat first and has since been through another one) and nothing
    /// changes: an older chat never overrides a newer relation.
    fn avoid_each_other(&mut self, a: K, b: K) {
        let free = |k: K, other: K| {
            self.users
                .get(&k)
                .and_then(|u| u.avoid)
                .is_none_or(|o| o == other)
        };
        if a == b || !free(a, b) || !free(b, a) {
            return;
        }
        for (me, other) in [(a, b), (b, a)] {
            self.users.entry(me).or_insert_with(User::new).avoid = Some(other);
        }
    }

    /// `user` is no longer avoided by `other` (it paired elsewhere or left).
    fn clear_avoid_of(&mut self, other: K, user: K) {
        if let Some(o) = self.users.get_mut(&other) {
            if o.avoid == Some(user) {
                o.avoid = None;
                self.forget_if_idle(other);
            }
        }
    }

    /// Drop the entry of an idle user that has nothing to remember.
    fn forget_if_idle(&mut self, user: K) {
        if let Some(u) = self.users.get(&user) {
            if matches!(u.state, State::Idle) && u.interests.is_empty() && u.avoid.is_none() {
                self.users.remove(&user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn external_pairs_follow_the_same_rules() {
        let t0 = Instant::now();
        let mut mm: Matchmaker<u32> = Matchmaker::new(WAIT);
        // 1 waits here with an interest; it is taken out to queue it elsewhere.
        assert!(mm.find(1, 7, vec!["x".into()], None, t0).is_none());
        assert_eq!(mm.waiting_users(), vec![1]);
        let w = mm.take_waiting(1).expect("was waiting");
        assert_eq!(w.ticket, 7);
        assert!(!w.open);
        assert_eq!(w.open_at, Some(t0 + WAIT));
        assert_eq!(mm.waiting_count(), 0);
        assert_eq!(mm.last_interests(1), ["x".to_string()]);
        assert!(mm.take_waiting(1).is_none());
        // Elsewhere it pairs with 100, a user this matchmaker never saw: only 1's interests
        // are kept.
        mm.pair_external(1, 100);
        assert_eq!(mm.status(1), Status::Idle);
        assert_eq!(mm.known_users(), 1);
        // `next` ends it with the no-re-pair rule, as for a local pair.
        assert!(mm.next(1, 8, Some(100), t0).is_none());
        assert_eq!(mm.known_users(), 2, "100 is remembered as avoided");
        // 100 and 1 pair again elsewhere (someone else paired in between, unknown here):
        // the relation ends on both sides, nothing is forgotten half-way.
        mm.take_waiting(1).expect("queued by next");
        mm.pair_external(1, 100);
        assert_eq!(mm.status(100), Status::Idle);
        assert_eq!(mm.known_users(), 1, "only 1 and its interests");
        assert!(mm.next(1, 9, Some(100), t0).is_none());
        mm.remove(1);
        assert_eq!(mm.status(100), Status::Idle);
        assert_eq!(mm.known_users(), 0, "nothing left behind");
    }

    #[test]
    fn paired_users_without_interests_are_not_kept() {
        let (mut m, t0) = mm();
        for k in 0..10_000u32 {
            assert_eq!(find(&mut m, 2 * k, &[], t0), None);
            let p = find(&mut m, 2 * k + 1, &[], t0).expect("pairs with the one waiting");
            assert_eq!((p.a, p.b), (2 * k + 1, 2 * k));
        }
        assert_eq!(m.waiting_count(), 0);
        assert_eq!(m.known_users(), 0, "20,000 chatting users, nothing held");
        assert!(m.open.is_empty() && m.postings.is_empty() && m.deadlines.is_empty());
    }

    #[test]
    fn paired_users_with_interests_are_kept_for_next() {
        // No interest wait: a user with interests pairs at once with one without.
        let mut m = Matchmaker::new(Duration::ZERO);
        let t0 = Instant::now();
        // Pairs (1, 2) .. (199, 200): the odd ones give an interest, the even ones none.
        for k in 0..100u32 {
            let (a, b) = (2 * k + 1, 2 * k + 2);
            assert_eq!(find(&mut m, a, &[&format!("t{k}")], t0), None);
            assert_eq!(
                find(&mut m, b, &[], t0),
                Some(pairing(b, a, u64::from(k) + 1, &[]))
            );
        }
        assert_eq!(m.waiting_count(), 0);
        assert_eq!(m.known_users(), 100, "exactly the users with interests");
        for k in 0..100u32 {
            assert_eq!(m.last_interests(2 * k + 1), &tags(&[&format!("t{k}")])[..]);
            assert!(m.last_interests(2 * k + 2).is_empty());
        }
        // 1 ends its chat with 2 by `next`: it queues with its interest, avoiding 2.
        assert_eq!(next_after(&mut m, 1, 2, t0), None);
        assert!(waiting(&m, 1));
        assert_eq!(next_after(&mut m, 2, 1, t0), None, "2 does not get 1 back");
        assert_eq!(m.expire(secs(t0, 60.0)), vec![]);
        // Someone else gets 1; that ends the relation, and 2 (no interests) is forgotten
        // once it pairs.
        assert_eq!(
            find(&mut m, 500, &["t0"], t0),
            Some(pairing(500, 1, 101, &["t0"]))
        );
        assert_eq!(find(&mut m, 501, &[], t0), Some(pairing(501, 2, 102, &[])));
        assert_eq!(m.known_users(), 99 + 2, "odd ones 3..199, then 1 and 500");
    }

    const WAIT: Duration = Duration::from_secs(5);

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    fn mm() -> (Matchmaker<u32>, Instant) {
        (Matchmaker::new(WAIT), Instant::now())
    }

    fn pairing(a: u32, b: u32, epoch: u64, common: &[&str]) -> Pairing<u32> {
        // Tickets in these tests are the user id times 10.
        Pairing {
            a,
            a_ticket: a * 10,
            b,
            b_ticket: b * 10,
            epoch,
            common: tags(common),
        }
    }

    /// `find` by a user that is not chatting.
    fn find(m: &mut Matchmaker<u32>, u: u32, t: &[&str], now: Instant) -> Option<Pairing<u32>> {
        m.find(u, u * 10, tags(t), None, now)
    }

    /// `find` by `u`, ending its chat with `partner`.
    fn find_after(
        m: &mut Matchmaker<u32>,
        u: u32,
        partner: u32,
        t: &[&str],
        now: Instant,
    ) -> Option<Pairing<u32>> {
        m.find(u, u * 10, tags(t), Some(partner), now)
    }

    /// `next` by a user that is not chatting.
    fn next(m: &mut Matchmaker<u32>, u: u32, now: Instant) -> Option<Pairing<u32>> {
        m.next(u, u * 10, None, now)
    }

    /// `next` by `u`, ending its chat with `partner`.
    fn next_after(
        m: &mut Matchmaker<u32>,
        u: u32,
        partner: u32,
        now: Instant,
    ) -> Option<Pairing<u32>> {
        m.next(u, u * 10, Some(partner), now)
    }

    fn waiting(m: &Matchmaker<u32>, u: u32) -> bool {
        matches!(m.status(u), Status::Waiting { .. })
    }

    #[test]
    fn two_without_interests_pair_at_once() {
        let (mut m, t0) = mm();
        assert_eq!(find(&mut m, 1, &[], t0), None);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: true
            }
        );
        assert_eq!(m.waiting_count(), 1);
        assert_eq!(find(&mut m, 2, &[], t0), Some(pairing(2, 1, 1, &[])));
        assert_eq!((m.status(1), m.status(2)), (Status::Idle, Status::Idle));
        assert_eq!((m.waiting_count(), m.known_users()), (0, 0));
        // epochs increase
        find(&mut m, 3, &[], t0);
        assert_eq!(find(&mut m, 4, &[], t0), Some(pairing(4, 3, 2, &[])));
    }

    #[test]
    fn never_paired_with_itself() {
        let (mut m, t0) = mm();
        assert_eq!(find(&mut m, 1, &[], t0), None);
        assert_eq!(find(&mut m, 1, &[], t0), None);
        assert_eq!(next(&mut m, 1, t0), None);
        assert_eq!(m.expire(secs(t0, 100.0)), vec![]);
        assert_eq!(find(&mut m, 1, &["x"], t0), None);
        assert_eq!(m.expire(secs(t0, 100.0)), vec![]);
        assert_eq!(m.waiting_count(), 1);
    }

    #[test]
    fn shared_interest_pairs_and_common_is_sorted() {
        let (mut m, t0) = mm();
        assert_eq!(find(&mut m, 1, &["rust", "music", "go"], t0), None);
        assert_eq!(find(&mut m, 2, &["cats"], t0), None);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: false
            }
        );
        assert_eq!(
            find(&mut m, 3, &["music", "zzz", "rust"], t0),
            Some(pairing(3, 1, 1, &["music", "rust"]))
        );
        assert!(waiting(&m, 2));
    }

    #[test]
    fn interests_and_no_interests_wait_for_the_interest_wait() {
        let (mut m, t0) = mm();
        assert_eq!(find(&mut m, 1, &["rust"], t0), None);
        // 2 is open but 1 is not yet: no pair.
        assert_eq!(find(&mut m, 2, &[], secs(t0, 1.0)), None);
        assert_eq!(m.next_deadline(), Some(secs(t0, 5.0)));
        assert_eq!(m.expire(secs(t0, 4.999)), vec![]);
        assert_eq!(m.expire(secs(t0, 5.0)), vec![pairing(1, 2, 1, &[])]);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn two_with_different_interests_pair_after_both_waits() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["a"], t0);
        find(&mut m, 2, &["b"], secs(t0, 2.0));
        // 1 opens at 5 but 2 is not open until 7.
        assert_eq!(m.expire(secs(t0, 5.0)), vec![]);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: true
            }
        );
        assert_eq!(
            m.status(2),
            Status::Waiting {
                ticket: 20,
                open: false
            }
        );
        assert_eq!(m.expire(secs(t0, 7.0)), vec![pairing(2, 1, 1, &[])]);
    }

    #[test]
    fn an_open_user_with_interests_still_matches_by_interest() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["a"], t0);
        m.expire(secs(t0, 6.0));
        // 2 is not open, but shares "a" with the open 1.
        assert_eq!(
            find(&mut m, 2, &["a", "b"], secs(t0, 6.0)),
            Some(pairing(2, 1, 1, &["a"]))
        );
    }

    #[test]
    fn longest_waiting_wins_within_interest_group() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["x"], t0);
        find(&mut m, 2, &["y"], t0);
        find(&mut m, 3, &["z"], t0);
        assert_eq!(
            find(&mut m, 4, &["z", "y", "x"], t0),
            Some(pairing(4, 1, 1, &["x"]))
        );
        assert_eq!(
            find(&mut m, 5, &["z", "y"], t0),
            Some(pairing(5, 2, 2, &["y"]))
        );
    }

    #[test]
    fn longest_waiting_wins_among_open_ones() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["a"], t0);
        find(&mut m, 2, &["b"], secs(t0, 1.0));
        find(&mut m, 3, &["c"], secs(t0, 2.0));
        find(&mut m, 4, &["d"], secs(t0, 3.0));
        // At 5, 1 opens alone; at 6, 2 opens and takes 1; at 7, 3 opens alone; at 8, 4 takes 3.
        let made = m.expire(secs(t0, 10.0));
        assert_eq!(made, vec![pairing(2, 1, 1, &[]), pairing(4, 3, 2, &[])]);
    }

    #[test]
    fn expire_in_deadline_order_then_newcomer_takes_oldest_open() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["a"], t0);
        find(&mut m, 2, &["b"], t0);
        // Same deadline: 1 opens first (queued first), nobody open; then 2 opens, takes 1.
        assert_eq!(m.expire(secs(t0, 5.0)), vec![pairing(2, 1, 1, &[])]);
        find(&mut m, 3, &["c"], t0);
        find(&mut m, 4, &[], secs(t0, 1.0));
        find(&mut m, 5, &["e"], secs(t0, 2.0));
        // 3 opens at 5 and takes 4 (the only open one).
        assert_eq!(m.expire(secs(t0, 5.5)), vec![pairing(3, 4, 2, &[])]);
        assert!(waiting(&m, 5));
    }

    #[test]
    fn interest_candidates_come_before_older_open_ones() {
        // With no interest wait everyone is open at once; an avoid keeps two open users
        // waiting side by side.
        let mut m = Matchmaker::new(Duration::ZERO);
        let t0 = Instant::now();
        find(&mut m, 1, &["k"], t0);
        assert_eq!(find(&mut m, 2, &[], t0), Some(pairing(2, 1, 1, &[])));
        // 2 skips 1: 2 waits (oldest), then 1 requeues and must not take 2.
        assert_eq!(next_after(&mut m, 2, 1, t0), None);
        assert_eq!(next(&mut m, 1, t0), None);
        assert_eq!(m.waiting_count(), 2);
        // 3 (open, interest k): 2 is older and open, but 1 shares "k": 1 wins.
        assert_eq!(find(&mut m, 3, &["k"], t0), Some(pairing(3, 1, 2, &["k"])));
        // 4 without interests gets 2 (open group only).
        assert_eq!(find(&mut m, 4, &["j"], t0), Some(pairing(4, 2, 3, &[])));
    }

    #[test]
    fn at_expiry_an_open_user_takes_the_oldest_open_one() {
        let (mut m, t0) = mm();
        // 1 and 2 share "k" but come to avoid each other; 3 is open.
        find(&mut m, 1, &["k"], t0);
        assert_eq!(find(&mut m, 2, &["k"], t0), Some(pairing(2, 1, 1, &["k"])));
        find(&mut m, 3, &[], t0);
        assert_eq!(next_after(&mut m, 1, 2, t0), None); // 1 waits ("k", not open)
        assert_eq!(next(&mut m, 2, t0), None); // shares "k" with 1 but avoids it
                                               // 4 shares "k" and is not open: it takes 1, the older of the two.
        assert_eq!(find(&mut m, 4, &["k"], t0), Some(pairing(4, 1, 2, &["k"])));
        // At 5, 2 opens: nobody shares "k", 3 is open: 2 takes 3.
        assert_eq!(m.expire(secs(t0, 5.0)), vec![pairing(2, 3, 3, &[])]);
    }

    #[test]
    fn next_avoids_the_previous_partner() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &[], t0);
        find(&mut m, 2, &[], t0);
        // 1 skips 2: 2 is idle (told partner_left by the caller), 1 waits.
        assert_eq!(next_after(&mut m, 1, 2, t0), None);
        assert_eq!(m.status(2), Status::Idle);
        assert!(waiting(&m, 1));
        assert_eq!(m.known_users(), 2, "both remember the relation");
        // 2 looks again: only 1 is there, and they avoid each other.
        assert_eq!(next(&mut m, 2, t0), None);
        assert_eq!(find(&mut m, 2, &[], t0), None);
        assert_eq!(m.expire(secs(t0, 60.0)), vec![]);
        assert_eq!(m.waiting_count(), 2);
        // A third user pairs with the one waiting longest (1)...
        assert_eq!(find(&mut m, 3, &[], t0), Some(pairing(3, 1, 2, &[])));
        // ...which lifts the avoid: 1 and 2 may meet again.
        m.leave(3);
        assert_eq!(find(&mut m, 1, &[], t0), Some(pairing(1, 2, 3, &[])));
    }

    #[test]
    fn a_late_ended_never_overrides_a_newer_relation() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &[], t0);
        find(&mut m, 2, &[], t0);
        // Both skip at once: each request names the other; they avoid each other.
        assert_eq!(next_after(&mut m, 2, 1, t0), None);
        assert_eq!(next_after(&mut m, 1, 2, t0), None);
        assert_eq!(m.waiting_count(), 2);
        // 2 pairs with 3, who then skips it: 2 and 3 avoid each other now.
        assert_eq!(find(&mut m, 3, &[], t0), Some(pairing(3, 2, 2, &[])));
        m.leave(1);
        assert_eq!(next_after(&mut m, 3, 2, t0), None);
        m.leave(3);
        // A request of 1 that still names 2 (sent before it heard that 2 moved on) does
        // not bring the old relation back, nor end the newer one.
        assert_eq!(next_after(&mut m, 1, 2, t0), None);
        assert_eq!(
            m.known_users(),
            3,
            "1 waits; 2 and 3 still avoid each other"
        );
        assert_eq!(next(&mut m, 2, t0), Some(pairing(2, 1, 3, &[])));
    }

    #[test]
    fn avoid_also_applies_with_shared_interests() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["x"], t0);
        find(&mut m, 2, &["x"], t0);
        next_after(&mut m, 2, 1, t0);
        assert_eq!(next(&mut m, 1, t0), None);
        assert_eq!(m.expire(secs(t0, 60.0)), vec![]);
        assert_eq!(find(&mut m, 3, &["x"], t0), Some(pairing(3, 2, 2, &["x"])));
    }

    #[test]
    fn find_while_paired_ends_the_pair_with_avoid() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &[], t0);
        find(&mut m, 2, &[], t0);
        assert_eq!(find_after(&mut m, 2, 1, &["new"], t0), None);
        assert_eq!(m.status(1), Status::Idle);
        assert_eq!(
            m.status(2),
            Status::Waiting {
                ticket: 20,
                open: false
            }
        );
        assert_eq!(m.last_interests(2), &tags(&["new"])[..]);
        assert_eq!(find(&mut m, 1, &[], t0), None);
        assert_eq!(m.expire(secs(t0, 5.0)), vec![]);
        assert_eq!(m.waiting_count(), 2);
        // The ended pair is found by another user.
        assert_eq!(
            find(&mut m, 3, &["new"], t0),
            Some(pairing(3, 2, 2, &["new"]))
        );
    }

    #[test]
    fn find_while_paired_can_pair_at_once_with_someone_else() {
        let (mut m, t0) = mm();
        find(&mut m, 9, &[], t0);
        find(&mut m, 1, &[], t0); // 1-9
        find(&mut m, 3, &[], t0); // waiting
        assert_eq!(
            find_after(&mut m, 1, 9, &[], t0),
            Some(pairing(1, 3, 2, &[]))
        );
        assert_eq!(m.status(9), Status::Idle);
        // Pairing 1 with 3 ended the relation with 9 at once: nothing is left.
        assert_eq!(m.known_users(), 0);
    }

    #[test]
    fn leave_does_not_set_avoid() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &[], t0);
        find(&mut m, 2, &[], t0);
        m.leave(1);
        assert_eq!((m.status(1), m.status(2)), (Status::Idle, Status::Idle));
        assert_eq!(m.known_users(), 0);
        assert_eq!(find(&mut m, 2, &[], t0), None);
        assert_eq!(find(&mut m, 1, &[], t0), Some(pairing(1, 2, 2, &[])));
    }

    #[test]
    fn avoid_survives_leave_and_requeue() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &[], t0);
        find(&mut m, 2, &[], t0);
        next_after(&mut m, 1, 2, t0);
        m.leave(1);
        assert_eq!(m.status(1), Status::Idle);
        assert_eq!(find(&mut m, 2, &[], t0), None);
        assert_eq!(find(&mut m, 1, &[], t0), None);
        assert_eq!(m.waiting_count(), 2);
    }

    #[test]
    fn remove_lifts_avoid_and_forgets_everything() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["x"], t0);
        find(&mut m, 2, &["x"], t0);
        next_after(&mut m, 2, 1, t0); // 2 waits, avoids 1
        m.remove(1);
        assert_eq!(m.status(1), Status::Idle);
        assert!(m.last_interests(1).is_empty());
        // A new connection with the same id is a stranger.
        assert_eq!(find(&mut m, 1, &["x"], t0), Some(pairing(1, 2, 2, &["x"])));
        m.remove(1);
        m.remove(2);
        assert_eq!((m.waiting_count(), m.known_users()), (0, 0));
    }

    #[test]
    fn remove_while_paired_or_waiting() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["x"], t0);
        find(&mut m, 2, &["x"], t0);
        m.remove(2);
        assert_eq!(m.status(1), Status::Idle);
        assert_eq!(m.last_interests(1), &tags(&["x"])[..]);
        // 1 still remembers its interests for next.
        assert_eq!(next(&mut m, 1, t0), None);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: false
            }
        );
        m.remove(1);
        assert_eq!(m.waiting_count(), 0);
        assert_eq!(m.next_deadline(), None);
        assert!(m.postings.is_empty() && m.open.is_empty() && m.deadlines.is_empty());
        m.remove(1); // unknown: no-op
        assert_eq!(m.known_users(), 0);
    }

    // --- the state table, row by row (the matchmaker's part of it) ---

    #[test]
    fn table_find_idle() {
        let (mut m, t0) = mm();
        assert_eq!(find(&mut m, 1, &["a"], t0), None);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: false
            }
        );
        assert_eq!(find(&mut m, 2, &["a"], t0), Some(pairing(2, 1, 1, &["a"])));
    }

    #[test]
    fn table_find_waiting_requeues_at_the_back_with_new_interests_and_fresh_wait() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["x"], t0);
        find(&mut m, 2, &["y"], secs(t0, 1.0));
        // 1 re-queues at 3 s: new interests, new wait (until 8 s), behind 2.
        assert_eq!(
            m.find(1, 11, tags(&["x", "y"]), None, secs(t0, 3.0)),
            Some(Pairing {
                a: 1,
                a_ticket: 11,
                b: 2,
                b_ticket: 20,
                epoch: 1,
                common: tags(&["y"]),
            })
        );
        m.leave(1);
        m.leave(2);
        find(&mut m, 1, &["x"], t0);
        find(&mut m, 2, &["x2"], t0);
        find(&mut m, 1, &["x"], secs(t0, 3.0));
        assert_eq!(m.next_deadline(), Some(secs(t0, 5.0)));
        // 2 opens at 5 alone (1's wait restarted: until 8).
        assert_eq!(m.expire(secs(t0, 7.9)), vec![]);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: false
            }
        );
        assert_eq!(m.expire(secs(t0, 8.0)), vec![pairing(1, 2, 2, &[])]);
        // Back of the queue: 3 and 4 wait on "q" and "r"; 3 re-queues; 5 shares both → 4.
        find(&mut m, 3, &["q"], t0);
        find(&mut m, 4, &["r"], t0);
        find(&mut m, 3, &["q"], t0);
        assert_eq!(
            find(&mut m, 5, &["q", "r"], t0),
            Some(pairing(5, 4, 3, &["r"]))
        );
        // Old interests are gone from the index after a re-queue with new ones.
        find(&mut m, 3, &["new"], t0);
        assert_eq!(find(&mut m, 6, &["q"], t0), None);
    }

    #[test]
    fn table_find_chatting() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &[], t0);
        find(&mut m, 2, &[], t0);
        assert_eq!(find_after(&mut m, 1, 2, &["z"], t0), None);
        assert_eq!(m.status(2), Status::Idle);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: false
            }
        );
    }

    #[test]
    fn table_next_idle_uses_last_interests_or_none() {
        let (mut m, t0) = mm();
        // Never found: no interests, open at once.
        assert_eq!(next(&mut m, 1, t0), None);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: true
            }
        );
        m.leave(1);
        assert_eq!(m.status(1), Status::Idle);
        assert_eq!(m.known_users(), 0);
        // With a previous find.
        find(&mut m, 2, &["b"], t0);
        m.leave(2);
        assert_eq!(next(&mut m, 2, t0), None);
        assert_eq!(
            m.status(2),
            Status::Waiting {
                ticket: 20,
                open: false
            }
        );
        assert_eq!(find(&mut m, 3, &["b"], t0), Some(pairing(3, 2, 1, &["b"])));
    }

    #[test]
    fn table_next_waiting_changes_nothing() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["x"], t0);
        find(&mut m, 2, &["x2"], secs(t0, 1.0));
        // 1 sends next later, with another ticket: no change at all.
        assert_eq!(m.next(1, 99, None, secs(t0, 3.0)), None);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: false
            }
        );
        assert_eq!(m.next_deadline(), Some(secs(t0, 5.0)));
        // Still first in line.
        assert_eq!(
            find(&mut m, 3, &["x2", "x"], t0),
            Some(pairing(3, 1, 1, &["x"]))
        );
    }

    #[test]
    fn table_next_chatting_requeues_with_same_interests() {
        let (mut m, t0) = mm();
        find(&mut m, 1, &["a", "b"], t0);
        find(&mut m, 2, &["b"], t0);
        find(&mut m, 3, &["a"], t0);
        assert_eq!(
            m.next(1, 77, Some(2), t0),
            Some(Pairing {
                a: 1,
                a_ticket: 77,
                b: 3,
                b_ticket: 30,
                epoch: 2,
                common: tags(&["a"]),
            })
        );
        assert_eq!(m.status(2), Status::Idle);
    }

    #[test]
    fn table_leave() {
        let (mut m, t0) = mm();
        // idle: no change
        m.leave(1);
        assert_eq!(m.status(1), Status::Idle);
        // waiting: leaves the queue
        find(&mut m, 1, &["a"], t0);
        m.leave(1);
        assert_eq!(m.status(1), Status::Idle);
        assert_eq!(m.waiting_count(), 0);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(find(&mut m, 2, &["a"], t0), None);
        // chatting: both idle
        assert_eq!(find(&mut m, 1, &["a"], t0), Some(pairing(1, 2, 1, &["a"])));
        m.leave(2);
        assert_eq!((m.status(1), m.status(2)), (Status::Idle, Status::Idle));
        assert_eq!(m.waiting_count(), 0);
        // No relation: they may meet again.
        assert_eq!(find(&mut m, 2, &["a"], t0), None);
        assert_eq!(find(&mut m, 1, &["a"], t0), Some(pairing(1, 2, 2, &["a"])));
    }

    #[test]
    fn tickets_are_the_latest_given() {
        let (mut m, t0) = mm();
        m.find(1, 5, vec![], None, t0);
        m.find(1, 6, vec![], None, t0);
        let p = m.find(2, 7, vec![], None, t0).expect("paired");
        assert_eq!((p.a, p.a_ticket, p.b, p.b_ticket), (2, 7, 1, 6));
        m.leave(1);
        m.next(1, 8, None, t0);
        m.find(3, 9, tags(&["t"]), None, t0);
        let p = m.expire(secs(t0, 5.0));
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].a, p[0].a_ticket, p[0].b, p[0].b_ticket), (3, 9, 1, 8));
    }

    #[test]
    fn zero_interest_wait_means_everyone_is_open() {
        let mut m = Matchmaker::new(Duration::ZERO);
        let t0 = Instant::now();
        find(&mut m, 1, &["a"], t0);
        assert_eq!(
            m.status(1),
            Status::Waiting {
                ticket: 10,
                open: true
            }
        );
        assert_eq!(m.next_deadline(), None);
        assert_eq!(find(&mut m, 2, &["b"], t0), Some(pairing(2, 1, 1, &[])));
    }

    #[test]
    fn huge_interest_wait_never_opens() {
        let mut m = Matchmaker::new(Duration::MAX);
        let t0 = Instant::now();
        find(&mut m, 1, &["a"], t0);
        find(&mut m, 2, &[], t0);
        assert_eq!(m.waiting_count(), 2);
        assert_eq!(find(&mut m, 3, &["a"], t0), Some(pairing(3, 1, 1, &["a"])));
    }

    #[test]
    fn many_waiting_is_fast() {
        // 20k users spread over 200 tags, then 20k more finds: must be well under a second
        // even in debug builds if the indexes work.
        let mut m = Matchmaker::new(WAIT);
        let t0 = Instant::now();
        let started = Instant::now();
        let mut paired = 0;
        for u in 0..40_000u32 {
            let t = [format!("t{}", u % 20_000 % 200)];
            if m.find(u, 0, t.to_vec(), None, t0).is_some() {
                paired += 1;
            }
        }
        assert!(paired > 0);
        let made = m.expire(secs(t0, 10.0));
        assert!(
            m.waiting_count() <= 1,
            "{} left, {} made",
            m.waiting_count(),
            made.len()
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    // --- seeded random simulation against a naive reference model ---

    /// xorshift64*: deterministic, no dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The rules written the obvious way: a list scanned in full for every decision.
    #[derive(Default, Clone)]
    struct Model {
        users: BTreeMap<u32, MUser>,
        seq: u64,
        epoch: u64,
    }
    #[derive(Default, Clone)]
    struct MUser {
        interests: Vec<String>,
        avoid: Option<u32>,
        /// (seq, ticket, deadline, open)
        waiting: Option<(u64, u32, Option<Instant>, bool)>,
        paired: Option<u32>,
    }

    impl Model {
        fn may_pair(&self, a: u32, b: u32) -> bool {
            let (ua, ub) = (&self.users[&a], &self.users[&b]);
            let (Some(wa), Some(wb)) = (ua.waiting, ub.waiting) else {
                return false;
            };
            a != b
                && !(ua.avoid == Some(b) && ub.avoid == Some(a))
                && (shares(&ua.interests, &ub.interests) || (wa.3 && wb.3))
        }
        fn best(&self, a: u32) -> Option<u32> {
            let ua = &self.users[&a];
            let open = ua.waiting.is_some_and(|w| w.3);
            let mut cands: Vec<(bool, u64, u32)> = self
                .users
                .iter()
                .filter(|(&b, _)| self.may_pair(a, b))
                .map(|(&b, ub)| {
                    (
                        !shares(&ua.interests, &ub.interests),
                        ub.waiting.map_or(0, |w| w.0),
                        b,
                    )
                })
                .filter(|c| !c.0 || open)
                .collect();
            cands.sort();
            cands.first().map(|c| c.2)
        }
        fn end(&mut self, u: u32, avoid: bool) {
            if let Some(p) = self.users.get_mut(&u).and_then(|x| x.paired.take()) {
                let q = self.users.get_mut(&p).expect("partner");
                q.paired = None;
                if avoid {
                    q.avoid = Some(u);
                    self.users.get_mut(&u).expect("user").avoid = Some(p);
                }
            }
        }
        fn queue(
            &mut self,
            u: u32,
            ticket: u32,
            wait: Duration,
            now: Instant,
        ) -> Option<Pairing<u32>> {
            self.seq += 1;
            let seq = self.seq;
            let x = self.users.entry(u).or_default();
            let deadline = (!x.interests.is_empty()).then(|| now + wait);
            let open = deadline.is_none_or(|d| d <= now);
            x.waiting = Some((seq, ticket, deadline.filter(|_| !open), open));
            self.try_pair(u)
        }
        fn try_pair(&mut self, a: u32) -> Option<Pairing<u32>> {
            let b = self.best(a)?;
            let ta = self.users.get_mut(&a)?.waiting.take()?.1;
            let tb = self.users.get_mut(&b)?.waiting.take()?.1;
            self.epoch += 1;
            for (x, y) in [(a, b), (b, a)] {
                let ux = self.users.get_mut(&x)?;
                ux.paired = Some(y);
                ux.avoid = None;
            }
            let mut common: Vec<String> = self.users[&a]
                .interests
                .iter()
                .filter(|t| self.users[&b].interests.contains(t))
                .cloned()
                .collect();
            common.sort();
            Some(Pairing {
                a,
                a_ticket: ta,
                b,
                b_ticket: tb,
                epoch: self.epoch,
                common,
            })
        }
        fn find(
            &mut self,
            u: u32,
            ticket: u32,
            interests: Vec<String>,
            wait: Duration,
            now: Instant,
        ) -> Option<Pairing<u32>> {
            self.end(u, true);
            let x = self.users.entry(u).or_default();
            x.waiting = None;
            x.interests = interests;
            self.queue(u, ticket, wait, now)
        }
        fn next(
            &mut self,
            u: u32,
            ticket: u32,
            wait: Duration,
            now: Instant,
        ) -> Option<Pairing<u32>> {
            if self.users.get(&u).is_some_and(|x| x.waiting.is_some()) {
                return None;
            }
            self.end(u, true);
            self.queue(u, ticket, wait, now)
        }
        fn leave(&mut self, u: u32) {
            self.end(u, false);
            if let Some(x) = self.users.get_mut(&u) {
                x.waiting = None;
            }
        }
        fn remove(&mut self, u: u32) {
            self.leave(u);
            self.users.remove(&u);
            for x in self.users.values_mut() {
                if x.avoid == Some(u) {
                    x.avoid = None;
                }
            }
        }
        fn expire(&mut self, now: Instant) -> Vec<Pairing<u32>> {
            let mut made = Vec::new();
            loop {
                let due = self
                    .users
                    .iter()
                    .filter_map(|(&u, x)| x.waiting.and_then(|w| w.2.map(|d| (d, w.0, u))))
                    .filter(|&(d, _, _)| d <= now)
                    .min();
                let Some((_, _, u)) = due else { break };
                let w = self
                    .users
                    .get_mut(&u)
                    .and_then(|x| x.waiting.as_mut())
                    .expect("waiting");
                w.2 = None;
                w.3 = true;
                made.extend(self.try_pair(u));
            }
            made
        }
    }

    fn shares(a: &[String], b: &[String]) -> bool {
        a.iter().any(|t| b.contains(t))
    }

    /// Every structural invariant of the real matchmaker.
    fn check_invariants(m: &Matchmaker<u32>, model: &Model) {
        let mut waiting = 0;
        for (&u, x) in &m.users {
            match x.state {
                State::Idle => {
                    assert!(
                        !x.interests.is_empty() || x.avoid.is_some(),
                        "{u} kept for nothing"
                    );
                }
                State::Waiting {
                    seq,
                    deadline,
                    open,
                    ..
                } => {
                    waiting += 1;
                    assert_eq!(m.open.get(&seq) == Some(&u), open, "open index of {u}");
                    assert!(!(open && deadline.is_some()));
                    if let Some(d) = deadline {
                        assert_eq!(m.deadlines.get(&(d, seq)), Some(&u));
                    } else {
                        assert!(open || !x.interests.is_empty());
                    }
                    for t in &x.interests {
                        assert_eq!(m.postings[t.as_str()].get(&seq), Some(&u));
                    }
                }
            }
            if let Some(a) = x.avoid {
                assert_eq!(m.users[&a].avoid, Some(u), "avoid kept symmetric");
            }
        }
        assert_eq!(waiting, m.waiting_count());
        let indexed: usize = m.open.len() + m.deadlines.len();
        let never_open = m
            .users
            .values()
            .filter(|x| {
                matches!(
                    x.state,
                    State::Waiting {
                        open: false,
                        deadline: None,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(
            indexed + never_open,
            waiting,
            "each waiter in open or deadlines"
        );
        let posted: usize = m.postings.values().map(|l| l.len()).sum();
        let expected: usize = m
            .users
            .values()
            .filter(|x| matches!(x.state, State::Waiting { .. }))
            .map(|x| x.interests.len())
            .sum();
        assert_eq!(posted, expected);
        assert!(m.postings.values().all(|l| !l.is_empty()));
        // Same observable state as the model.
        let mut kept = 0;
        for (&u, x) in &model.users {
            let s = m.status(u);
            match (x.waiting, x.paired) {
                (Some((_, ticket, _, open)), None) => {
                    assert_eq!(s, Status::Waiting { ticket, open }, "user {u}")
                }
                (None, Some(p)) => {
                    assert_ne!(p, u, "model: {u} paired with itself");
                    assert_eq!(model.users[&p].paired, Some(u), "model: asymmetric pair");
                    assert_eq!(s, Status::Idle, "user {u}");
                }
                (None, None) => assert_eq!(s, Status::Idle, "user {u}"),
                (Some(_), Some(_)) => panic!("model: {u} waiting and paired"),
            }
            assert_eq!(m.last_interests(u), &x.interests[..]);
            // The model keeps a one-sided avoid after a pairing; only a mutual one counts.
            let avoid = x
                .avoid
                .filter(|a| model.users.get(a).is_some_and(|y| y.avoid == Some(u)));
            assert_eq!(m.users.get(&u).and_then(|y| y.avoid), avoid, "avoid of {u}");
            // Held exactly when there is something to hold: nothing for a chatting (or
            // idle) user without interests or an avoided partner.
            let holds = x.waiting.is_some() || !x.interests.is_empty() || avoid.is_some();
            if x.paired.is_some() && x.interests.is_empty() {
                assert!(
                    !m.users.contains_key(&u),
                    "paired {u} without interests held"
                );
            }
            assert_eq!(m.users.contains_key(&u), holds, "entry of {u}");
            kept += usize::from(holds);
        }
        assert_eq!(
            m.known_users(),
            kept,
            "an entry for a user the model forgot"
        );
    }

    /// `requester`: the user of a `find`/`next` (which queues it first); `None` for
    /// `expire`, where both sides must have been waiting already.
    fn check_pairings(before: &Model, made: &[Pairing<u32>], requester: Option<u32>) {
        let mut seen = BTreeSet::new();
        let was_waiting = |u: u32| before.users.get(&u).is_some_and(|x| x.waiting.is_some());
        for p in made {
            assert_ne!(p.a, p.b, "paired with itself");
            assert!(
                seen.insert(p.a) && seen.insert(p.b),
                "someone paired twice in {made:?}"
            );
            match requester {
                Some(u) => assert_eq!(p.a, u, "a is the requester: {p:?}"),
                None => assert!(was_waiting(p.a), "a not waiting: {p:?}"),
            }
            assert!(was_waiting(p.b), "b not waiting: {p:?}");
            let avoids = |x: u32, y: u32| before.users.get(&x).is_some_and(|u| u.avoid == Some(y));
            assert!(
                !(avoids(p.a, p.b) && avoids(p.b, p.a)),
                "avoiding pair returned: {p:?}"
            );
        }
        if requester.is_some() {
            assert!(made.len() <= 1);
        }
    }

    /// After every interest wait has passed, no two waiting users may legally pair.
    fn check_stable(m: &Matchmaker<u32>, far: Instant) {
        let mut m = m.clone();
        m.expire(far);
        let w: Vec<(u32, &User<u32>)> = m
            .users
            .iter()
            .filter(|(_, x)| matches!(x.state, State::Waiting { .. }))
            .map(|(&u, x)| (u, x))
            .collect();
        for &(a, ua) in &w {
            for &(b, ub) in &w {
                if a < b {
                    let avoid = ua.avoid == Some(b) && ub.avoid == Some(a);
                    let never_open =
                        |x: &User<u32>| matches!(x.state, State::Waiting { open: false, .. });
                    let could =
                        shares(&ua.interests, &ub.interests) || !(never_open(ua) || never_open(ub));
                    assert!(avoid || !could, "{a} and {b} could pair but wait");
                }
            }
        }
    }

    fn simulate(seed: u64, steps: usize, users: u32, wait: Duration) {
        const TAGS: [&str; 5] = ["a", "b", "c", "d", "e"];
        let mut rng = Rng(seed | 1);
        let mut m = Matchmaker::new(wait);
        let mut model = Model::default();
        let t0 = Instant::now();
        let mut now = t0;
        let mut pairings = 0;
        let mut last_epoch = 0;
        for step in 0..steps {
            let before = model.clone();
            let u = rng.below(u64::from(users)) as u32;
            let ticket = step as u32;
            let mut requester = Some(u);
            let (got, want): (Vec<Pairing<u32>>, Vec<Pairing<u32>>) = match rng.below(100) {
                0..=34 => {
                    let n = rng.below(3) as usize;
                    let mut t: Vec<String> = Vec::new();
                    for _ in 0..n {
                        let tag = TAGS[rng.below(TAGS.len() as u64) as usize].to_string();
                        if !t.contains(&tag) {
                            t.push(tag);
                        }
                    }
                    // The partner of the chat this ends, as the user's session knows it.
                    let ended = model.users.get(&u).and_then(|x| x.paired);
                    (
                        m.find(u, ticket, t.clone(), ended, now)
                            .into_iter()
                            .collect(),
                        model.find(u, ticket, t, wait, now).into_iter().collect(),
                    )
                }
                35..=59 => {
                    let ended = model.users.get(&u).and_then(|x| x.paired);
                    (
                        m.next(u, ticket, ended, now).into_iter().collect(),
                        model.next(u, ticket, wait, now).into_iter().collect(),
                    )
                }
                60..=71 => {
                    m.leave(u);
                    model.leave(u);
                    (vec![], vec![])
                }
                72..=79 => {
                    m.remove(u);
                    model.remove(u);
                    (vec![], vec![])
                }
                _ => {
                    requester = None;
                    now += Duration::from_millis(rng.below(3000));
                    (m.expire(now), model.expire(now))
                }
            };
            assert_eq!(got, want, "step {step} (seed {seed})");
            check_pairings(&before, &got, requester);
            for p in &got {
                assert!(p.epoch > last_epoch, "epochs increase");
                last_epoch = p.epoch;
            }
            pairings += got.len();
            check_invariants(&m, &model);
            if step % 50 == 0 {
                check_stable(&m, now + Duration::from_secs(3600));
            }
            if requester.is_none() {
                assert!(
                    m.next_deadline().is_none_or(|d| d > now),
                    "expire left a due deadline"
                );
            }
        }
        if users >= 4 {
            assert!(
                pairings > steps / 20,
                "the workload pairs people ({pairings})"
            );
        }
    }

    #[test]
    fn simulation_matches_model_and_keeps_invariants() {
        for seed in 1..=12u64 {
            simulate(seed * 0x9e37_79b9, 3000, 12, WAIT);
        }
    }

    #[test]
    fn simulation_with_many_users() {
        simulate(0xdead_beef, 6000, 60, WAIT);
    }

    #[test]
    fn simulation_with_zero_wait() {
        for seed in 1..=4u64 {
            simulate(seed, 3000, 10, Duration::ZERO);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        #[test]
        fn simulation_any_seed(seed in proptest::num::u64::ANY, users in 2u32..30) {
            simulate(seed, 600, users, WAIT);
        }
    }
}
