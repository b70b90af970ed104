//! Model-based property test: a reference model of the protocol (PROTOCOL §2–§6, §8,
//! restated here as simply as possible) and the real machine run side by side on
//! generated sequences. After every step the messages the client sees must match the
//! model's prediction, and the invariants of `wsauth_sim::INVARIANTS` must hold.
//!
//! Left out of the model on purpose: WebSocket pings (filtered from what is
//! compared) and the message rate limit (sequences are shorter than the burst);
//! both have transcripts of their own.

mod support;

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use support::{T0, sym, symbolic_world};
use wsauth_core::{ErrorCode, Frame, Output, PeerClose, Revocation, ServerMessage, SessionConfig};
use wsauth_sim::{InvariantChecker, StoreSettings, World};

const AUTH_TIMEOUT: i64 = 5_000;
const IDLE: i64 = 60_000;
const NOTICE: i64 = 60_000;
const LEEWAY: i64 = 30_000;
const RPC_TIMEOUT: i64 = 5_000;
const MAX_RPC_IN_FLIGHT: usize = 16;

/// Channels and claim patterns the generator picks from.
const CHANNELS: [&str; 4] = ["general", "team:1", "user:alice", "secret"];
const PATTERN_SETS: [&[&str]; 3] = [&["general", "team:*"], &["general"], &[]];

/// What the client observes, reduced to what the model predicts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Obs {
    Reply(&'static str, Option<u64>),
    Error(ErrorCode, Option<u64>, bool),
    Close(u16),
    Expiring,
    Message(String),
    LeftForbidden(String),
}

#[derive(Clone, Debug)]
struct LiveModel {
    exp: i64,
    authorized_at: i64,
    notice_sent_for: Option<i64>,
    patterns: usize,
    jti: String,
    joined: BTreeSet<&'static str>,
    /// Application calls in flight: (id, deadline), oldest first.
    calls: Vec<(u64, i64)>,
}

#[derive(Clone, Debug)]
enum Phase {
    Waiting,
    Live(LiveModel),
    Closed,
}

#[derive(Clone, Debug)]
struct Model {
    now: i64,
    last_activity: i64,
    phase: Phase,
    next_id: u64,
    next_jti: u64,
    revoked_jtis: BTreeSet<String>,
    alice_revoked: bool,
    /// What the last transition must have shown the client.
    expect: Vec<Obs>,
}

#[derive(Clone, Debug)]
enum Transition {
    AuthValid {
        id: u64,
        exp: i64,
        patterns: usize,
        jti: String,
    },
    AuthWithinLeeway {
        id: u64,
        exp: i64,
        jti: String,
    },
    AuthExpired {
        id: u64,
        exp: i64,
    },
    AuthGarbage {
        id: u64,
    },
    AuthBadSignature {
        id: u64,
    },
    AuthUserIdMismatch {
        id: u64,
        exp: i64,
        jti: String,
    },
    RefreshSameSubject {
        id: u64,
        exp: i64,
        patterns: usize,
        jti: String,
    },
    RefreshOtherSubject {
        id: u64,
        exp: i64,
    },
    RefreshExpired {
        id: u64,
        exp: i64,
    },
    RefreshGarbage {
        id: u64,
    },
    Join {
        id: u64,
        channel: usize,
    },
    Leave {
        id: u64,
        channel: usize,
    },
    Publish {
        id: u64,
        channel: usize,
    },
    Logout,
    Malformed,
    UnknownType {
        id: u64,
    },
    Binary,
    Pong,
    Wait(i64),
    PeerClose(Option<u16>),
    RevokeCurrentToken,
    RevokeSession,
    RevokeUser,
    /// An `rpc`; the harness holds every call's result.
    Call {
        id: u64,
    },
    /// The held call results are released, in call order or in reverse.
    CallResults {
        reverse: bool,
    },
    /// An application-level `ping` (not the WebSocket one).
    AppPing {
        id: u64,
    },
}

fn allowed(patterns: usize, channel: &str) -> bool {
    if channel == "user:alice" {
        return true;
    }
    PATTERN_SETS[patterns]
        .iter()
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => channel.len() > prefix.len() && channel.starts_with(prefix),
            None => *p == channel,
        })
}

fn pattern_claim(patterns: usize) -> String {
    PATTERN_SETS[patterns].join(",")
}

