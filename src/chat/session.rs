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
                self.end_pair(true, cx, sink);
                let ticket = self.requeue(cx, sink);
                sink.matcher(MatchReq::Find {
                    user: me,
                    ticket,
                    interests,
                });
            }
            ClientMsg::Next => match self.phase {
                ChatPhase::Waiting => sink.send(Reply::Waiting),
                ChatPhase::Idle | ChatPhase::Paired => {
                    self.end_pair(true, cx, sink);
                    let ticket = self.requeue(cx, sink);
                    sink.matcher(MatchReq::Next { user: me, ticket });
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
