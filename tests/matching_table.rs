//! One table of matching scenarios (`tests/matching/rules.json`, its "about" explains the
//! format), run against both matching engines, which must each give the table's outcome at
//! every step and agree with each other on who waits and who chats:
//!
//! - **rust**: `roulette::chat::matchmaker::Matchmaker`, driven directly, time being a fixed
//!   `Instant` plus the step's `t`.
//! - **redis**: the cluster queue: the Lua scripts exactly as the bridge loads them
//!   (`cluster::bridge::*_LUA`, `SCRIPT LOAD` + `EVALSHA`) in a real `redis-server` (loopback,
//!   free port, persistence off), called as the matchhost and the shards call them.
//!
//! How a step maps onto each engine (the redis column is what a user's shard and matchhost
//! send through the bridge; every user lives on a node of its own, heartbeating with a key
//! `rl:node:<id>` and a member of `rl:nodes`, so every user goes to the cluster queue at once
//! and nothing pairs locally):
//!
//! | step | rust | redis |
//! |---|---|---|
//! | `find U tags` | `find(U, ticket, tags, P, t)` (P: the partner U chats with, if any) | if chatting with P: `avoid set U P`; if waiting: `withdraw U`; then `pair q U NODE ticket OPEN TAGS` (OPEN: no tags, or no interest wait) |
//! | `next U` | `next(U, ticket, P, t)` | waiting: nothing; chatting with P: `avoid set U P`; then `pair q` with U's last tags |
//! | `leave U` | `leave(U)` | waiting: `withdraw U`; chatting: the pair ends (no script) |
//! | `gone U` | `remove(U)` | waiting: `withdraw U`; `avoid clear U` if a `next`/`find` ever made U avoid someone and U has not paired since |
//! | `crash U` | `remove(U)` | `DEL rl:node:<U's node>` (its heartbeat expired); at the scenario's end `purge NODE`, as the next heartbeat scan does |
//! | `tick` | `expire(t)` | `pair o U NODE ticket 1 []` for every waiting user whose interest wait (from its `q`) is due, by deadline then queue order |
//!
//! Queue order is the order of the calls; a `t` matters only for interest waits, which the
//! redis adapter keeps, as the matchhost does (its `open_timers`). Neither engine keeps who
//! chats with whom: each adapter does, from the pairings its engine made, as the shards'
//! chat sessions do.
//!
//! Besides the outcome, the redis side's keys are audited after every step (each queue entry
//! belongs to a waiting user with its current ticket and is in each of its indexes, nothing
//! is indexed without an entry, avoid relations are symmetric and name no disconnected user),
//! and after `purge` no entry of a dead node may remain.
//!
//! Not expressible here: avoid relations in Redis expire after an hour (`avoid.lua`), the Rust
//! ones only end by pairing or disconnecting. Run with `LC_ALL=<a real locale>` to check that
//! nothing depends on the collation of the server running the scripts.
mod util;

use roulette::chat::matchmaker::{Matchmaker, Pairing, Status};
use roulette::cluster::bridge::{AVOID_LUA, PAIR_LUA, PURGE_LUA, WITHDRAW_LUA};
use roulette::cluster::{parse_uid, uid};
use roulette::xshard::ConnId;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

const TABLE_PATH: &str = "tests/matching/rules.json";
const TABLE: &str = include_str!("matching/rules.json");

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Action {
    Find(String, Vec<String>),
    Next(String),
    Leave(String),
    Gone(String),
    Crash(String),
    Tick,
}

impl Action {
    fn actor(&self) -> Option<&str> {
        match self {
            Action::Find(u, _)
            | Action::Next(u)
            | Action::Leave(u)
            | Action::Gone(u)
            | Action::Crash(u) => Some(u),
            Action::Tick => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Find(u, tags) => write!(f, "find {u} {}", json_list(tags)),
            Action::Next(u) => write!(f, "next {u}"),
            Action::Leave(u) => write!(f, "leave {u}"),
            Action::Gone(u) => write!(f, "gone {u}"),
            Action::Crash(u) => write!(f, "crash {u}"),
            Action::Tick => write!(f, "tick"),
        }
    }
}

/// One pair made by a step: `a` asked (or its interest wait passed), `b` was waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    a: String,
    b: String,
    common: Vec<String>,
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{} {}", self.a, self.b, json_list(&self.common))
    }
}

#[derive(Debug, Clone)]
enum Then {
    Queued,
    Idle,
    Nothing,
    Pairs(Vec<Pair>),
}