impl Model {
    fn fatal(&mut self, id: Option<u64>, code: ErrorCode, close: u16) {
        self.expect.push(Obs::Error(code, id, true));
        self.expect.push(Obs::Close(close));
        self.phase = Phase::Closed;
    }

    fn refused_by_revocation(&self, jti: &str) -> bool {
        self.alice_revoked || self.revoked_jtis.contains(jti)
    }

    /// Fires every deadline up to `until`, in time order (ties: auth, idle,
    /// expiring, expiry — the order PROTOCOL lists them in).
    fn run_timers(&mut self, until: i64) {
        loop {
            let mut due: Vec<(i64, u8)> = vec![(self.last_activity + IDLE, 1)];
            match &self.phase {
                Phase::Closed => return,
                Phase::Waiting => due.push((AUTH_TIMEOUT, 0)),
                Phase::Live(l) => {
                    if l.notice_sent_for != Some(l.exp) {
                        let lead = NOTICE.min((l.exp - l.authorized_at).max(0) / 2);
                        due.push((l.exp - lead, 2));
                    }
                    due.push((l.exp + LEEWAY, 3));
                    if let Some(first) = l.calls.iter().map(|(_, at)| *at).min() {
                        due.push((first, 4));
                    }
                }
            }
            let Some(&(at, which)) = due.iter().filter(|(at, _)| *at <= until).min() else {
                return;
            };
            self.now = self.now.max(at);
            match which {
                0 => self.fatal(None, ErrorCode::AuthTimeout, 4408),
                1 => self.fatal(None, ErrorCode::IdleTimeout, 4408),
                2 => {
                    if let Phase::Live(l) = &mut self.phase {
                        l.notice_sent_for = Some(l.exp);
                    }
                    self.expect.push(Obs::Expiring);
                }
                3 => self.fatal(None, ErrorCode::SessionExpired, 4401),
                _ => self.calls_past_deadline(at),
            }
        }
    }

    /// Calls past their deadline are answered UNAVAILABLE, oldest first.
    fn calls_past_deadline(&mut self, at: i64) {
        let Phase::Live(l) = &mut self.phase else {
            return;
        };
        let (late, pending): (Vec<_>, Vec<_>) = l.calls.iter().partition(|(_, d)| *d <= at);
        l.calls = pending;
        for (id, _) in late {
            self.expect
                .push(Obs::Error(ErrorCode::Unavailable, Some(id), false));
        }
    }

