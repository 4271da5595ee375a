//! One chat connection's side of the protocol, with no I/O: the state of one `/ws` client
//! (idle, waiting under a ticket, paired with a partner in an epoch), its rate limiter, and
//! every decision the protocol's state table makes for it. It takes the time and its input
//! (a client message, a message for this connection from its partner or the matchmaker) as
//! arguments and emits what should happen into a [`Sink`]: a server message for this client,
//! a message for another connection, a request to the matchmaker or the cluster, a close.
//!
//! The shard owns one `ChatSession` per connection and turns the effects into frames and
//! cross-thread messages; the tests below drive two sessions at a time in memory.
//!
//! The rules that make delivery exact:
//! - every request to the matchmaker carries a **ticket**; a pairing that answers an older
//!   request (the client asked for something else meanwhile, or left) is stale;
//! - the matchmaker tells one side of a new pair (`a`); `a`'s session forwards `Paired` to
//!   the other side through the same ordered channel as its later relays, so `b` learns of
//!   the pair before any message from `a`;
//! - every relay and `partner_left` carries the pair's **epoch**; a session accepts them only
//!   while it is paired in that epoch, so nothing from a previous partner reaches a later one.
use crate::chat::matchmaker::Pairing;
use crate::chat::protocol::{self as proto, ClientMsg, ErrorCode};
use crate::chat::ratelimit::{RateLimitConfig, RateLimiter, RateVerdict};
use crate::xshard::{ConnId, MatchReq, PeerMsg, CLUSTER_EPOCH};

/// Where a chat client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatPhase {
    Idle,
    Waiting,
    Paired,
}

/// The chat rules' limits, fixed at start.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub rate: RateLimitConfig,
    pub max_text_chars: usize,
    /// Cluster mode: a chat ended by `next`/`find` is also remembered in Redis.
    pub cluster: bool,
}

/// Who this session is and when it is.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub me: ConnId,
    /// Milliseconds on the shard's clock.
    pub now_ms: u64,
    pub cfg: SessionConfig,
}

impl Ctx {
    /// The shard clock as the wrapping 32-bit milliseconds the shard keeps per connection.
    fn now32(&self) -> u32 {
        self.now_ms as u32
    }
}

/// A server → client message of the chat protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    Hello { online: u64 },
    Waiting,
    Paired { common: &'a [String] },
    Message { text: &'a str },
    Typing { active: bool },
    PartnerLeft,
    Error(ErrorCode),
}

impl Reply<'_> {
    /// The JSON text of this message.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Hello { online } => proto::write_hello(out, *online),
            Reply::Waiting => proto::write_waiting(out),
            Reply::Paired { common } => proto::write_paired(out, common),
            Reply::Message { text } => proto::write_message(out, text),
            Reply::Typing { active } => proto::write_typing(out, *active),
            Reply::PartnerLeft => proto::write_partner_left(out),
            Reply::Error(code) => proto::write_error(out, *code),
        }
    }
}

/// Counters a session reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// A message was dropped by the rate limiter.
    RateLimited,
    /// The client was paired after waiting this many milliseconds.
    MatchWait(u32),
    /// A pair with a partner on another node ended because that node or the link failed.
    ClusterPairLost,
}

/// Effects that need no connection: messages for other connections and threads.
pub trait Route {
    /// A message for connection `to` (on this shard, another shard or another node).
    fn peer(&mut self, to: ConnId, msg: PeerMsg);
    fn matcher(&mut self, req: MatchReq);
    /// Cluster: `a` ended its chat with `b` by `next`/`find`; they are not paired again for
    /// now. Stored in Redis before the `partner_left` that follows reaches `b`.
    fn avoid(&mut self, a: ConnId, b: ConnId);
    /// Cluster: `user`'s avoid relation ends (it paired with someone else, or left).
    fn clear_avoid(&mut self, user: ConnId);
    fn count(&mut self, stat: Stat);
}