#[derive(Debug, Clone)]
struct Step {
    t: u64,
    action: Action,
    then: Then,
    queue: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    wait_ms: u64,
    steps: Vec<Step>,
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Parse the table; a malformed one is a test failure that says where.
fn load_table() -> Vec<Scenario> {
    let root: Value = serde_json::from_str(TABLE)
        .unwrap_or_else(|e| panic!("{TABLE_PATH} is not valid JSON: {e}"));
    let default_wait = root["interest_wait_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{TABLE_PATH}: interest_wait_ms missing"));
    let list = root["scenarios"]
        .as_array()
        .unwrap_or_else(|| panic!("{TABLE_PATH}: scenarios missing"));
    let mut names = HashSet::new();
    list.iter()
        .enumerate()
        .map(|(i, sc)| {
            let name = sc["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{TABLE_PATH}: scenario {} has no name", i + 1))
                .to_string();
            assert!(
                names.insert(name.clone()),
                "{TABLE_PATH}: two scenarios named {name:?}"
            );
            let here = |what: &str| format!("{TABLE_PATH}: scenario {:?}: {what}", name);
            only_keys(sc, &["name", "interest_wait_ms", "steps"], &here(""));
            let wait_ms = match sc.get("interest_wait_ms") {
                None => default_wait,
                Some(v) => v
                    .as_u64()
                    .unwrap_or_else(|| panic!("{}", here("bad interest_wait_ms"))),
            };
            let raw = sc["steps"]
                .as_array()
                .unwrap_or_else(|| panic!("{}", here("no steps")));
            let mut last_t = 0;
            let steps = raw
                .iter()
                .enumerate()
                .map(|(j, st)| {
                    let at = here(&format!("step {}", j + 1));
                    let step = parse_step(st, &at);
                    assert!(step.t >= last_t, "{at}: t goes backwards");
                    last_t = step.t;
                    step
                })
                .collect();
            Scenario {
                name,
                wait_ms,
                steps,
            }
        })
        .collect()
}

fn only_keys(v: &Value, allowed: &[&str], at: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{at}: not an object"));
    for k in obj.keys() {
        assert!(allowed.contains(&k.as_str()), "{at}: unknown key {k:?}");
    }
}

fn parse_step(st: &Value, at: &str) -> Step {
    only_keys(
        st,
        &[
            "t", "find", "tags", "next", "leave", "gone", "crash", "tick", "then", "common",
            "queue",
        ],
        at,
    );
    let t = st["t"]
        .as_u64()
        .unwrap_or_else(|| panic!("{at}: t missing"));
    let user = |key: &str| -> Option<String> {
        let u = st.get(key)?.as_str();
        let u = u.unwrap_or_else(|| panic!("{at}: {key} takes a user name"));
        assert!(
            !u.is_empty() && u.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{at}: user names are letters and digits: {u:?}"
        );
        Some(u.to_string())
    };
    let mut actions = Vec::new();
    if let Some(u) = user("find") {
        let tags = match st.get("tags") {
            None => Vec::new(),
            Some(v) => strings(v, &format!("{at}: tags")),
        };
        check_normalised(&tags, at);
        actions.push(Action::Find(u, tags));
    } else {
        assert!(st.get("tags").is_none(), "{at}: tags without find");
    }
    actions.extend(user("next").map(Action::Next));
    actions.extend(user("leave").map(Action::Leave));
    actions.extend(user("gone").map(Action::Gone));
    actions.extend(user("crash").map(Action::Crash));
    if let Some(v) = st.get("tick") {
        assert_eq!(v, &Value::Bool(true), "{at}: tick takes true");
        actions.push(Action::Tick);
    }
    assert_eq!(actions.len(), 1, "{at}: exactly one action per step");
    let action = actions.remove(0);
    let then = match &st["then"] {
        Value::String(s) if s == "queued" || s == "idle" => {
            assert!(action.actor().is_some(), "{at}: {s} needs an actor");
            assert!(st.get("common").is_none(), "{at}: common without a pair");
            if s == "queued" {
                Then::Queued
            } else {
                Then::Idle
            }
        }
        Value::String(s) if s == "-" => {
            assert!(st.get("common").is_none(), "{at}: common without a pair");
            Then::Nothing
        }
        Value::String(s) => {
            let common = match st.get("common") {
                None => Vec::new(),
                Some(v) => strings(v, &format!("{at}: common")),
            };
            Then::Pairs(vec![parse_pair(s, common, at)])
        }
        Value::Array(list) => {
            assert!(
                st.get("common").is_none(),
                "{at}: common goes inside each pair"
            );
            Then::Pairs(
                list.iter()
                    .map(|p| {
                        only_keys(p, &["pair", "common"], at);
                        let s = p["pair"]
                            .as_str()
                            .unwrap_or_else(|| panic!("{at}: pair missing"));
                        parse_pair(s, strings(&p["common"], &format!("{at}: common")), at)
                    })
                    .collect(),
            )
        }
        other => panic!("{at}: then must be queued, idle, -, X+Y or a list, not {other}"),
    };
    let queue = st.get("queue").map(|v| strings(v, &format!("{at}: queue")));
    Step {
        t,
        action,
        then,
        queue,
    }
}

fn parse_pair(s: &str, common: Vec<String>, at: &str) -> Pair {
    let (a, b) = s
        .split_once('+')
        .unwrap_or_else(|| panic!("{at}: a pair is written A+B, not {s:?}"));
    assert!(
        !a.is_empty() && !b.is_empty() && a != b,
        "{at}: bad pair {s:?}"
    );
    Pair {
        a: a.to_string(),
        b: b.to_string(),
        common,
    }
}

fn strings(v: &Value, at: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{at}: not a list"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{at}: not a string: {s}"))
                .to_string()
        })
        .collect()
}