    fn step(&mut self, t: &Transition) {
        self.expect.clear();
        if let Transition::Wait(ms) = t {
            let target = self.now + ms;
            self.run_timers(target);
            self.now = target;
            return;
        }
        self.run_timers(self.now);
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        let is_frame = !matches!(
            t,
            Transition::PeerClose(_)
                | Transition::RevokeCurrentToken
                | Transition::RevokeSession
                | Transition::RevokeUser
                | Transition::CallResults { .. }
        );
        if is_frame {
            self.last_activity = self.now;
        }
        let live = matches!(self.phase, Phase::Live(_));
        use Transition as T;
        match t.clone() {
            T::Wait(_) => {}
            T::Pong => {}
            T::Malformed | T::Binary => self.fatal(None, ErrorCode::BadRequest, 4400),
            T::UnknownType { id } => self.fatal(Some(id), ErrorCode::BadRequest, 4400),
            T::PeerClose(_) => self.phase = Phase::Closed,
            T::RevokeCurrentToken => {
                if let Phase::Live(l) = &self.phase {
                    let jti = l.jti.clone();
                    self.revoked_jtis.insert(jti);
                    self.fatal(None, ErrorCode::TokenRevoked, 4403);
                }
            }
            T::RevokeSession => {
                if live {
                    self.fatal(None, ErrorCode::SessionRevoked, 4403);
                }
            }
            T::RevokeUser => {
                self.alice_revoked = true;
                if live {
                    self.fatal(None, ErrorCode::TokenRevoked, 4403);
                }
            }
            T::AuthValid { id, .. }
            | T::AuthWithinLeeway { id, .. }
            | T::AuthExpired { id, .. }
            | T::AuthGarbage { id }
            | T::AuthBadSignature { id }
            | T::AuthUserIdMismatch { id, .. }
                if live =>
            {
                self.expect
                    .push(Obs::Error(ErrorCode::AlreadyAuthenticated, Some(id), false));
            }
            T::AuthValid {
                id,
                exp,
                patterns,
                jti,
            } => self.auth(id, exp, patterns, jti),
            T::AuthWithinLeeway { id, exp, jti } => self.auth(id, exp, 0, jti),
            T::AuthExpired { id, .. } => self.fatal(Some(id), ErrorCode::TokenExpired, 4401),
            T::AuthGarbage { id } => self.fatal(Some(id), ErrorCode::InvalidToken, 4401),
            T::AuthBadSignature { id } | T::AuthUserIdMismatch { id, .. } => {
                self.fatal(Some(id), ErrorCode::AuthFailed, 4401)
            }
            T::Logout if !live => self.fatal(None, ErrorCode::NotAuthenticated, 4401),
            T::RefreshSameSubject { id, .. }
            | T::RefreshOtherSubject { id, .. }
            | T::RefreshExpired { id, .. }
            | T::RefreshGarbage { id }
            | T::Join { id, .. }
            | T::Leave { id, .. }
            | T::Publish { id, .. }
            | T::Call { id }
            | T::AppPing { id }
                if !live =>
            {
                self.fatal(Some(id), ErrorCode::NotAuthenticated, 4401)
            }
            T::AppPing { id } => self.expect.push(Obs::Reply("pong", Some(id))),
            T::Call { id } => {
                let now = self.now;
                let Phase::Live(l) = &mut self.phase else {
                    return;
                };
                if l.calls.len() >= MAX_RPC_IN_FLIGHT {
                    self.expect
                        .push(Obs::Error(ErrorCode::Busy, Some(id), false));
                } else {
                    l.calls.push((id, now + RPC_TIMEOUT));
                }
            }
            T::CallResults { reverse } => {
                let Phase::Live(l) = &mut self.phase else {
                    return;
                };
                let mut answered = std::mem::take(&mut l.calls);
                if reverse {
                    answered.reverse();
                }
                for (id, _) in answered {
                    self.expect.push(Obs::Reply("rpc_result", Some(id)));
                }
            }
            T::Logout => {
                self.expect.push(Obs::Close(1000));
                self.phase = Phase::Closed;
            }
            T::RefreshSameSubject {
                id,
                exp,
                patterns,
                jti,
            } => {
                if self.refused_by_revocation(&jti) {
                    self.expect
                        .push(Obs::Error(ErrorCode::TokenRevoked, Some(id), false));
                    return;
                }
                let now = self.now;
                let Phase::Live(l) = &mut self.phase else {
                    return;
                };
                l.exp = exp;
                l.authorized_at = now;
                l.patterns = patterns;
                l.jti = jti;
                self.expect.push(Obs::Reply("refreshed", Some(id)));
                let gone: Vec<&'static str> = l
                    .joined
                    .iter()
                    .copied()
                    .filter(|c| !allowed(patterns, c))
                    .collect();
                for c in gone {
                    l.joined.remove(c);
                    self.expect.push(Obs::LeftForbidden(c.to_owned()));
                }
            }
            T::RefreshOtherSubject { id, .. } => {
                self.expect
                    .push(Obs::Error(ErrorCode::SubjectMismatch, Some(id), false))
            }
            T::RefreshExpired { id, .. } => {
                self.expect
                    .push(Obs::Error(ErrorCode::TokenExpired, Some(id), false))
            }
            T::RefreshGarbage { id } => {
                self.expect
                    .push(Obs::Error(ErrorCode::InvalidToken, Some(id), false))
            }
            T::Join { id, channel } => {
                let Phase::Live(l) = &mut self.phase else {
                    return;
                };
                let c = CHANNELS[channel];
                if allowed(l.patterns, c) {
                    l.joined.insert(c);
                    self.expect.push(Obs::Reply("joined", Some(id)));
                } else {
                    self.expect
                        .push(Obs::Error(ErrorCode::Forbidden, Some(id), false));
                }
            }
            T::Leave { id, channel } => {
                let Phase::Live(l) = &mut self.phase else {
                    return;
                };
                l.joined.remove(CHANNELS[channel]);
                self.expect.push(Obs::Reply("left", Some(id)));
            }
            T::Publish { id, channel } => {
                let Phase::Live(l) = &self.phase else { return };
                let c = CHANNELS[channel];
                if allowed(l.patterns, c) {
                    self.expect.push(Obs::Reply("published", Some(id)));
                    if l.joined.contains(c) {
                        self.expect.push(Obs::Message(c.to_owned()));
                    }
                } else {
                    self.expect
                        .push(Obs::Error(ErrorCode::Forbidden, Some(id), false));
                }
            }
        }
    }

