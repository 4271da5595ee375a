//! Pairing strangers: interests first, anyone after the interest wait, longest-waiting first,
//! never straight back to the partner just skipped. Pure: time is passed in.
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

pub struct Matchmaker<K> {
    _k: std::marker::PhantomData<K>,
}

impl<K: Copy + Eq + Hash + Ord + std::fmt::Debug> Matchmaker<K> {
    pub fn new(interest_wait: Duration) -> Self {
        let _ = interest_wait;
        todo!()
    }
    /// `find`: end any pair this user is in (the two are then not re-paired until one pairs
    /// with someone else or disconnects), remember `interests` (normalised) as its last ones,
    /// and queue it at the back, with a fresh interest wait. `ticket` is returned in the pairing.
    pub fn find(&mut self, user: K, ticket: u32, interests: Vec<String>, now: Instant) -> Option<Pairing<K>> {
        let _ = (user, ticket, interests, now);
        todo!()
    }
    /// `next`: if paired, end the pair (no re-pair) and queue again with the last interests;
    /// if idle, queue with the last interests (none if never given); if waiting, nothing.
    pub fn next(&mut self, user: K, ticket: u32, now: Instant) -> Option<Pairing<K>> {
        let _ = (user, ticket, now);
        todo!()
    }
    /// `leave`: end the pair (re-pairing stays allowed) or leave the queue.
    pub fn leave(&mut self, user: K) {
        let _ = user;
        todo!()
    }
    /// The user disconnected: forget it entirely.
    pub fn remove(&mut self, user: K) {
        let _ = user;
        todo!()
    }
    /// Pair the users whose interest wait passed by `now`, in order of their deadlines.
    pub fn expire(&mut self, now: Instant) -> Vec<Pairing<K>> {
        let _ = now;
        todo!()
    }
    /// The earliest pending interest-wait deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        todo!()
    }
    pub fn waiting_count(&self) -> usize {
        todo!()
    }
    pub fn paired_count(&self) -> usize {
        todo!()
    }
}