/// The engines only ever see interests as the protocol parser leaves them.
fn check_normalised(tags: &[String], at: &str) {
    assert!(tags.len() <= 8, "{at}: more than 8 interests");
    for (i, t) in tags.iter().enumerate() {
        let n = t.chars().count();
        assert!(
            t.trim() == t && t.to_lowercase() == *t && (1..=32).contains(&n),
            "{at}: interest {t:?} is not normalised (trimmed, lower-case, 1..=32 characters)"
        );
        assert!(!tags[..i].contains(t), "{at}: duplicate interest {t:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// What an engine shows after a step
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Seen {
    /// Pairs this step made, in the order they were made.
    pairs: Vec<Pair>,
    /// Everyone waiting, longest-waiting first.
    queue: Vec<String>,
    /// Everyone chatting, as "A-B" (names in order), sorted.
    chats: Vec<String>,
    /// Inconsistencies inside the engine (wrong tickets, leaked keys, script errors).
    problems: Vec<String>,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pairs.is_empty() {
            write!(f, "no pair")?;
        } else {
            let p: Vec<String> = self.pairs.iter().map(Pair::to_string).collect();
            write!(f, "{}", p.join(", "))?;
        }
        write!(
            f,
            "; queue [{}]; chatting [{}]",
            self.queue.join(" "),
            self.chats.join(" ")
        )?;
        for p in &self.problems {
            write!(f, "\n             ! {p}")?;
        }
        Ok(())
    }
}

/// How `seen` differs from what the table expects of `step` (empty: it matches).
fn mismatches(step: &Step, seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    let want_pairs: &[Pair] = match &step.then {
        Then::Pairs(p) => p,
        _ => &[],
    };
    if seen.pairs != want_pairs {
        out.push("pairs".to_string());
    }
    let actor = step.action.actor().unwrap_or_default();
    let waits = seen.queue.iter().any(|q| q == actor);
    let chats = seen.chats.iter().any(|c| c.split('-').any(|n| n == actor));
    match step.then {
        Then::Queued if !waits => out.push(format!("{actor} is not waiting")),
        Then::Idle if waits || chats => out.push(format!("{actor} is not idle")),
        _ => {}
    }
    if let Some(q) = &step.queue {
        if *q != seen.queue {
            out.push("queue".to_string());
        }
    }
    if !seen.problems.is_empty() {
        out.push("engine state".to_string());
    }
    out
}

fn describe_then(step: &Step) -> String {
    let mut s = match &step.then {
        Then::Queued => format!("no pair, {} waits", step.action.actor().unwrap_or("?")),
        Then::Idle => format!("no pair, {} idle", step.action.actor().unwrap_or("?")),
        Then::Nothing => "no pair".to_string(),
        Then::Pairs(p) => p.iter().map(Pair::to_string).collect::<Vec<_>>().join(", "),
    };
    if let Some(q) = &step.queue {
        s.push_str(&format!("; queue [{}]", q.join(" ")));
    }
    s
}

trait Engine {
    /// Start a scenario from nothing.
    fn reset(&mut self, wait_ms: u64);
    /// An interest wait that is due at `t` and has not passed yet (the table needs a tick).
    fn due(&self, t: u64) -> Option<String>;
    fn run(&mut self, step: &Step) -> Seen;
    /// Checks after the last step.
    fn finish(&mut self) -> Vec<String>;
}

// ---------------------------------------------------------------------------------------------
// rust: the matchmaker itself
// ---------------------------------------------------------------------------------------------

struct RustEngine {
    mm: Matchmaker<u32>,
    base: Instant,
    ids: HashMap<String, u32>,
    names: Vec<String>,
    /// The ticket of each user's latest queueing.
    tickets: HashMap<u32, u32>,
    next_ticket: u32,
    /// Who chats with whom (both ways), as the users' chat sessions know it: the matchmaker
    /// does not keep pairs.
    partner: HashMap<u32, u32>,
}

impl RustEngine {
    fn new() -> Self {
        RustEngine {
            mm: Matchmaker::new(Duration::ZERO),
            base: Instant::now(),
            ids: HashMap::new(),
            names: Vec::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
            partner: HashMap::new(),
        }
    }

    /// `k`'s chat ends (if it is in one); returns the partner.
    fn end_chat(&mut self, k: u32) -> Option<u32> {
        let p = self.partner.remove(&k)?;
        self.partner.remove(&p);
        Some(p)
    }

    fn id(&mut self, name: &str) -> u32 {
        if let Some(&k) = self.ids.get(name) {
            return k;
        }
        let k = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), k);
        k
    }

    fn name(&self, k: u32) -> String {
        self.names
            .get(k as usize)
            .cloned()
            .unwrap_or_else(|| format!("?{k}"))
    }

    fn ticket(&mut self) -> u32 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn convert(&self, p: Pairing<u32>, problems: &mut Vec<String>) -> Pair {
        for (k, t) in [(p.a, p.a_ticket), (p.b, p.b_ticket)] {
            if self.tickets.get(&k) != Some(&t) {
                problems.push(format!(
                    "pairing names {} with ticket {t}, not its current {:?}",
                    self.name(k),
                    self.tickets.get(&k)
                ));
            }
        }
        Pair {
            a: self.name(p.a),
            b: self.name(p.b),
            common: p.common,
        }
    }
}

impl Engine for RustEngine {
    fn reset(&mut self, wait_ms: u64) {
        *self = RustEngine::new();
        self.mm = Matchmaker::new(Duration::from_millis(wait_ms));
    }