/// Everything a session can make happen.
pub trait Sink: Route {
    /// A message for this client.
    fn send(&mut self, reply: Reply<'_>);
    /// An already encoded frame for this client: a relay from its partner.
    fn forward(&mut self, frame: &[u8]);
    /// A chat line or typing indicator for the partner `to`, valid only in pair `epoch`.
    fn relay(&mut self, to: ConnId, epoch: u64, reply: Reply<'_>);
    /// Close this connection with `code` (at the end of the loop turn).
    fn close(&mut self, code: u16);
}

/// One `/ws` client's chat state (56 bytes, inline in its connection).
#[derive(Debug, Clone, Copy)]
pub struct ChatSession {
    phase: ChatPhase,
    /// Cluster: this user has an avoid relation stored in Redis, to clear when it pairs here
    /// with someone else or leaves.
    avoids: bool,
    /// Increases with each find/next sent to the matchmaker; 0 = never asked.
    ticket: u32,
    partner: ConnId,
    epoch: u64,
    /// When the current wait began (shard clock, wrapping ms), for the time-to-match figure.
    waiting_since: u32,
    rate: RateLimiter,
}

const NOBODY: ConnId = ConnId {
    node: 0,
    shard: 0,
    slot: 0,
    gen: 0,
};

impl ChatSession {
    pub fn new(cfg: &SessionConfig, now_ms: u64) -> Self {
        ChatSession {
            phase: ChatPhase::Idle,
            avoids: false,
            ticket: 0,
            partner: NOBODY,
            epoch: 0,
            waiting_since: 0,
            rate: RateLimiter::new(&cfg.rate, now_ms),
        }
    }

    pub fn phase(&self) -> ChatPhase {
        self.phase
    }

    /// The partner and pair epoch while paired.
    pub fn partner(&self) -> Option<(ConnId, u64)> {
        (self.phase == ChatPhase::Paired).then_some((self.partner, self.epoch))
    }

    /// Does a relay (or `partner_left`) of pair `epoch` reach this client?
    pub fn accepts(&self, epoch: u64) -> bool {
        self.phase == ChatPhase::Paired && self.epoch == epoch
    }

    /// One complete text message from the client: rate limit, validate, then the state table.
    pub fn on_text(&mut self, json: &[u8], cx: &Ctx, sink: &mut impl Sink) {
        let parsed = proto::parse_client_message(json, cx.cfg.max_text_chars);
        let is_line = matches!(parsed, Ok(ClientMsg::Message { .. }));
        match self.rate.check(&cx.cfg.rate, cx.now_ms, is_line) {
            RateVerdict::Allow => {}
            RateVerdict::Drop { notify } => {
                sink.count(Stat::RateLimited);
                if notify && is_line {
                    sink.send(Reply::Error(ErrorCode::RateLimited));
                }
                return;
            }
            RateVerdict::Abuse => {
                sink.count(Stat::RateLimited);
                sink.close(crate::ws::close::POLICY_VIOLATION);
                return;
            }
        }
        match parsed {
            Ok(msg) => self.on_message(msg, cx, sink),
            // A rejected message changes nothing.
            Err(code) => sink.send(Reply::Error(code)),
        }
    }

    fn on_message(&mut self, msg: ClientMsg<'_>, cx: &Ctx, sink: &mut impl Sink) {
        let me = cx.me;
        match msg {
            ClientMsg::Find { interests } => {
                // The matchmaker does not keep pairs: it learns here which chat this ends.
                let ended = self.partner().map(|(p, _)| p);
                self.end_pair(true, cx, sink);
                let ticket = self.requeue(cx, sink);
                sink.matcher(MatchReq::Find {
                    user: me,
                    ticket,
                    interests,
                    ended,
                });
            }
            ClientMsg::Next => match self.phase {
                ChatPhase::Waiting => sink.send(Reply::Waiting),
                ChatPhase::Idle | ChatPhase::Paired => {
                    let ended = self.partner().map(|(p, _)| p);
                    self.end_pair(true, cx, sink);
                    let ticket = self.requeue(cx, sink);
                    sink.matcher(MatchReq::Next {
                        user: me,
                        ticket,
                        ended,
                    });
                }
            },
            ClientMsg::Leave => match self.phase {
                ChatPhase::Idle => {}
                ChatPhase::Waiting | ChatPhase::Paired => {
                    self.end_pair(false, cx, sink);
                    self.phase = ChatPhase::Idle;
                    sink.matcher(MatchReq::Leave { user: me });
                }
            },
            ClientMsg::Message { text } => {
                if self.phase == ChatPhase::Paired {
                    sink.relay(self.partner, self.epoch, Reply::Message { text: &text });
                } else {
                    sink.send(Reply::Error(ErrorCode::NotChatting));
                }
            }
            ClientMsg::Typing { active } => {
                if self.phase == ChatPhase::Paired {
                    sink.relay(self.partner, self.epoch, Reply::Typing { active });
                }
            }
        }
    }

    /// Waiting under a new ticket, and the client is told at once (the protocol allows
    /// `waiting` before `paired`; it saves a round trip through the matchmaker).
    fn requeue(&mut self, cx: &Ctx, sink: &mut impl Sink) -> u32 {
        self.ticket = self.ticket.wrapping_add(1).max(1);
        self.phase = ChatPhase::Waiting;
        self.waiting_since = cx.now32();
        sink.send(Reply::Waiting);
        self.ticket
    }

    /// End the pair from this side: the partner gets `partner_left` after every relay this
    /// side sent it (same ordered path). `avoid`: ended by `next`/`find`, so the two are not
    /// paired again for now.
    fn end_pair(&mut self, avoid: bool, cx: &Ctx, sink: &mut impl Route) {
        if self.phase != ChatPhase::Paired {
            return;
        }
        self.phase = ChatPhase::Idle;
        if avoid && cx.cfg.cluster {
            self.avoids = true;
            sink.avoid(cx.me, self.partner);
        }
        sink.peer(
            self.partner,
            PeerMsg::PartnerLeft {
                epoch: self.epoch,
                avoid,
            },
        );
    }

    fn become_paired(
        &mut self,
        partner: ConnId,
        epoch: u64,
        common: &[String],
        cx: &Ctx,
        sink: &mut impl Sink,
    ) {
        // Paired here with someone else: the avoid relation in Redis ends. (The cluster
        // queue's pairing script ends it by itself.)
        if self.avoids {
            self.avoids = false;
            if epoch & CLUSTER_EPOCH == 0 {
                sink.clear_avoid(cx.me);
            }
        }
        sink.count(Stat::MatchWait(cx.now32().wrapping_sub(self.waiting_since)));
        self.phase = ChatPhase::Paired;
        self.partner = partner;
        self.epoch = epoch;
        sink.send(Reply::Paired { common });
    }

    fn waits_under(&self, ticket: u32) -> bool {
        self.phase == ChatPhase::Waiting && self.ticket == ticket
    }

    /// The matchmaker paired this client (side `a` of `p`). Returns whether the pairing is
    /// live (the client still waits under the pairing's ticket) and it is now paired. Either
    /// way the caller then runs [`forward_pairing`].
    pub fn take_pairing(&mut self, p: &Pairing<ConnId>, cx: &Ctx, sink: &mut impl Sink) -> bool {
        let live = self.waits_under(p.a_ticket);
        if live {
            self.become_paired(p.b, p.epoch, &p.common, cx, sink);
        }
        live
    }

    /// A relay from the partner, already encoded: forwarded only within its pair.
    pub fn on_relay(&mut self, epoch: u64, frame: &[u8], sink: &mut impl Sink) {
        if self.accepts(epoch) {
            sink.forward(frame);
        }
    }

    /// A message for this client from another connection.
    pub fn on_peer(&mut self, msg: PeerMsg, cx: &Ctx, sink: &mut impl Sink) {
        match msg {
            PeerMsg::Paired {
                ticket,
                partner,
                epoch,
                common,
            } => {
                if !self.waits_under(ticket) {
                    // Stale for this side: the other side is told; the matchmaker already
                    // knows (it handled the request or disconnect that made it stale).
                    sink.peer(
                        partner,
                        PeerMsg::PartnerLeft {
                            epoch,
                            avoid: false,
                        },
                    );
                    return;
                }
                self.become_paired(partner, epoch, &common, cx, sink);
                if partner.is_remote() {
                    // Claimed from the cluster queue by another node: the matchmaker still
                    // lists this client as queued there.
                    sink.matcher(MatchReq::Claimed {
                        user: cx.me,
                        ticket,
                        partner,
                        epoch,
                    });
                }
            }
            PeerMsg::Relay { epoch, frame } => self.on_relay(epoch, &frame, sink),
            PeerMsg::PartnerLeft { epoch, avoid } => {
                if !self.accepts(epoch) {
                    return;
                }
                self.phase = ChatPhase::Idle;
                if avoid && cx.cfg.cluster {
                    self.avoids = true;
                }
                sink.send(Reply::PartnerLeft);
            }
        }
    }

    /// Every pair with a partner on node `node` is over (`node == 0`: on any other node,
    /// because this node lost its Redis link). This side is told; the other side too if the
    /// link still works, in case that node is alive and only lost messages.
    pub fn on_node_down(&mut self, node: u16, cx: &Ctx, sink: &mut impl Sink) {
        if self.phase != ChatPhase::Paired
            || !self.partner.is_remote()
            || (node != 0 && self.partner.node != node)
        {
            return;
        }
        let (partner, epoch) = (self.partner, self.epoch);
        self.on_peer(
            PeerMsg::PartnerLeft {
                epoch,
                avoid: false,
            },
            cx,
            sink,
        );
        if node != 0 {
            sink.peer(
                partner,
                PeerMsg::PartnerLeft {
                    epoch,
                    avoid: false,
                },
            );
        }
        sink.count(Stat::ClusterPairLost);
    }

    /// The connection leaves the chat for good (it is closing): end its pair, drop its avoid
    /// relation, and tell the matchmaker if it ever asked for anything.
    pub fn leave(&mut self, cx: &Ctx, sink: &mut impl Route) {
        let asked = self.ticket != 0;
        let avoids = self.avoids;
        self.end_pair(false, cx, sink);
        if avoids {
            sink.clear_avoid(cx.me);
        }
        *self = ChatSession {
            rate: self.rate,
            ..ChatSession::new(&cx.cfg, cx.now_ms)
        };
        if asked {
            sink.matcher(MatchReq::Gone { user: cx.me });
        }
    }
}

/// After the matchmaker's pairing `p` reached side `a` (`live`: `a` took it): tell `b`,
/// through `a`'s ordered path so that `b` hears of the pair before any relay from `a`. If
/// `a` is gone or asked for something else meanwhile, `b` gets `partner_left` right after.
pub fn forward_pairing(p: Pairing<ConnId>, live: bool, sink: &mut impl Route) {
    let (b, epoch) = (p.b, p.epoch);
    sink.peer(
        b,
        PeerMsg::Paired {
            ticket: p.b_ticket,
            partner: p.a,
            epoch,
            common: p.common,
        },
    );
    if !live {
        sink.peer(
            b,
            PeerMsg::PartnerLeft {
                epoch,
                avoid: false,
            },
        );
    }
}

/// A message for a connection that is gone (or was never a chat client): a `Paired` is
/// answered with `partner_left` to the partner; anything else is dropped.
pub fn absent(msg: PeerMsg, sink: &mut impl Route) {
    if let PeerMsg::Paired { partner, epoch, .. } = msg {
        sink.peer(
            partner,
            PeerMsg::PartnerLeft {
                epoch,
                avoid: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    //! Two sessions at a time, in memory, with a virtual clock: a small network carries what
    //! one session sends the other (in order, as the shards' channels do), a fake matchmaker
    //! records requests and the test decides when pairings arrive, so every race can be
    //! played in any order.
    use super::*;
    use std::collections::VecDeque;

    fn id(slot: u32) -> ConnId {
        ConnId::local(0, slot, 1)
    }

    fn cfg(cluster: bool) -> SessionConfig {
        SessionConfig {
            rate: RateLimitConfig {
                per_sec: 20,
                burst: 40,
                abuse_drops: 100,
            },
            max_text_chars: 2000,
            cluster,
        }
    }

    /// Everything one session emitted.
    #[derive(Default)]
    struct Rec {
        /// Messages to this client, as JSON text (relayed frames as their JSON payload).
        sent: Vec<String>,
        /// Messages for other connections, in order.
        out: VecDeque<(ConnId, PeerMsg)>,
        matcher: Vec<MatchReq>,
        cluster: Vec<String>,
        closes: Vec<u16>,
        stats: Vec<Stat>,
    }

    impl Route for Rec {
        fn peer(&mut self, to: ConnId, msg: PeerMsg) {
            self.out.push_back((to, msg));
        }
        fn matcher(&mut self, req: MatchReq) {
            self.matcher.push(req);
        }
        fn avoid(&mut self, a: ConnId, b: ConnId) {
            self.cluster.push(format!("avoid {} {}", a.slot, b.slot));
        }
        fn clear_avoid(&mut self, user: ConnId) {
            self.cluster.push(format!("clear {}", user.slot));
        }
        fn count(&mut self, stat: Stat) {
            self.stats.push(stat);
        }
    }

    impl Sink for Rec {
        fn send(&mut self, reply: Reply<'_>) {
            let mut json = Vec::new();
            reply.write(&mut json);
            self.sent.push(String::from_utf8(json).unwrap());
        }
        fn forward(&mut self, frame: &[u8]) {
            // Test frames are bare JSON (the shard encodes real WebSocket frames).
            self.sent.push(String::from_utf8(frame.to_vec()).unwrap());
        }
        fn relay(&mut self, to: ConnId, epoch: u64, reply: Reply<'_>) {
            let mut json = Vec::new();
            reply.write(&mut json);
            self.out.push_back((
                to,
                PeerMsg::Relay {
                    epoch,
                    frame: json.into(),
                },
            ));
        }
        fn close(&mut self, code: u16) {
            self.closes.push(code);
        }
    }

    /// One client: its session and what it emitted.
    struct Client {
        me: ConnId,
        s: ChatSession,
        rec: Rec,
    }

    /// Two clients, a virtual clock and the ordered links between them.
    struct Pair {
        cfg: SessionConfig,
        now_ms: u64,
        c: [Client; 2],
        epochs: u64,
    }

    const A: usize = 0;
    const B: usize = 1;
    const WAITING: &str = r#"{"type":"waiting"}"#;
    const LEFT: &str = r#"{"type":"partner_left"}"#;

    impl Pair {
        fn new(cluster: bool) -> Pair {
            let cfg = cfg(cluster);
            let client = |slot| Client {
                me: id(slot),
                s: ChatSession::new(&cfg, 0),
                rec: Rec::default(),
            };
            Pair {
                cfg,
                now_ms: 0,
                c: [client(1), client(2)],
                epochs: 0,
            }
        }

        fn cx(&self, who: usize) -> Ctx {
            Ctx {
                me: self.c[who].me,
                now_ms: self.now_ms,
                cfg: self.cfg,
            }
        }

        fn text(&mut self, who: usize, json: &str) {
            let cx = self.cx(who);
            let c = &mut self.c[who];
            c.s.on_text(json.as_bytes(), &cx, &mut c.rec);
        }

        /// What `who` received since the last call.
        fn take(&mut self, who: usize) -> Vec<String> {
            std::mem::take(&mut self.c[who].rec.sent)
        }

        fn requests(&mut self, who: usize) -> Vec<String> {
            std::mem::take(&mut self.c[who].rec.matcher)
                .iter()
                .map(|r| format!("{r:?}"))
                .collect()
        }

        /// The ticket of `who`'s last find/next.
        fn ticket(&self, who: usize) -> u32 {
            self.c[who].s.ticket
        }

        /// A message for `who`, from anywhere.
        fn peer(&mut self, who: usize, msg: PeerMsg) {
            let cx = self.cx(who);
            let c = &mut self.c[who];
            c.s.on_peer(msg, &cx, &mut c.rec);
        }

        /// Deliver everything `from` sent so far to its addressees (only these two exist).
        fn carry(&mut self, from: usize) {
            while let Some((to, msg)) = self.c[from].rec.out.pop_front() {
                let who = self.c.iter().position(|c| c.me == to).expect("addressee");
                self.peer(who, msg);
            }
        }

        /// The matchmaker pairs `a` (its request `a_ticket`) with `b` (`b_ticket`) and tells
        /// `a`'s side, which forwards `Paired` to `b` (not carried yet).
        fn pair_made(&mut self, a: usize, a_ticket: u32, b: usize, b_ticket: u32) -> u64 {
            self.epochs += 1;
            let p = Pairing {
                a: self.c[a].me,
                a_ticket,
                b: self.c[b].me,
                b_ticket,
                epoch: self.epochs,
                common: vec!["x".to_string()],
            };
            let cx = self.cx(a);
            let c = &mut self.c[a];
            let live = c.s.take_pairing(&p, &cx, &mut c.rec);
            forward_pairing(p, live, &mut c.rec);
            self.epochs
        }

        /// Both find, the matchmaker pairs them, everything is carried: they chat.
        fn chatting(cluster: bool) -> Pair {
            let mut p = Pair::new(cluster);
            p.text(A, r#"{"type":"find"}"#);
            p.text(B, r#"{"type":"find"}"#);
            let (ta, tb) = (p.ticket(A), p.ticket(B));
            p.pair_made(A, ta, B, tb);
            p.carry(A);
            assert_eq!(p.take(A), [WAITING, r#"{"type":"paired","common":["x"]}"#]);
            assert_eq!(p.take(B), [WAITING, r#"{"type":"paired","common":["x"]}"#]);
            p.requests(A);
            p.requests(B);
            p
        }

        fn leave_for_good(&mut self, who: usize) {
            let cx = self.cx(who);
            let c = &mut self.c[who];
            c.s.leave(&cx, &mut c.rec);
        }
    }

    fn msg(text: &str) -> String {
        format!(r#"{{"type":"message","text":"{text}"}}"#)
    }

    // ----- the state table, row by row ----------------------------------------------------

    #[test]
    fn find_in_each_state() {
        // Idle: queued, told at once.
        let mut p = Pair::new(false);
        p.text(A, r#"{"type":"find","interests":["Rust"]}"#);
        assert_eq!(p.take(A), [WAITING]);
        assert_eq!(p.c[A].s.phase(), ChatPhase::Waiting);
        assert_eq!(
            p.requests(A),
            [
                r#"Find { user: ConnId { node: 0, shard: 0, slot: 1, gen: 1 }, ticket: 1, interests: ["rust"], ended: None }"#
            ]
        );
        // Waiting: re-queued under a new ticket.
        p.text(A, r#"{"type":"find","interests":["go"]}"#);
        assert_eq!(p.take(A), [WAITING]);
        assert_eq!(p.ticket(A), 2);
        let req = p.requests(A);
        assert_eq!(req.len(), 1);
        assert!(req[0].ends_with("ended: None }"), "{req:?}");
        // Chatting: the partner is told (and the two avoid each other), then queued; the
        // matchmaker is told which chat ended.
        let mut p = Pair::chatting(false);
        p.text(A, r#"{"type":"find"}"#);
        assert_eq!(p.take(A), [WAITING]);
        let req = p.requests(A);
        assert_eq!(req.len(), 1);
        assert!(
            req[0].ends_with("ended: Some(ConnId { node: 0, shard: 0, slot: 2, gen: 1 }) }"),
            "{req:?}"
        );
        p.carry(A);
        assert_eq!(p.take(B), [LEFT]);
        assert_eq!(p.c[B].s.phase(), ChatPhase::Idle);
        // B's chat was ended for it: its next ends nothing.
        p.text(B, r#"{"type":"next"}"#);
        assert!(p.requests(B)[0].ends_with("ended: None }"));
    }

    #[test]
    fn message_and_typing_in_each_state() {
        let mut p = Pair::new(false);
        p.text(A, &msg("hi"));
        let mut not_chatting = Vec::new();
        Reply::Error(ErrorCode::NotChatting).write(&mut not_chatting);
        assert_eq!(p.take(A), [String::from_utf8(not_chatting).unwrap()]);
        p.text(A, r#"{"type":"typing","active":true}"#);
        assert!(p.take(A).is_empty(), "typing while idle is ignored");
        p.text(A, r#"{"type":"find"}"#);
        p.take(A);
        p.text(A, &msg("hi"));
        assert_eq!(p.take(A).len(), 1, "not_chatting while waiting");
        p.text(A, r#"{"type":"typing","active":true}"#);
        assert!(p.take(A).is_empty(), "typing while waiting is ignored");
        assert!(p.c[A].rec.out.is_empty());
        // Chatting: relayed to the partner, nothing for the sender.
        let mut p = Pair::chatting(false);
        p.text(A, &msg("  hi  "));
        p.text(A, r#"{"type":"typing","active":false}"#);
        assert!(p.take(A).is_empty());
        p.carry(A);
        assert_eq!(
            p.take(B),
            [
                r#"{"type":"message","text":"hi"}"#,
                r#"{"type":"typing","active":false}"#
            ]
        );
    }

    #[test]
    fn next_in_each_state() {
        // Idle: queued (with the last interests, which the matchmaker remembers).
        let mut p = Pair::new(false);
        p.text(A, r#"{"type":"next"}"#);
        assert_eq!(p.take(A), [WAITING]);
        assert_eq!(
            p.requests(A),
            [
                r#"Next { user: ConnId { node: 0, shard: 0, slot: 1, gen: 1 }, ticket: 1, ended: None }"#
            ]
        );
        // Waiting: answers waiting, keeps its place (no request).
        p.text(A, r#"{"type":"next"}"#);
        assert_eq!(p.take(A), [WAITING]);
        assert!(p.requests(A).is_empty());
        assert_eq!(p.ticket(A), 1);
        // Chatting: partner told, queued again; the matchmaker is told which chat ended.
        let mut p = Pair::chatting(false);
        p.text(B, r#"{"type":"next"}"#);
        assert_eq!(p.take(B), [WAITING]);
        assert_eq!(
            p.requests(B),
            [
                r#"Next { user: ConnId { node: 0, shard: 0, slot: 2, gen: 1 }, ticket: 2, ended: Some(ConnId { node: 0, shard: 0, slot: 1, gen: 1 }) }"#
            ]
        );
        p.carry(B);
        assert_eq!(p.take(A), [LEFT]);
    }

    #[test]
    fn leave_in_each_state() {
        let mut p = Pair::new(false);
        p.text(A, r#"{"type":"leave"}"#);
        assert!(p.take(A).is_empty() && p.requests(A).is_empty());
        p.text(A, r#"{"type":"find"}"#);
        p.take(A);
        p.requests(A);
        p.text(A, r#"{"type":"leave"}"#);
        assert!(p.take(A).is_empty(), "no reply");
        assert!(p.requests(A)[0].starts_with("Leave"));
        assert_eq!(p.c[A].s.phase(), ChatPhase::Idle);
        let mut p = Pair::chatting(false);
        p.text(A, r#"{"type":"leave"}"#);
        assert!(p.take(A).is_empty());
        assert!(p.requests(A)[0].starts_with("Leave"));
        p.carry(A);
        assert_eq!(p.take(B), [LEFT]);
        // Ended by leave: no avoid relation.
        assert!(matches!(
            p.c[A].rec.out.front(),
            None | Some((_, PeerMsg::PartnerLeft { avoid: false, .. }))
        ));
    }

    #[test]
    fn rejected_messages_change_nothing_in_any_state() {
        for state in 0..3 {
            let mut p = if state == 2 {
                Pair::chatting(false)
            } else {
                Pair::new(false)
            };
            if state == 1 {
                p.text(A, r#"{"type":"find"}"#);
                p.take(A);
                p.requests(A);
            }
            let before = (p.c[A].s.phase(), p.ticket(A));
            for bad in [
                "nope",
                r#"{"type":"dance"}"#,
                r#"{"type":"find","interests":[""]}"#,
                r#"{"type":"typing","active":"yes"}"#,
            ] {
                p.text(A, bad);
                let got = p.take(A);
                assert_eq!(got.len(), 1, "{bad}: {got:?}");
                assert!(got[0].starts_with(r#"{"type":"error""#), "{bad}: {got:?}");
            }
            assert_eq!((p.c[A].s.phase(), p.ticket(A)), before);
            assert!(p.requests(A).is_empty() && p.c[A].rec.out.is_empty());
        }
    }

    #[test]
    fn rate_limit_drops_then_closes_on_abuse() {
        let mut p = Pair::chatting(false);
        // The find that queued A took a token; the burst allows 40 messages in all.
        for i in 0..39 {
            p.text(A, &msg(&format!("m{i}")));
        }
        assert!(p.take(A).is_empty());
        p.text(A, &msg("over"));
        let mut limited = Vec::new();
        Reply::Error(ErrorCode::RateLimited).write(&mut limited);
        assert_eq!(p.take(A), [String::from_utf8(limited).unwrap()]);
        p.carry(A);
        assert_eq!(p.take(B).len(), 39, "the dropped line is not relayed");
        for _ in 0..100 {
            p.text(A, &msg("over"));
        }
        assert_eq!(p.c[A].rec.closes, [crate::ws::close::POLICY_VIOLATION]);
        // A second later there are tokens again.
        p.now_ms += 1000;
        p.c[A].rec.closes.clear();
        p.text(A, &msg("again"));
        assert!(p.c[A].rec.closes.is_empty());
    }

    // ----- races ---------------------------------------------------------------------------

    #[test]
    fn a_pairing_for_a_side_that_asked_for_something_else_is_stale() {
        let mut p = Pair::new(false);
        p.text(A, r#"{"type":"find"}"#);
        p.text(B, r#"{"type":"find"}"#);
        let (ta, tb) = (p.ticket(A), p.ticket(B));
        // A finds again before the pairing for its first find arrives.
        p.text(A, r#"{"type":"find","interests":["y"]}"#);
        p.take(A);
        p.pair_made(A, ta, B, tb);
        assert!(p.take(A).is_empty(), "A stays waiting");
        assert_eq!(p.c[A].s.phase(), ChatPhase::Waiting);
        p.carry(A);
        // B hears of the pair and of its end, in that order, and is idle.
        assert_eq!(
            p.take(B),
            [WAITING, r#"{"type":"paired","common":["x"]}"#, LEFT]
        );
        assert_eq!(p.c[B].s.phase(), ChatPhase::Idle);
    }

    #[test]
    fn a_pairing_races_the_other_sides_disconnect() {
        let mut p = Pair::new(false);
        p.text(A, r#"{"type":"find"}"#);
        p.text(B, r#"{"type":"find"}"#);
        let (ta, tb) = (p.ticket(A), p.ticket(B));
        p.pair_made(A, ta, B, tb);
        // B disconnects before `Paired` reaches it.
        p.leave_for_good(B);
        assert!(p.requests(B).last().unwrap().starts_with("Gone"));
        p.carry(A);
        // B's side answers for it: A gets partner_left right after paired.
        p.carry(B);
        assert_eq!(
            p.take(A),
            [WAITING, r#"{"type":"paired","common":["x"]}"#, LEFT]
        );
        assert_eq!(p.c[A].s.phase(), ChatPhase::Idle);
    }

    #[test]
    fn a_message_for_a_side_that_is_gone_answers_only_a_pairing() {
        let mut rec = Rec::default();
        absent(
            PeerMsg::Paired {
                ticket: 1,
                partner: id(7),
                epoch: 3,
                common: vec![],
            },
            &mut rec,
        );
        absent(
            PeerMsg::Relay {
                epoch: 3,
                frame: Box::default(),
            },
            &mut rec,
        );
        absent(
            PeerMsg::PartnerLeft {
                epoch: 3,
                avoid: true,
            },
            &mut rec,
        );
        assert_eq!(
            rec.out.into_iter().collect::<Vec<_>>(),
            [(
                id(7),
                PeerMsg::PartnerLeft {
                    epoch: 3,
                    avoid: false
                }
            )]
        );
    }

    #[test]
    fn relays_in_flight_when_the_pair_ends_never_reach_a_later_partner() {
        let mut p = Pair::chatting(false);
        // A sends, then B presses next before A's line arrives.
        p.text(A, &msg("late"));
        p.text(B, r#"{"type":"next"}"#);
        p.carry(A);
        assert_eq!(p.take(B), [WAITING], "the late line is dropped");
        // A pairs again with B under a new epoch (after one of them met someone else; here
        // the test just plays the matchmaker): an old-epoch relay still does not get through.
        p.carry(B);
        assert_eq!(p.take(A), [LEFT]);
        p.text(A, r#"{"type":"find"}"#);
        let (ta, tb) = (p.ticket(A), p.ticket(B));
        let epoch = p.pair_made(A, ta, B, tb);
        p.carry(A);
        p.take(A);
        p.take(B);
        p.peer(
            B,
            PeerMsg::Relay {
                epoch: epoch - 1,
                frame: b"old".to_vec().into(),
            },
        );
        p.peer(
            B,
            PeerMsg::PartnerLeft {
                epoch: epoch - 1,
                avoid: false,
            },
        );
        assert!(p.take(B).is_empty());
        assert_eq!(p.c[B].s.phase(), ChatPhase::Paired);
        // And the new pair carries messages.
        p.text(A, &msg("new"));
        p.carry(A);
        assert_eq!(p.take(B), [r#"{"type":"message","text":"new"}"#]);
    }

    #[test]
    fn partner_left_comes_after_every_line_sent_before_leaving() {
        let mut p = Pair::chatting(false);
        for i in 0..5 {
            p.text(A, &msg(&format!("{i}")));
        }
        p.leave_for_good(A);
        p.carry(A);
        let got = p.take(B);
        assert_eq!(got.len(), 6);
        assert_eq!(got.last().map(String::as_str), Some(LEFT));
    }

    // ----- cluster bookkeeping -------------------------------------------------------------

    #[test]
    fn next_in_a_cluster_stores_the_avoid_relation_before_telling_the_partner() {
        let mut p = Pair::chatting(true);
        p.text(A, r#"{"type":"next"}"#);
        assert_eq!(p.c[A].rec.cluster, ["avoid 1 2"]);
        p.carry(A);
        assert_eq!(p.take(B), [LEFT]);
        // B now avoids too; pairing with someone else on this node clears it...
        p.text(B, r#"{"type":"find"}"#);
        let tb = p.ticket(B);
        p.peer(
            B,
            PeerMsg::Paired {
                ticket: tb,
                partner: id(9),
                epoch: 50,
                common: vec![],
            },
        );
        assert_eq!(p.c[B].rec.cluster, ["clear 2"]);
        // ...while a pairing made by the cluster queue (which clears it itself) does not.
        p.text(A, r#"{"type":"find"}"#);
        let ta = p.ticket(A);
        p.peer(
            A,
            PeerMsg::Paired {
                ticket: ta,
                partner: ConnId {
                    node: 3,
                    shard: 0,
                    slot: 4,
                    gen: 1,
                },
                epoch: 51 | CLUSTER_EPOCH,
                common: vec![],
            },
        );
        assert_eq!(p.c[A].rec.cluster, ["avoid 1 2"]);
        // A partner on another node claimed A from the cluster queue: the matchmaker is told.
        assert!(p.requests(A).last().unwrap().starts_with("Claimed"));
    }

    #[test]
    fn leaving_for_good_clears_an_avoid_relation() {
        let mut p = Pair::chatting(true);
        p.text(A, r#"{"type":"find"}"#);
        p.leave_for_good(A);
        assert_eq!(p.c[A].rec.cluster, ["avoid 1 2", "clear 1"]);
        // Without cluster mode nothing is stored.
        let mut p = Pair::chatting(false);
        p.text(A, r#"{"type":"find"}"#);
        p.leave_for_good(A);
        assert!(p.c[A].rec.cluster.is_empty());
    }

    #[test]
    fn a_failed_node_ends_only_the_pairs_with_it() {
        let remote = ConnId {
            node: 2,
            shard: 0,
            slot: 4,
            gen: 1,
        };
        let mut p = Pair::new(true);
        p.text(A, r#"{"type":"find"}"#);
        let ta = p.ticket(A);
        p.peer(
            A,
            PeerMsg::Paired {
                ticket: ta,
                partner: remote,
                epoch: 7 | CLUSTER_EPOCH,
                common: vec![],
            },
        );
        p.take(A);
        let cx = p.cx(A);
        let c = &mut p.c[A];
        // Another node fails: nothing happens here.
        c.s.on_node_down(5, &cx, &mut c.rec);
        assert_eq!(c.s.phase(), ChatPhase::Paired);
        // The partner's node fails: this side is told, and that node too (it may be alive).
        c.s.on_node_down(2, &cx, &mut c.rec);
        assert_eq!(p.take(A), [LEFT]);
        assert_eq!(
            p.c[A].rec.out.back(),
            Some(&(
                remote,
                PeerMsg::PartnerLeft {
                    epoch: 7 | CLUSTER_EPOCH,
                    avoid: false
                }
            ))
        );
        assert!(p.c[A].rec.stats.contains(&Stat::ClusterPairLost));
    }

    #[test]
    fn time_to_match_is_counted_from_the_request() {
        let mut p = Pair::new(false);
        p.text(A, r#"{"type":"find"}"#);
        p.now_ms += 1234;
        p.text(B, r#"{"type":"find"}"#);
        let (ta, tb) = (p.ticket(A), p.ticket(B));
        p.pair_made(A, ta, B, tb);
        p.carry(A);
        assert!(p.c[A].rec.stats.contains(&Stat::MatchWait(1234)));
        assert!(p.c[B].rec.stats.contains(&Stat::MatchWait(0)));
    }
}