    fn auth(&mut self, id: u64, exp: i64, patterns: usize, jti: String) {
        if self.refused_by_revocation(&jti) {
            self.fatal(Some(id), ErrorCode::TokenRevoked, 4403);
            return;
        }
        self.expect.push(Obs::Reply("authenticated", Some(id)));
        self.phase = Phase::Live(LiveModel {
            exp,
            authorized_at: self.now,
            notice_sent_for: None,
            patterns,
            jti,
            joined: BTreeSet::new(),
            calls: Vec::new(),
        });
    }
}

struct ProtocolModel;

impl ReferenceStateMachine for ProtocolModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model {
            now: 0,
            last_activity: 0,
            phase: Phase::Waiting,
            next_id: 1,
            next_jti: 1,
            revoked_jtis: BTreeSet::new(),
            alice_revoked: false,
            expect: Vec::new(),
        })
        .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let id = state.next_id;
        let jti = format!("j{}", state.next_jti);
        // Token expiries in whole seconds, relative to the start.
        let now_s = state.now.div_euclid(1000);
        let valid_exp = (now_s + 1..now_s + 400).prop_map(|s| s * 1000);
        let leeway_exp = (now_s - 29..now_s).prop_map(|s| s * 1000);
        let expired_exp = (now_s - 500..now_s - 31).prop_map(|s| s * 1000);
        let j = jti.clone();
        let j2 = jti.clone();
        let j3 = jti.clone();
        // Inputs that end the connection are rare, so that sessions live long
        // enough to meet their timers; before authentication, mostly `auth`.
        let waiting = matches!(state.phase, Phase::Waiting);
        let auth_weight = if waiting { 40 } else { 2 };
        prop_oneof![
            auth_weight => (valid_exp.clone(), 0..PATTERN_SETS.len())
                .prop_map(move |(exp, patterns)| Transition::AuthValid { id, exp, patterns, jti: j.clone() }),
            2 => leeway_exp.prop_map(move |exp| Transition::AuthWithinLeeway { id, exp, jti: j2.clone() }),
            1 => expired_exp.clone().prop_map(move |exp| Transition::AuthExpired { id, exp }),
            1 => Just(Transition::AuthGarbage { id }),
            1 => Just(Transition::AuthBadSignature { id }),
            1 => valid_exp.clone().prop_map(move |exp| Transition::AuthUserIdMismatch { id, exp, jti: j3.clone() }),
            12 => (valid_exp.clone(), 0..PATTERN_SETS.len())
                .prop_map(move |(exp, patterns)| Transition::RefreshSameSubject { id, exp, patterns, jti: jti.clone() }),
            4 => valid_exp.prop_map(move |exp| Transition::RefreshOtherSubject { id, exp }),
            4 => expired_exp.prop_map(move |exp| Transition::RefreshExpired { id, exp }),
            4 => Just(Transition::RefreshGarbage { id }),
            12 => (0..CHANNELS.len()).prop_map(move |channel| Transition::Join { id, channel }),
            4 => (0..CHANNELS.len()).prop_map(move |channel| Transition::Leave { id, channel }),
            8 => (0..CHANNELS.len()).prop_map(move |channel| Transition::Publish { id, channel }),
            1 => Just(Transition::Logout),
            1 => Just(Transition::Malformed),
            1 => Just(Transition::UnknownType { id }),
            1 => Just(Transition::Binary),
            6 => Just(Transition::Pong),
            30 => prop_oneof![1i64..2_000, 2_000i64..30_000, 30_000i64..100_000].prop_map(Transition::Wait),
            1 => prop_oneof![Just(Some(1000u16)), Just(Some(1001)), Just(None)].prop_map(Transition::PeerClose),
            1 => Just(Transition::RevokeCurrentToken),
            1 => Just(Transition::RevokeSession),
            1 => Just(Transition::RevokeUser),
            10 => Just(Transition::Call { id }),
            4 => any::<bool>().prop_map(|reverse| Transition::CallResults { reverse }),
            3 => Just(Transition::AppPing { id }),
        ]
        .boxed()
    }

    fn apply(mut state: Model, t: &Transition) -> Model {
        state.step(t);
        // The machine fires what its own step made due (a token already past its
        // notice time when it was accepted) before it rests.
        state.run_timers(state.now);
        state.next_id += 1;
        state.next_jti += 1;
        state
    }
}