    fn due(&self, t: u64) -> Option<String> {
        let d = self.mm.next_deadline()?;
        (d <= self.base + Duration::from_millis(t)).then(|| {
            format!(
                "an interest wait is due at t={} ms",
                d.duration_since(self.base).as_millis()
            )
        })
    }

    fn run(&mut self, step: &Step) -> Seen {
        let now = self.base + Duration::from_millis(step.t);
        let mut seen = Seen::default();
        let made: Vec<Pairing<u32>> = match &step.action {
            Action::Find(u, tags) => {
                let k = self.id(u);
                let t = self.ticket();
                self.tickets.insert(k, t);
                let ended = self.end_chat(k);
                self.mm
                    .find(k, t, tags.clone(), ended, now)
                    .into_iter()
                    .collect()
            }
            Action::Next(u) => {
                let k = self.id(u);
                let t = self.ticket();
                // A waiting user's `next` must change nothing, its ticket included.
                if !matches!(self.mm.status(k), Status::Waiting { .. }) {
                    self.tickets.insert(k, t);
                }
                let ended = self.end_chat(k);
                self.mm.next(k, t, ended, now).into_iter().collect()
            }
            Action::Leave(u) => {
                let k = self.id(u);
                self.end_chat(k);
                self.mm.leave(k);
                Vec::new()
            }
            Action::Gone(u) | Action::Crash(u) => {
                let k = self.id(u);
                self.end_chat(k);
                self.mm.remove(k);
                self.tickets.remove(&k);
                Vec::new()
            }
            Action::Tick => self.mm.expire(now),
        };
        for p in &made {
            for k in [p.a, p.b] {
                if let Some(&q) = self.partner.get(&k) {
                    seen.problems.push(format!(
                        "pairing names {}, which chats with {}",
                        self.name(k),
                        self.name(q)
                    ));
                }
            }
            self.partner.insert(p.a, p.b);
            self.partner.insert(p.b, p.a);
        }
        seen.pairs = made
            .into_iter()
            .map(|p| self.convert(p, &mut seen.problems))
            .collect();
        seen.queue = self
            .mm
            .waiting_users()
            .into_iter()
            .map(|k| self.name(k))
            .collect();
        let mut chats = BTreeSet::new();
        for (&k, &partner) in &self.partner {
            if matches!(self.mm.status(k), Status::Waiting { .. }) {
                seen.problems.push(format!(
                    "{} chats with {} but waits",
                    self.name(k),
                    self.name(partner)
                ));
            }
            let (x, y) = (self.name(k), self.name(partner));
            chats.insert(if x < y {
                format!("{x}-{y}")
            } else {
                format!("{y}-{x}")
            });
        }
        seen.chats = chats.into_iter().collect();
        seen
    }

