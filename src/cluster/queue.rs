//! Which of this node's waiting users are in the cluster-wide queue, and when they go there or
//! come back. Pure: time is passed in, and what the Redis bridge must do is returned as
//! [`ClusterMsg`]s (`Enqueue`, `OpenUp`, `Withdraw`) for the matchmaker thread to send.
//!
//! The policy:
//! - **Local first.** A user the node's own matchmaker could not pair waits here for
//!   `--cluster-hold` in case a local partner arrives; then it leaves the local matchmaker and
//!   is enqueued in Redis. From then on only the pairing script may claim it, so a local match
//!   can never race a remote one.
//! - **Interest wait.** A queued user whose interest wait passes is opened up in Redis.
//! - **A new request** (`find`, `leave`, a disconnect) withdraws the user from Redis; a `next`
//!   while queued there changes nothing (it keeps its place, as on one node).
//! - **Link lost.** Queued users may still be claimed by other nodes until this node's
//!   heartbeat expires, so they are quarantined until then (TTL + one beat) and only then wait
//!   in the local queue again. **Link back** (a new incarnation): everyone waiting here, and
//!   everyone quarantined, is enqueued in the new incarnation's name.
use super::{ClusterMsg, HEARTBEAT, TTL};
use crate::chat::matchmaker::{Matchmaker, Pairing, Status};
use crate::xshard::ConnId;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub struct ClusterQueue {
    hold: Duration,
    /// The bridge has a live link to Redis.
    up: bool,
    /// Users waiting here for a local partner before they are enqueued, by deadline, and
    /// each user's deadline (so a user who asks for something else leaves no timer behind).
    holding: BTreeMap<(Instant, ConnId), u32>,
    held: HashMap<ConnId, Instant>,
    /// Users in the cluster queue, with the ticket they were queued under. Their interests
    /// stay in the matchmaker (`last_interests`), which forgets nothing about a queued user.
    published: HashMap<ConnId, u32>,
    /// When published users' interest waits pass, and each user's entry.
    open_timers: BTreeMap<(Instant, ConnId), u32>,
    open_at: HashMap<ConnId, Instant>,
    /// Published when the link was lost; may still be claimed until `quarantine_until`.
    quarantine: HashMap<ConnId, u32>,
    quarantine_until: Option<Instant>,
    /// Requests for the bridge, in order.
    out: Vec<ClusterMsg>,
}

impl ClusterQueue {
    pub fn new(hold: Duration) -> Self {
        ClusterQueue {
            hold,
            up: false,
            holding: BTreeMap::new(),
            held: HashMap::new(),
            published: HashMap::new(),
            open_timers: BTreeMap::new(),
            open_at: HashMap::new(),
            quarantine: HashMap::new(),
            quarantine_until: None,
            out: Vec::new(),
        }
    }