struct Harness {
    world: World,
    checker: InvariantChecker,
}

fn observe(outputs: Vec<(String, Output)>) -> Vec<Obs> {
    outputs
        .into_iter()
        .filter_map(|(_, o)| match o {
            Output::Close { code, .. } => Some(Obs::Close(code.0)),
            Output::Send(m) => Some(match m {
                ServerMessage::Authenticated { id, .. } => Obs::Reply("authenticated", id),
                ServerMessage::Refreshed { id, .. } => Obs::Reply("refreshed", id),
                ServerMessage::Joined { id, .. } => Obs::Reply("joined", id),
                ServerMessage::Left {
                    id: None, channel, ..
                } => Obs::LeftForbidden(channel),
                ServerMessage::Left { id, .. } => Obs::Reply("left", id),
                ServerMessage::Published { id } => Obs::Reply("published", id),
                ServerMessage::Resumed { id, .. } => Obs::Reply("resumed", id),
                ServerMessage::RpcResult { id, .. } => Obs::Reply("rpc_result", Some(id)),
                ServerMessage::Pong { id } => Obs::Reply("pong", id),
                ServerMessage::Expiring { .. } => Obs::Expiring,
                ServerMessage::Message { channel, .. } => Obs::Message(channel.to_string()),
                ServerMessage::Error {
                    id, code, fatal, ..
                } => Obs::Error(code, id, fatal),
            }),
            _ => None,
        })
        .collect()
}

impl StateMachineTest for Harness {
    type SystemUnderTest = Harness;
    type Reference = ProtocolModel;

    fn init_test(_: &Model) -> Harness {
        let mut world = symbolic_world(SessionConfig::default(), StoreSettings::default());
        world.record_transcript = false;
        // Every call succeeds, but only when `CallResults` releases it.
        world.set_call_handler(std::sync::Arc::new(|_, data, _| {
            wsauth_core::CallResult::Ok(data.clone())
        }));
        world.hold_calls = true;
        world.open("A");
        let _ = world.take_outputs();
        Harness {
            world,
            checker: InvariantChecker::new(),
        }
    }