    fn finish(&mut self) -> Vec<String> {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------------------------
// redis: the cluster queue's scripts, called as the matchhost and the shards call them
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum CState {
    Idle,
    Waiting { ticket: u32, open: bool },
    Chatting(String),
}

struct CUser {
    node: String,
    uid: String,
    /// The interests of the last `find` (the matchhost reads them from its matchmaker).
    tags: Vec<String>,
    state: CState,
    /// The shard's AVOIDS flag: a `next`/`find` made this user avoid someone, and it has
    /// not paired since.
    avoids: bool,
}

struct Shas {
    pair: String,
    withdraw: String,
    avoid: String,
    purge: String,
}

struct RedisEngine {
    con: redis::Connection,
    shas: Shas,
    wait_ms: u64,
    users: BTreeMap<String, CUser>,
    /// Every uid handed out in this scenario, current or not, for reading replies.
    names_by_uid: HashMap<String, String>,
    /// Interest waits: (deadline, queue order) → (user, ticket), like the matchhost's timers.
    timers: BTreeMap<(u64, u64), (String, u32)>,
    order: u64,
    connections: u32,
    next_ticket: u32,
    last_epoch: u64,
    /// Connections that disconnected (their avoid relations must be gone).
    departed: HashSet<String>,
    /// Nodes whose heartbeat expired, purged at the end.
    dead_nodes: Vec<String>,
}

type Problems = Vec<String>;

impl RedisEngine {
    fn new(url: &str) -> Self {
        let client = redis::Client::open(url).expect("redis URL");
        let mut con = client.get_connection().expect("connect to the test redis");
        let mut load = |src: &str| -> String {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(src)
                .query(&mut con)
                .unwrap_or_else(|e| panic!("SCRIPT LOAD failed: {e}"))
        };
        let shas = Shas {
            pair: load(PAIR_LUA),
            withdraw: load(WITHDRAW_LUA),
            avoid: load(AVOID_LUA),
            purge: load(PURGE_LUA),
        };
        RedisEngine {
            con,
            shas,
            wait_ms: 0,
            users: BTreeMap::new(),
            names_by_uid: HashMap::new(),
            timers: BTreeMap::new(),
            order: 0,
            connections: 0,
            next_ticket: 0,
            last_epoch: 0,
            departed: HashSet::new(),
            dead_nodes: Vec::new(),
        }
    }

    fn q<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd, pr: &mut Problems) -> Option<T> {
        match cmd.query(&mut self.con) {
            Ok(v) => Some(v),
            Err(e) => {
                pr.push(format!("redis error: {e}"));
                None
            }
        }
    }

    /// A connection for `name` on a node of its own (a new one after `gone`/`crash`).
    fn user(&mut self, name: &str, pr: &mut Problems) -> &mut CUser {
        if !self.users.contains_key(name) {
            self.connections += 1;
            let node = format!("n{name}~{:08x}", self.connections);
            let uid = uid(&node, ConnId::local(0, self.connections, 1));
            // The bridge's heartbeat: a key with a TTL, and membership of rl:nodes.
            let beat = redis::cmd("SET")
                .arg(format!("rl:node:{node}"))
                .arg(1)
                .arg("PX")
                .arg(600_000)
                .clone();
            self.q::<()>(&beat, pr);
            self.q::<()>(redis::cmd("SADD").arg("rl:nodes").arg(&node), pr);
            self.names_by_uid.insert(uid.clone(), name.to_string());
            self.users.insert(
                name.to_string(),
                CUser {
                    node,
                    uid,
                    tags: Vec::new(),
                    state: CState::Idle,
                    avoids: false,
                },
            );
        }
        self.users.get_mut(name).expect("just inserted")
    }

    fn uid_of(&self, name: &str) -> String {
        self.users
            .get(name)
            .map(|u| u.uid.clone())
            .unwrap_or_default()
    }

    fn state(&self, name: &str) -> CState {
        self.users
            .get(name)
            .map_or(CState::Idle, |u| u.state.clone())
    }

    fn set_state(&mut self, name: &str, s: CState) {
        if let Some(u) = self.users.get_mut(name) {
            u.state = s;
        }
    }

    /// A chat ended by `next`/`find` of `me`: the shard stores the relation before anything.
    fn end_chat_avoiding(&mut self, me: &str, partner: &str, pr: &mut Problems) {
        let (a, b) = (self.uid_of(me), self.uid_of(partner));
        let c = redis::cmd("EVALSHA")
            .arg(&self.shas.avoid)
            .arg(0)
            .arg("set")
            .arg(a)
            .arg(b)
            .clone();
        self.q::<i64>(&c, pr);
        for n in [me, partner] {
            if let Some(u) = self.users.get_mut(n) {
                u.avoids = true;
                u.state = CState::Idle;
            }
        }
    }

    fn withdraw(&mut self, name: &str, pr: &mut Problems) {
        let c = redis::cmd("EVALSHA")
            .arg(&self.shas.withdraw)
            .arg(0)
            .arg(self.uid_of(name))
            .clone();
        if let Some(n) = self.q::<i64>(&c, pr) {
            if n != 1 {
                pr.push(format!("withdraw {name} found no queue entry"));
            }
        }
        self.set_state(name, CState::Idle);
    }

    /// The matchhost hands `name` to the cluster queue with its last interests.
    fn enqueue(&mut self, name: &str, t: u64, pr: &mut Problems) -> Vec<Pair> {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let (uid, node, tags) = {
            let u = self.user(name, pr);
            (u.uid.clone(), u.node.clone(), u.tags.clone())
        };
        let open = tags.is_empty() || self.wait_ms == 0;
        let c = redis::cmd("EVALSHA")
            .arg(&self.shas.pair)
            .arg(0)
            .arg("q")
            .arg(uid)
            .arg(node)
            .arg(ticket)
            .arg(if open { "1" } else { "0" })
            .arg(serde_json::to_string(&tags).unwrap_or_default())
            .clone();
        let reply = self.q::<Vec<String>>(&c, pr).unwrap_or_default();
        match self.on_reply(name, &reply, pr) {
            Some(p) => vec![p],
            None => {
                self.set_state(name, CState::Waiting { ticket, open });
                if !open {
                    self.order += 1;
                    self.timers
                        .insert((t + self.wait_ms, self.order), (name.to_string(), ticket));
                }
                Vec::new()
            }
        }
    }

    /// A pairing script's reply for `name`: the pair it made, if any.
    fn on_reply(&mut self, name: &str, reply: &[String], pr: &mut Problems) -> Option<Pair> {
        match reply.first().map(String::as_str) {
            Some("queued") if reply.len() == 1 => return None,
            Some("paired") if reply.len() == 5 => {}
            _ => {
                pr.push(format!("pairing script for {name} replied {reply:?}"));
                return None;
            }
        }
        let (puid, pticket, epoch, common) = (&reply[1], &reply[2], &reply[3], &reply[4]);
        if parse_uid(puid).is_none() {
            pr.push(format!("partner uid {puid:?} does not parse"));
        }
        let partner = match self.names_by_uid.get(puid) {
            Some(n) if self.uid_of(n) == *puid => n.clone(),
            Some(n) => format!("{n}(old connection)"),
            None => format!("?{puid}"),
        };
        match self.state(&partner) {
            CState::Waiting { ticket, .. } if ticket.to_string() == *pticket => {}
            other => pr.push(format!(
                "paired with {partner} (ticket {pticket}), which is {other:?}"
            )),
        }
        match epoch.parse::<u64>() {
            Ok(e) if e > self.last_epoch => self.last_epoch = e,
            _ => pr.push(format!("epoch {epoch:?} is not new")),
        }
        let common: Vec<String> = serde_json::from_str(common).unwrap_or_else(|e| {
            pr.push(format!("common {common:?} is not a JSON list: {e}"));
            Vec::new()
        });
        for (me, other) in [(name, partner.as_str()), (partner.as_str(), name)] {
            if let Some(u) = self.users.get_mut(me) {
                u.state = CState::Chatting(other.to_string());
                // A pair made by the script ends both avoid relations there.
                u.avoids = false;
            }
        }
        Some(Pair {
            a: name.to_string(),
            b: partner,
            common,
        })
    }

    fn open_up(&mut self, t: u64, pr: &mut Problems) -> Vec<Pair> {
        let mut made = Vec::new();
        while let Some((&(at, order), (name, ticket))) = self.timers.first_key_value() {
            if at > t {
                break;
            }
            let (name, ticket) = (name.clone(), *ticket);
            self.timers.remove(&(at, order));
            if self.state(&name)
                != (CState::Waiting {
                    ticket,
                    open: false,
                })
            {
                continue;
            }
            let (uid, node) = match self.users.get(&name) {
                Some(u) => (u.uid.clone(), u.node.clone()),
                None => continue,
            };
            let c = redis::cmd("EVALSHA")
                .arg(&self.shas.pair)
                .arg(0)
                .arg("o")
                .arg(uid)
                .arg(node)
                .arg(ticket)
                .arg("1")
                .arg("[]")
                .clone();
            let reply = self.q::<Vec<String>>(&c, pr).unwrap_or_default();
            match self.on_reply(&name, &reply, pr) {
                Some(p) => made.push(p),
                None => self.set_state(&name, CState::Waiting { ticket, open: true }),
            }
        }
        made
    }

    /// The user's connection ends (`crash`: with its node, which can say nothing).
    fn drop_user(&mut self, name: &str, crash: bool, pr: &mut Problems) {
        let Some(u) = self.users.get(name) else {
            return;
        };
        let (uid, node, state, avoids) = (u.uid.clone(), u.node.clone(), u.state.clone(), u.avoids);
        if let CState::Chatting(p) = &state {
            // Its partner's shard ends the pair (partner_left, no avoid relation).
            self.set_state(p, CState::Idle);
        }
        if crash {
            self.q::<()>(redis::cmd("DEL").arg(format!("rl:node:{node}")), pr);
            self.dead_nodes.push(node);
        } else {
            if matches!(state, CState::Waiting { .. }) {
                self.withdraw(name, pr);
            }
            if avoids {
                let c = redis::cmd("EVALSHA")
                    .arg(&self.shas.avoid)
                    .arg(0)
                    .arg("clear")
                    .arg(&uid)
                    .clone();
                self.q::<i64>(&c, pr);
            }
            self.departed.insert(uid);
        }
        self.users.remove(name);
    }

    fn name_of(&self, uid: &str) -> String {
        match self.names_by_uid.get(uid) {
            Some(n) if self.uid_of(n) == uid => n.clone(),
            Some(n) => format!("{n}(old connection)"),
            None => format!("?{uid}"),
        }
    }

    /// Read the queue from Redis and check that its keys say what the users' states say.
    fn audit(&mut self, pr: &mut Problems) -> Vec<String> {
        let mut queue: Vec<(u64, String)> = Vec::new();
        let mut entries: HashMap<String, HashMap<String, String>> = HashMap::new();
        let keys: Vec<String> = self
            .q(redis::cmd("KEYS").arg("rl:e:*"), pr)
            .unwrap_or_default();
        for key in keys {
            let e = key.trim_start_matches("rl:e:").to_string();
            let h: HashMap<String, String> = self
                .q(redis::cmd("HGETALL").arg(&key), pr)
                .unwrap_or_default();
            entries.insert(e, h);
        }
        for (e, h) in &entries {
            let who = self.name_of(e);
            let field = |f: &str| h.get(f).cloned().unwrap_or_default();
            let (node, seq) = (field("node"), field("seq"));
            let seq_n: u64 = seq.parse().unwrap_or_else(|_| {
                pr.push(format!("entry of {who} has seq {seq:?}"));
                0
            });
            let tags: Vec<String> = serde_json::from_str(&field("tags")).unwrap_or_else(|_| {
                pr.push(format!("entry of {who} has tags {:?}", field("tags")));
                Vec::new()
            });
            let live: bool = self
                .q(redis::cmd("EXISTS").arg(format!("rl:node:{node}")), pr)
                .unwrap_or(false);
            if !live {
                // A dead node's entries wait for the purge; the scripts must skip them.
                continue;
            }
            queue.push((seq_n, who.clone()));
            let user = self
                .users
                .get(&who)
                .map(|u| (u.state.clone(), u.node.clone(), u.tags.clone()));
            match user.as_ref().map(|u| &u.0) {
                Some(CState::Waiting { ticket, open }) => {
                    if field("ticket") != ticket.to_string() {
                        pr.push(format!(
                            "entry of {who} has ticket {}, not {ticket}",
                            field("ticket")
                        ));
                    }
                    let in_open: Option<f64> = self
                        .q(redis::cmd("ZSCORE").arg("rl:open").arg(e), pr)
                        .unwrap_or(None);
                    if *open != (in_open == Some(seq_n as f64)) {
                        pr.push(format!(
                            "{who} is {}open but rl:open has {in_open:?}",
                            if *open { "" } else { "not " }
                        ));
                    }
                }
                other => pr.push(format!("queue entry for {who}, who is {other:?}")),
            }
            if let Some((_, unode, utags)) = &user {
                if *unode != node || tags != *utags {
                    pr.push(format!(
                        "entry of {who} says node {node} tags {tags:?}, not {unode} {utags:?}"
                    ));
                }
            }
            for t in &tags {
                let s: Option<f64> = self
                    .q(redis::cmd("ZSCORE").arg(format!("rl:t:{t}")).arg(e), pr)
                    .unwrap_or(None);
                if s != Some(seq_n as f64) {
                    pr.push(format!("{who} is missing from rl:t:{t} (score {s:?})"));
                }
            }
            let member: bool = self
                .q(
                    redis::cmd("SISMEMBER").arg(format!("rl:ne:{node}")).arg(e),
                    pr,
                )
                .unwrap_or(false);
            if !member {
                pr.push(format!("{who} is missing from rl:ne:{node}"));
            }
        }
        for (name, u) in &self.users {
            if matches!(u.state, CState::Waiting { .. }) && !entries.contains_key(&u.uid) {
                pr.push(format!("{name} waits but has no queue entry"));
            }
        }
        // Nothing indexed without its entry.
        let mut zsets: Vec<String> = self
            .q(redis::cmd("KEYS").arg("rl:t:*"), pr)
            .unwrap_or_default();
        zsets.push("rl:open".to_string());
        for z in zsets {
            let flat: Vec<String> = self
                .q(redis::cmd("ZRANGE").arg(&z).arg(0).arg(-1), pr)
                .unwrap_or_default();
            for m in flat {
                if !entries.contains_key(&m) {
                    pr.push(format!("{z} still holds {}", self.name_of(&m)));
                }
            }
        }
        let sets: Vec<String> = self
            .q(redis::cmd("KEYS").arg("rl:ne:*"), pr)
            .unwrap_or_default();
        for s in sets {
            let members: Vec<String> = self
                .q(redis::cmd("SMEMBERS").arg(&s), pr)
                .unwrap_or_default();
            for m in members {
                if !entries.contains_key(&m) {
                    pr.push(format!("{s} still holds {}", self.name_of(&m)));
                }
            }
        }
        // Avoid relations: both ways, and never with a connection that is gone.
        let avoids: Vec<String> = self
            .q(redis::cmd("KEYS").arg("rl:avoid:*"), pr)
            .unwrap_or_default();
        for k in avoids {
            let x = k.trim_start_matches("rl:avoid:").to_string();
            let y: Option<String> = self.q(redis::cmd("GET").arg(&k), pr).unwrap_or(None);
            let Some(y) = y else { continue };
            let back: Option<String> = self
                .q(redis::cmd("GET").arg(format!("rl:avoid:{y}")), pr)
                .unwrap_or(None);
            if back.as_deref() != Some(x.as_str()) {
                pr.push(format!(
                    "{} avoids {}, but not the other way round",
                    self.name_of(&x),
                    self.name_of(&y)
                ));
            }
            if self.departed.contains(&x) || self.departed.contains(&y) {
                pr.push(format!(
                    "{} still avoids {} after a disconnect",
                    self.name_of(&x),
                    self.name_of(&y)
                ));
            }
        }
        queue.sort();
        queue.into_iter().map(|(_, n)| n).collect()
    }
}

impl Engine for RedisEngine {
    fn reset(&mut self, wait_ms: u64) {
        let mut pr = Vec::new();
        self.q::<()>(&redis::cmd("FLUSHALL"), &mut pr);
        assert!(pr.is_empty(), "FLUSHALL failed: {pr:?}");
        self.wait_ms = wait_ms;
        self.users.clear();
        self.names_by_uid.clear();
        self.timers.clear();
        self.departed.clear();
        self.dead_nodes.clear();
        self.last_epoch = 0;
    }