    /// What the bridge must do, in order (taken).
    pub fn take_out(&mut self) -> std::vec::Drain<'_, ClusterMsg> {
        self.out.drain(..)
    }

    /// Users waiting in the cluster queue, or quarantined, on this node's behalf.
    pub fn queued(&self) -> usize {
        self.published.len() + self.quarantine.len()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.holding.first_key_value().map(|(k, _)| k.0),
            self.open_timers.first_key_value().map(|(k, _)| k.0),
            self.quarantine_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// `user` asked for something new (`find`, `leave`) or disconnected: out of the cluster
    /// queue if it is there.
    pub fn forget(&mut self, user: ConnId) {
        if self.published.remove(&user).is_some() {
            self.out.push(ClusterMsg::Withdraw { user });
        }
        self.quarantine.remove(&user);
        self.unhold(user);
        self.unopen(user);
    }

    fn unhold(&mut self, user: ConnId) {
        if let Some(at) = self.held.remove(&user) {
            self.holding.remove(&(at, user));
        }
    }

    fn unopen(&mut self, user: ConnId) {
        if let Some(at) = self.open_at.remove(&user) {
            self.open_timers.remove(&(at, user));
        }
    }

    /// Timers held (holds and interest waits), for tests: none outlive their user's request.
    pub fn timers(&self) -> usize {
        debug_assert_eq!(self.holding.len(), self.held.len());
        debug_assert_eq!(self.open_timers.len(), self.open_at.len());
        self.holding.len() + self.open_timers.len()
    }

    /// `user` waits in the cluster queue (or in quarantine) rather than here: a `next` keeps
    /// its place.
    pub fn is_waiting_there(&self, user: ConnId) -> bool {
        self.published.contains_key(&user) || self.quarantine.contains_key(&user)
    }

    /// The local matchmaker handled `user`'s request (`ticket`): unpaired, it is held here for
    /// a local partner, then enqueued.
    pub fn after_request(&mut self, paired: bool, user: ConnId, ticket: u32, now: Instant) {
        self.unhold(user);
        if !paired && self.up {
            let at = now + self.hold;
            self.holding.insert((at, user), ticket);
            self.held.insert(user, at);
        }
    }

    /// Take `user` (waiting in `mm`) out of the local queue into the cluster queue.
    fn publish(&mut self, mm: &mut Matchmaker<ConnId>, user: ConnId) {
        let Some(w) = mm.take_waiting(user) else {
            return;
        };
        log::debug!(
            "matchmaker: {user:?} joins the cluster queue (ticket {})",
            w.ticket
        );
        self.out.push(ClusterMsg::Enqueue {
            user,
            ticket: w.ticket,
            interests: mm.last_interests(user).to_vec(),
            open: w.open,
        });
        if let Some(at) = w.open_at {
            self.unopen(user);
            self.open_timers.insert((at, user), w.ticket);
            self.open_at.insert(user, at);
        }
        self.published.insert(user, w.ticket);
    }

    /// `user` left the cluster queue paired under `ticket`: true if that is the ticket it
    /// waits there under (published, or quarantined: it may still be claimed then), and it
    /// waits there no more.
    fn take_paired(&mut self, user: ConnId, ticket: u32) -> bool {
        if self.published.get(&user) == Some(&ticket) {
            self.published.remove(&user);
            self.unopen(user);
            true
        } else if self.quarantine.get(&user) == Some(&ticket) {
            // Not released into the local queue later: it is chatting.
            self.quarantine.remove(&user);
            true
        } else {
            false
        }
    }

    /// The pairing script paired our `user` (queued under `ticket`) with `partner`. Returns
    /// the pairing to deliver; a stale `user` is its shard's to notice (it tells the partner).
    pub fn on_cluster_paired(
        &mut self,
        mm: &mut Matchmaker<ConnId>,
        pairing: Pairing<ConnId>,
    ) -> Pairing<ConnId> {
        let current = self.take_paired(pairing.a, pairing.a_ticket);
        if !pairing.b.is_remote() {
            self.take_paired(pairing.b, pairing.b_ticket);
        }
        if current {
            mm.pair_external(pairing.a, pairing.b);
        }
        pairing
    }

    /// A user of another node claimed our `user` (queued under `ticket`) from the cluster
    /// queue: it is chatting with `partner` now.
    pub fn on_claimed(
        &mut self,
        mm: &mut Matchmaker<ConnId>,
        user: ConnId,
        ticket: u32,
        partner: ConnId,
    ) {
        if self.take_paired(user, ticket) {
            mm.pair_external(user, partner);
        }
    }

    /// The link to Redis came up (a new incarnation) or was lost.
    pub fn on_link(
        &mut self,
        mm: &mut Matchmaker<ConnId>,
        up: bool,
        now: Instant,
    ) -> Vec<Pairing<ConnId>> {
        self.up = up;
        self.holding.clear();
        self.held.clear();
        let mut made = Vec::new();
        if up {
            // Whoever waits here, or waited in the old incarnation's queue (dead with it),
            // joins the new incarnation's queue now.
            self.quarantine_until = None;
            made.extend(self.release_quarantine(mm, now));
            for user in mm.waiting_users() {
                self.publish(mm, user);
            }
        } else {
            self.open_timers.clear();
            self.open_at.clear();
            self.quarantine.extend(self.published.drain());
            if !self.quarantine.is_empty() {
                self.quarantine_until = Some(now + TTL + HEARTBEAT);
            }
        }
        made
    }

    /// Quarantined users wait in this node's queue again (and may pair here at once).
    fn release_quarantine(
        &mut self,
        mm: &mut Matchmaker<ConnId>,
        now: Instant,
    ) -> Vec<Pairing<ConnId>> {
        let mut back: Vec<(ConnId, u32)> = self.quarantine.drain().collect();
        // In a fixed order (by connection), not the hash map's.
        back.sort_unstable();
        let mut made = Vec::new();
        for (user, ticket) in back {
            // Every request but `next` takes a user out of quarantine, and so does a pairing:
            // whoever is left is neither chatting nor queued here.
            if matches!(mm.status(user), Status::Idle) {
                let interests = mm.last_interests(user).to_vec();
                made.extend(mm.find(user, ticket, interests, None, now));
            }
        }
        made
    }

    /// Run the deadlines that passed by `now`: holds that end, interest waits that pass in
    /// the cluster queue, the end of a quarantine.
    pub fn expire(&mut self, mm: &mut Matchmaker<ConnId>, now: Instant) -> Vec<Pairing<ConnId>> {
        let mut made = Vec::new();
        while let Some((&(at, user), &ticket)) = self.holding.first_key_value() {
            if at > now {
                break;
            }
            self.holding.remove(&(at, user));
            self.held.remove(&user);
            let still = matches!(mm.status(user), Status::Waiting { ticket: t, .. } if t == ticket);
            if self.up && still {
                self.publish(mm, user);
            }
        }
        while let Some((&(at, user), &ticket)) = self.open_timers.first_key_value() {
            if at > now {
                break;
            }
            self.open_timers.remove(&(at, user));
            self.open_at.remove(&user);
            if self.published.get(&user) == Some(&ticket) {
                self.out.push(ClusterMsg::OpenUp { user, ticket });
            }
        }
        if self.quarantine_until.is_some_and(|t| t <= now) {
            // Our heartbeat has expired: nobody can claim these any more. They wait here now.
            self.quarantine_until = None;
            made.extend(self.release_quarantine(mm, now));
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(slot: u32) -> ConnId {
        ConnId::local(0, slot, 1)
    }

    fn remote(slot: u32) -> ConnId {
        ConnId {
            node: 4,
            shard: 0,
            slot,
            gen: 1,
        }
    }

    /// What the bridge was asked, as short strings.
    fn out(q: &mut ClusterQueue) -> Vec<String> {
        q.take_out()
            .map(|m| match m {
                ClusterMsg::Enqueue {
                    user,
                    ticket,
                    interests,
                    open,
                } => format!("enqueue {} t{ticket} {interests:?} open={open}", user.slot),
                ClusterMsg::OpenUp { user, ticket } => format!("open {} t{ticket}", user.slot),
                ClusterMsg::Withdraw { user } => format!("withdraw {}", user.slot),
                _ => "other".to_string(),
            })
            .collect()
    }

    const HOLD: Duration = Duration::from_millis(100);
    const WAIT: Duration = Duration::from_secs(5);

    /// A matchmaker and a queue with a live link at `t0`.
    fn setup() -> (Matchmaker<ConnId>, ClusterQueue, Instant) {
        let t0 = Instant::now();
        let mut mm = Matchmaker::new(WAIT);
        let mut q = ClusterQueue::new(HOLD);
        assert!(q.on_link(&mut mm, true, t0).is_empty());
        (mm, q, t0)
    }

    /// `slot` finds with `tags` at `now`, as the matchmaker thread handles it.
    fn find(
        mm: &mut Matchmaker<ConnId>,
        q: &mut ClusterQueue,
        slot: u32,
        ticket: u32,
        tags: &[&str],
        now: Instant,
    ) -> Option<Pairing<ConnId>> {
        q.forget(user(slot));
        let tags = tags.iter().map(|t| t.to_string()).collect();
        let p = mm.find(user(slot), ticket, tags, None, now);
        q.after_request(p.is_some(), user(slot), ticket, now);
        p
    }

    /// Local users 1 and 2 chat, and 1 ends it by `next` (the two avoid each other): 1 waits
    /// and is enqueued in the cluster queue under ticket 2, with the relation kept here.
    fn next_into_the_cluster(
        mm: &mut Matchmaker<ConnId>,
        q: &mut ClusterQueue,
        t0: Instant,
    ) -> Instant {
        find(mm, q, 2, 1, &[], t0);
        assert!(find(mm, q, 1, 1, &[], t0).is_some());
        q.forget(user(1));
        assert!(mm.next(user(1), 2, Some(user(2)), t0).is_none());
        q.after_request(false, user(1), 2, t0);
        q.expire(mm, t0 + HOLD);
        assert_eq!(out(q), ["enqueue 1 t2 [] open=true"]);
        assert_eq!(mm.known_users(), 2, "1 and 2 avoid each other");
        t0 + HOLD
    }

    #[test]
    fn an_unpaired_user_is_held_here_then_enqueued() {
        let (mut mm, mut q, t0) = setup();
        assert!(find(&mut mm, &mut q, 1, 1, &["x"], t0).is_none());
        assert_eq!(q.next_deadline(), Some(t0 + HOLD));
        assert!(q.expire(&mut mm, t0 + HOLD / 2).is_empty());
        assert!(out(&mut q).is_empty(), "still held");
        q.expire(&mut mm, t0 + HOLD);
        assert_eq!(out(&mut q), [r#"enqueue 1 t1 ["x"] open=false"#]);
        assert_eq!(q.queued(), 1);
        assert!(
            matches!(mm.status(user(1)), Status::Idle),
            "gone from the local queue"
        );
        // Its interest wait passes in the cluster queue.
        q.expire(&mut mm, t0 + WAIT);
        assert_eq!(out(&mut q), ["open 1 t1"]);
    }

    #[test]
    fn users_who_come_and_go_leave_no_timer_behind() {
        // A long hold and a long interest wait: nothing may wait for them to pass.
        let t0 = Instant::now();
        let mut mm = Matchmaker::new(Duration::from_secs(3600));
        let mut q = ClusterQueue::new(Duration::from_secs(3600));
        q.on_link(&mut mm, true, t0);
        for i in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            find(&mut mm, &mut q, i, 1, &["x"], now);
            // Some are held, some already published with an interest wait pending.
            if i % 2 == 0 {
                q.expire(&mut mm, now + Duration::from_secs(3600));
            }
            mm.leave(user(i));
            q.forget(user(i));
        }
        assert_eq!(q.timers(), 0);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn a_local_partner_during_the_hold_keeps_the_pair_local() {
        let (mut mm, mut q, t0) = setup();
        find(&mut mm, &mut q, 1, 1, &[], t0);
        let p = find(&mut mm, &mut q, 2, 1, &[], t0 + HOLD / 2).expect("paired here");
        assert_eq!((p.a, p.b), (user(2), user(1)));
        q.expire(&mut mm, t0 + HOLD);
        assert!(out(&mut q).is_empty(), "nobody is enqueued");
    }

    #[test]
    fn a_new_request_withdraws_and_a_next_keeps_the_place() {
        let (mut mm, mut q, t0) = setup();
        find(&mut mm, &mut q, 1, 1, &[], t0);
        q.expire(&mut mm, t0 + HOLD);
        out(&mut q);
        assert!(q.is_waiting_there(user(1)));
        // find again: withdrawn, held here again under the new ticket.
        find(&mut mm, &mut q, 1, 2, &[], t0 + HOLD);
        assert_eq!(out(&mut q), ["withdraw 1"]);
        q.expire(&mut mm, t0 + 2 * HOLD);
        assert_eq!(out(&mut q), ["enqueue 1 t2 [] open=true"]);
        // A held user that asked for something else meanwhile is not enqueued under the old
        // ticket.
        find(&mut mm, &mut q, 5, 1, &[], t0);
        mm.leave(user(5));
        q.forget(user(5));
        q.expire(&mut mm, t0 + 3 * HOLD);
        assert!(out(&mut q).is_empty());
    }

    #[test]
    fn a_pairing_from_the_script_pairs_our_user_only_if_current() {
        let (mut mm, mut q, t0) = setup();
        next_into_the_cluster(&mut mm, &mut q, t0);
        let pairing = |ticket| Pairing {
            a: user(1),
            a_ticket: ticket,
            b: remote(9),
            b_ticket: 3,
            epoch: 77,
            common: vec![],
        };
        // Stale ticket: delivered (the shard tells the partner), our state untouched.
        q.on_cluster_paired(&mut mm, pairing(9));
        assert!(q.is_waiting_there(user(1)));
        assert_eq!(mm.known_users(), 2, "the relation stands");
        q.on_cluster_paired(&mut mm, pairing(2));
        assert!(!q.is_waiting_there(user(1)));
        assert_eq!(mm.status(user(1)), Status::Idle);
        assert_eq!(mm.known_users(), 0, "paired elsewhere: the relation ended");
        // 2 may meet 1 again.
        assert!(find(&mut mm, &mut q, 2, 2, &[], t0).is_none());
        assert!(mm.next(user(1), 3, Some(remote(9)), t0).is_some());
    }

    #[test]
    fn claimed_by_another_node() {
        let (mut mm, mut q, t0) = setup();
        next_into_the_cluster(&mut mm, &mut q, t0);
        q.on_claimed(&mut mm, user(1), 1, remote(3));
        assert!(
            q.is_waiting_there(user(1)),
            "a claim for an older ticket changes nothing"
        );
        assert_eq!(mm.known_users(), 2);
        q.on_claimed(&mut mm, user(1), 2, remote(3));
        assert!(!q.is_waiting_there(user(1)));
        assert_eq!(mm.status(user(1)), Status::Idle);
        assert_eq!(mm.known_users(), 0, "paired elsewhere: the relation ended");
    }

    #[test]
    fn a_claim_heard_after_the_link_was_lost_is_not_requeued() {
        let (mut mm, mut q, t0) = setup();
        let now = next_into_the_cluster(&mut mm, &mut q, t0);
        find(&mut mm, &mut q, 5, 1, &[], t0);
        q.expire(&mut mm, now);
        out(&mut q);
        q.on_link(&mut mm, false, now);
        assert_eq!(q.queued(), 2, "1 and 5 quarantined");
        // 1 was claimed by another node before the link went; its shard says so only now.
        q.on_claimed(&mut mm, user(1), 2, remote(3));
        assert!(!q.is_waiting_there(user(1)));
        assert_eq!(mm.known_users(), 0, "paired elsewhere: the relation ended");
        // At the end of the quarantine only 5 waits here again; 1 is chatting.
        assert!(q.expire(&mut mm, now + TTL + HEARTBEAT).is_empty());
        assert_eq!(mm.waiting_users(), vec![user(5)]);
        assert_eq!(mm.status(user(1)), Status::Idle);
    }

    #[test]
    fn a_lost_link_quarantines_until_the_heartbeat_expires() {
        let (mut mm, mut q, t0) = setup();
        find(&mut mm, &mut q, 1, 1, &[], t0);
        find(&mut mm, &mut q, 2, 1, &["x"], t0 + Duration::from_millis(1));
        q.expire(&mut mm, t0 + 2 * HOLD);
        out(&mut q);
        let down = t0 + Duration::from_secs(1);
        assert!(q.on_link(&mut mm, false, down).is_empty());
        assert_eq!(q.queued(), 2, "quarantined");
        // While the link is down, a new user is not held for the cluster.
        find(&mut mm, &mut q, 3, 1, &["y"], down);
        assert_eq!(q.next_deadline(), Some(down + TTL + HEARTBEAT));
        assert!(q.expire(&mut mm, down + TTL).is_empty());
        // Released: they wait here again, and the two open ones pair at once.
        let made = q.expire(&mut mm, down + TTL + HEARTBEAT);
        assert_eq!(
            made.len(),
            0,
            "1 is open, 2 and 3 are not: nobody pairs yet"
        );
        assert_eq!(q.queued(), 0);
        assert!(matches!(mm.status(user(1)), Status::Waiting { .. }));
        assert!(matches!(mm.status(user(2)), Status::Waiting { .. }));
        assert!(out(&mut q).is_empty());
    }

    #[test]
    fn the_link_back_enqueues_everyone_waiting_and_quarantined() {
        let (mut mm, mut q, t0) = setup();
        find(&mut mm, &mut q, 1, 1, &[], t0);
        q.expire(&mut mm, t0 + HOLD);
        out(&mut q);
        q.on_link(&mut mm, false, t0 + HOLD);
        find(&mut mm, &mut q, 2, 1, &["z"], t0 + HOLD);
        let made = q.on_link(&mut mm, true, t0 + 2 * HOLD);
        assert!(made.is_empty());
        let mut asked = out(&mut q);
        asked.sort();
        assert_eq!(
            asked,
            [
                "enqueue 1 t1 [] open=true",
                r#"enqueue 2 t1 ["z"] open=false"#
            ]
        );
        assert_eq!(q.queued(), 2);
    }
}
