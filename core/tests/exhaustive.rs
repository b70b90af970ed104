//! Exhaustive exploration: every sequence of inputs up to depth 8 over a small
//! abstract alphabet, with the invariants of `wsauth_sim::INVARIANTS` checked
//! in every state reached. Equivalent states are explored once.

mod support;

use std::collections::HashMap;

use support::{sym, symbolic_world};
use wsauth_core::{PeerClose, SessionConfig};
use wsauth_sim::{InvariantChecker, StoreSettings, World};

#[derive(Clone, Copy, Debug)]
enum Step {
    AuthValid,
    AuthExpired,
    AuthGarbage,
    RefreshValid,
    RefreshOtherSub,
    RefreshExpired,
    JoinAllowed,
    JoinForbidden,
    Publish,
    Rpc,
    Logout,
    Wait3s,
    Wait40s,
    ConnectionLost,
}

const ALPHABET: [Step; 14] = [
    Step::AuthValid,
    Step::AuthExpired,
    Step::AuthGarbage,
    Step::RefreshValid,
    Step::RefreshOtherSub,
    Step::RefreshExpired,
    Step::JoinAllowed,
    Step::JoinForbidden,
    Step::Publish,
    Step::Rpc,
    Step::Logout,
    Step::Wait3s,
    Step::Wait40s,
    Step::ConnectionLost,
];

const DEPTH: u32 = 8;

#[derive(Clone)]
struct State {
    world: World,
    checker: InvariantChecker,
    next_id: u64,
}

impl State {
    fn apply(&mut self, step: Step) {
        let id = self.next_id;
        self.next_id += 1;
        let text = match step {
            Step::AuthValid => Some(auth(id, &sym("alice", 60, "j1", "general"))),
            Step::AuthExpired => Some(auth(id, &sym("alice", -100, "j1", "general"))),
            Step::AuthGarbage => Some(auth(id, "garbage")),
            Step::RefreshValid => Some(refresh(id, &sym("alice", 300, "j2", "general"))),
            Step::RefreshOtherSub => Some(refresh(id, &sym("bob", 300, "j3", "general"))),
            Step::RefreshExpired => Some(refresh(id, &sym("alice", -100, "j4", "general"))),
            Step::JoinAllowed => Some(format!(
                r#"{{"type":"join","id":{id},"channel":"general"}}"#
            )),
            Step::JoinForbidden => {
                Some(format!(r#"{{"type":"join","id":{id},"channel":"secret"}}"#))
            }
            Step::Publish => Some(format!(
                r#"{{"type":"publish","id":{id},"channel":"general","data":{{"n":{id}}}}}"#
            )),
            Step::Rpc => Some(format!(
                r#"{{"type":"rpc","id":{id},"method":"chat.send","data":{id}}}"#
            )),
            Step::Logout => Some(r#"{"type":"logout"}"#.to_owned()),
            Step::Wait3s => {
                self.world.advance(3_000);
                None
            }
            Step::Wait40s => {
                self.world.advance(40_000);
                None
            }
            Step::ConnectionLost => {
                self.world.peer_close("A", PeerClose::Lost);
                None
            }
        };
        if let Some(text) = text {
            self.checker.client_sent("A", &text);
            self.world.send("A", &text);
        }
        if let Err(v) = self.checker.check(&mut self.world) {
            panic!(
                "invariant {} broken on {}: {}",
                v.invariant, v.conn, v.detail
            );
        }
    }

    fn closed(&self) -> bool {
        self.world.conn("A").is_none_or(|c| c.is_closed())
    }

    /// What distinguishes states: the machine, the clock and the store's size.
    fn fingerprint(&self) -> String {
        format!(
            "{:?}|{}|{}",
            self.world.conn("A"),
            self.world.now(),
            self.world.stored_sessions()
        )
    }
}

fn auth(id: u64, token: &str) -> String {
    format!(r#"{{"type":"auth","id":{id},"token":"{token}"}}"#)
}

fn refresh(id: u64, token: &str) -> String {
    format!(r#"{{"type":"refresh","id":{id},"token":"{token}"}}"#)
}

struct Explorer {
    /// Fingerprint → the most remaining depth it was explored with.
    seen: HashMap<String, u32>,
    explored: u64,
    sequences: u128,
    closed_states: u64,
}

impl Explorer {
    fn explore(&mut self, state: &State, remaining: u32) {
        if state.closed() {
            self.closed_states += 1;
            // A closed connection ignores everything: check it once here.
            let mut probe = state.clone();
            for step in ALPHABET {
                if !matches!(step, Step::Wait3s | Step::Wait40s | Step::ConnectionLost) {
                    probe.apply(step);
                }
            }
            self.sequences += (ALPHABET.len() as u128).pow(remaining);
            return;
        }
        if remaining == 0 {
            self.sequences += 1;
            return;
        }
        let fp = state.fingerprint();
        if let Some(&done) = self.seen.get(&fp)
            && done >= remaining
        {
            self.sequences += (ALPHABET.len() as u128).pow(remaining);
            return;
        }
        self.seen.insert(fp, remaining);
        for step in ALPHABET {
            let mut next = state.clone();
            next.apply(step);
            self.explored += 1;
            self.explore(&next, remaining - 1);
        }
    }
}

#[test]
fn every_sequence_up_to_depth_8_keeps_every_invariant() {
    let config = SessionConfig::default();
    let mut world = symbolic_world(config, StoreSettings::default());
    world.record_transcript = false;
    // Calls are never answered: they stay in flight until their deadline or the close.
    world.hold_calls = true;
    world.open("A");
    let mut start = State {
        world,
        checker: InvariantChecker::new(),
        next_id: 1,
    };
    start
        .checker
        .check(&mut start.world)
        .expect("initial state");

    let mut explorer = Explorer {
        seen: HashMap::new(),
        explored: 0,
        sequences: 0,
        closed_states: 0,
    };
    explorer.explore(&start, DEPTH);
    println!(
        "exhaustive: {} input sequences of length {DEPTH} over {} inputs covered; {} steps executed; {} distinct open states; {} closed states checked",
        explorer.sequences,
        ALPHABET.len(),
        explorer.explored,
        explorer.seen.len(),
        explorer.closed_states
    );
    assert_eq!(
        explorer.sequences,
        (ALPHABET.len() as u128).pow(DEPTH),
        "every sequence is accounted for"
    );
    assert!(
        explorer.seen.len() > 100,
        "the exploration reached few states"
    );
}