    fn due(&self, t: u64) -> Option<String> {
        self.timers
            .iter()
            .find(|((at, _), (name, ticket))| {
                *at <= t
                    && self.state(name)
                        == (CState::Waiting {
                            ticket: *ticket,
                            open: false,
                        })
            })
            .map(|((at, _), (name, _))| format!("the interest wait of {name} is due at t={at} ms"))
    }

    fn run(&mut self, step: &Step) -> Seen {
        let mut pr = Vec::new();
        let pairs = match &step.action {
            Action::Find(u, tags) => {
                self.user(u, &mut pr);
                match self.state(u) {
                    CState::Chatting(p) => self.end_chat_avoiding(u, &p, &mut pr),
                    CState::Waiting { .. } => self.withdraw(u, &mut pr),
                    CState::Idle => {}
                }
                self.user(u, &mut pr).tags = tags.clone();
                self.enqueue(u, step.t, &mut pr)
            }
            Action::Next(u) => {
                self.user(u, &mut pr);
                match self.state(u) {
                    // The shard answers `waiting` itself.
                    CState::Waiting { .. } => Vec::new(),
                    CState::Chatting(p) => {
                        self.end_chat_avoiding(u, &p, &mut pr);
                        self.enqueue(u, step.t, &mut pr)
                    }
                    CState::Idle => self.enqueue(u, step.t, &mut pr),
                }
            }
            Action::Leave(u) => {
                match self.state(u) {
                    CState::Waiting { .. } => self.withdraw(u, &mut pr),
                    CState::Chatting(p) => {
                        self.set_state(&p, CState::Idle);
                        self.set_state(u, CState::Idle);
                    }
                    CState::Idle => {}
                }
                Vec::new()
            }
            Action::Gone(u) => {
                self.drop_user(u, false, &mut pr);
                Vec::new()
            }
            Action::Crash(u) => {
                self.drop_user(u, true, &mut pr);
                Vec::new()
            }
            Action::Tick => self.open_up(step.t, &mut pr),
        };
        let queue = self.audit(&mut pr);
        let mut chats = BTreeSet::new();
        for (name, u) in &self.users {
            if let CState::Chatting(p) = &u.state {
                chats.insert(if name < p {
                    format!("{name}-{p}")
                } else {
                    format!("{p}-{name}")
                });
            }
        }
        Seen {
            pairs,
            queue,
            chats: chats.into_iter().collect(),
            problems: pr,
        }
    }