    fn apply(mut h: Harness, model: &Model, t: Transition) -> Harness {
        let ttl = |exp: i64| exp.div_euclid(1000);
        let send = |h: &mut Harness, text: String| {
            h.checker.client_sent("A", &text);
            h.world.send("A", &text);
        };
        use Transition as T;
        match t {
            T::AuthValid {
                id,
                exp,
                patterns,
                jti,
            } => send(
                &mut h,
                format!(
                    r#"{{"type":"auth","id":{id},"token":"{}"}}"#,
                    sym("alice", ttl(exp), &jti, &pattern_claim(patterns))
                ),
            ),
            T::AuthWithinLeeway { id, exp, jti } => send(
                &mut h,
                format!(
                    r#"{{"type":"auth","id":{id},"token":"{}"}}"#,
                    sym("alice", ttl(exp), &jti, &pattern_claim(0))
                ),
            ),
            T::AuthExpired { id, exp } => send(
                &mut h,
                format!(
                    r#"{{"type":"auth","id":{id},"token":"{}"}}"#,
                    sym("alice", ttl(exp), "x", "")
                ),
            ),
            T::AuthGarbage { id } => send(
                &mut h,
                format!(r#"{{"type":"auth","id":{id},"token":"garbage"}}"#),
            ),
            T::AuthBadSignature { id } => send(
                &mut h,
                format!(r#"{{"type":"auth","id":{id},"token":"bad:alice:99999999999"}}"#),
            ),
            T::AuthUserIdMismatch { id, exp, jti } => send(
                &mut h,
                format!(
                    r#"{{"type":"auth","id":{id},"user_id":"mallory","token":"{}"}}"#,
                    sym("alice", ttl(exp), &jti, "")
                ),
            ),
            T::RefreshSameSubject {
                id,
                exp,
                patterns,
                jti,
            } => send(
                &mut h,
                format!(
                    r#"{{"type":"refresh","id":{id},"token":"{}"}}"#,
                    sym("alice", ttl(exp), &jti, &pattern_claim(patterns))
                ),
            ),
            T::RefreshOtherSubject { id, exp } => send(
                &mut h,
                format!(
                    r#"{{"type":"refresh","id":{id},"token":"{}"}}"#,
                    sym("bob", ttl(exp), "b", "")
                ),
            ),
            T::RefreshExpired { id, exp } => send(
                &mut h,
                format!(
                    r#"{{"type":"refresh","id":{id},"token":"{}"}}"#,
                    sym("alice", ttl(exp), "x", "")
                ),
            ),
            T::RefreshGarbage { id } => send(
                &mut h,
                format!(r#"{{"type":"refresh","id":{id},"token":"x.y"}}"#),
            ),
            T::Join { id, channel } => send(
                &mut h,
                format!(
                    r#"{{"type":"join","id":{id},"channel":"{}"}}"#,
                    CHANNELS[channel]
                ),
            ),
            T::Leave { id, channel } => send(
                &mut h,
                format!(
                    r#"{{"type":"leave","id":{id},"channel":"{}"}}"#,
                    CHANNELS[channel]
                ),
            ),
            T::Publish { id, channel } => send(
                &mut h,
                format!(
                    r#"{{"type":"publish","id":{id},"channel":"{}","data":[{id}]}}"#,
                    CHANNELS[channel]
                ),
            ),
            T::Logout => send(&mut h, r#"{"type":"logout"}"#.to_owned()),
            T::Malformed => send(&mut h, "{not json".to_owned()),
            T::UnknownType { id } => send(&mut h, format!(r#"{{"type":"dance","id":{id}}}"#)),
            T::Binary => h.world.send_frame("A", Frame::Binary(3)),
            T::Pong => h.world.pong("A"),
            T::Wait(ms) => h.world.advance(ms as u64),
            T::PeerClose(code) => h.world.peer_close(
                "A",
                code.map_or(PeerClose::Lost, |c| PeerClose::Closed(Some(c))),
            ),
            T::RevokeCurrentToken => {
                let jti = match h.world.conn("A").and_then(|c| c.claims()) {
                    Some(c) => c.jti.clone().unwrap_or_default(),
                    None => "nothing".to_owned(),
                };
                h.world.revoke(Revocation::Token { jti });
            }
            T::RevokeSession => {
                let session_id = h
                    .world
                    .conn("A")
                    .and_then(|c| c.session_id().map(str::to_owned))
                    .unwrap_or_else(|| "s_none".to_owned());
                h.world.revoke(Revocation::Session { session_id });
            }
            T::Call { id } => send(
                &mut h,
                format!(r#"{{"type":"rpc","id":{id},"method":"chat.send","data":{id}}}"#),
            ),
            T::CallResults { reverse } => h.world.release_calls(reverse),
            T::AppPing { id } => send(&mut h, format!(r#"{{"type":"ping","id":{id}}}"#)),
            T::RevokeUser => h.world.revoke(Revocation::Subject {
                sub: "alice".to_owned(),
                at_s: (h.world.now() / 1000),
            }),
        }
        // Compare what the client saw with the model's prediction, then the
        // invariants (which consume the outputs).
        let outputs = h.world.take_outputs();
        let seen = observe(outputs.clone());
        assert_eq!(
            seen, model.expect,
            "client saw something else than the model predicts"
        );
        if let Err(v) = h
            .checker
            .check_outputs(&outputs)
            .and_then(|()| h.checker.check_state(&h.world))
        {
            panic!("invariant {} broken: {}", v.invariant, v.detail);
        }
        h
    }

    fn check_invariants(h: &Harness, model: &Model) {
        let conn = h.world.conn("A").expect("connection A");
        match &model.phase {
            Phase::Closed => assert!(conn.is_closed(), "model closed, machine open"),
            Phase::Waiting => {
                assert!(
                    !conn.is_closed() && !conn.is_authenticated(),
                    "model waits for auth"
                );
            }
            Phase::Live(l) => {
                assert!(conn.is_authenticated(), "model live, machine not");
                let joined: BTreeSet<&str> = conn.joined_channels().collect();
                let expected: BTreeSet<&str> = l.joined.iter().copied().collect();
                assert_eq!(joined, expected, "joined channels");
                assert_eq!(
                    conn.expiry_deadline(),
                    Some((T0 as i64 + l.exp + LEEWAY) as u64),
                    "expiry deadline"
                );
                assert_eq!(conn.user(), Some("alice"));
                assert_eq!(conn.calls_in_flight(), l.calls.len(), "calls in flight");
            }
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_shrink_iters: 4096,
        .. ProptestConfig::default()
    })]

    #[test]
    fn machine_matches_the_reference_model(sequential 1..60 => Harness);
}