    fn finish(&mut self) -> Vec<String> {
        let mut pr = Vec::new();
        // The next heartbeat scan purges what dead nodes left behind.
        for node in self.dead_nodes.clone() {
            let c = redis::cmd("EVALSHA")
                .arg(&self.shas.purge)
                .arg(0)
                .arg(&node)
                .clone();
            self.q::<i64>(&c, &mut pr);
            let listed: bool = self
                .q(redis::cmd("SISMEMBER").arg("rl:nodes").arg(&node), &mut pr)
                .unwrap_or(false);
            if listed {
                pr.push(format!("purge {node} left it in rl:nodes"));
            }
        }
        let keys: Vec<String> = self
            .q(redis::cmd("KEYS").arg("rl:e:*"), &mut pr)
            .unwrap_or_default();
        for k in keys {
            let node: Option<String> = self
                .q(redis::cmd("HGET").arg(&k).arg("node"), &mut pr)
                .unwrap_or(None);
            if node.is_some_and(|n| self.dead_nodes.contains(&n)) {
                pr.push(format!("after purge, {k} of a dead node remains"));
            }
        }
        self.audit(&mut pr);
        pr
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn both_engines_follow_the_matching_table() {
    let _w = util::watchdog(120);
    let scenarios = load_table();
    let redis_server = util::Redis::start();
    let mut rust = RustEngine::new();
    let mut cluster = RedisEngine::new(&redis_server.url());
    let mut failures = Vec::new();
    let mut steps = 0;
    for (i, sc) in scenarios.iter().enumerate() {
        rust.reset(sc.wait_ms);
        cluster.reset(sc.wait_ms);
        let title = format!("scenario {} {:?}", i + 1, sc.name);
        let mut failed = false;
        for (j, step) in sc.steps.iter().enumerate() {
            steps += 1;
            let at = format!("{title}, step {} (t={} ms: {})", j + 1, step.t, step.action);
            if !matches!(step.action, Action::Tick) {
                let due = [rust.due(step.t), cluster.due(step.t)];
                if let Some(d) = due.iter().flatten().next() {
                    failures.push(format!(
                        "{at}:\n    {d}: the table needs a tick step before this one (rust: {:?}, redis: {:?})",
                        due[0], due[1]
                    ));
                    failed = true;
                    break;
                }
            }
            let r = rust.run(step);
            let c = cluster.run(step);
            let (mr, mc) = (mismatches(step, &r), mismatches(step, &c));
            let mut disagree = Vec::new();
            if r.pairs != c.pairs {
                disagree.push("pairs");
            }
            if r.queue != c.queue {
                disagree.push("queue");
            }
            if r.chats != c.chats {
                disagree.push("chatting");
            }
            if mr.is_empty() && mc.is_empty() && disagree.is_empty() {
                continue;
            }
            let mark = |m: &[String]| {
                if m.is_empty() {
                    String::new()
                } else {
                    format!("   <- wrong: {}", m.join(", "))
                }
            };
            let mut msg = format!(
                "{at}:\n    table: {}\n    rust:  {r}{}\n    redis: {c}{}",
                describe_then(step),
                mark(&mr),
                mark(&mc)
            );
            if !disagree.is_empty() {
                msg.push_str(&format!(
                    "\n    the engines disagree on: {}",
                    disagree.join(", ")
                ));
            }
            failures.push(msg);
            failed = true;
            break;
        }
        if !failed {
            for (engine, pr) in [("rust", rust.finish()), ("redis", cluster.finish())] {
                if !pr.is_empty() {
                    failures.push(format!(
                        "{title}, after the last step ({engine}):\n    {}",
                        pr.join("\n    ")
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios in {TABLE_PATH} failed:\n\n{}\n",
        failures.len(),
        scenarios.len(),
        failures.join("\n\n")
    );
    println!(
        "{} scenarios, {steps} steps: the Rust matchmaker and the Redis scripts agree with the table",
        scenarios.len()
    );
}
