//! The invariants every property test, the exhaustive walk and the fuzz target
//! check after every step.

use std::collections::BTreeMap;

use wsauth_core::{CloseCode, Event, Output, ServerMessage};

use crate::World;

/// A broken invariant: its name (as the tests and docs name it) and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// The connection concerned.
    pub conn: String,
    /// What was seen.
    pub detail: String,
}

/// The invariants every property test, the exhaustive exploration and the fuzz
/// target check after every step.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "nothing_before_auth",
        "no reply but an error is sent before `authenticated` or `resumed`",
    ),
    (
        "no_session_live_past_expiry",
        "no session is live at or past `exp` + leeway",
    ),
    (
        "close_is_terminal",
        "after the connection's close, nothing more is emitted",
    ),
    (
        "one_reply_per_request",
        "every request with an `id` gets exactly one reply or error with that `id`, unless the connection closes first (logout's only reply is the close); only application calls may wait once no other request is pending",
    ),
    ("refresh_keeps_sub", "a session's `sub` never changes"),
    (
        "fatal_error_then_close",
        "every fatal error is followed by the close code of its row (1007 for invalid UTF-8), with nothing sent in between",
    ),
    (
        "deadline_while_waiting_for_auth",
        "a deadline is always armed while the connection waits for authentication",
    ),
];

#[derive(Clone, Debug, Default)]
struct Track {
    live_seen: bool,
    closed: bool,
    user: Option<String>,
    awaiting_close: Option<CloseCode>,
    outstanding: BTreeMap<u64, usize>,
}

/// Checks [`INVARIANTS`] over a [`World`]'s outputs and state.
#[derive(Clone, Debug, Default)]
pub struct InvariantChecker {
    tracks: BTreeMap<String, Track>,
}

impl InvariantChecker {
    /// A checker with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets a connection's history: its name is being reused for a new one.
    pub fn forget(&mut self, conn: &str) {
        self.tracks.remove(conn);
    }

    /// Registers a frame the client sent, to follow its request id.
    pub fn client_sent(&mut self, conn: &str, text: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return;
        };
        let track = self.tracks.entry(conn.to_owned()).or_default();
        if track.closed || value.get("type").and_then(|t| t.as_str()) == Some("logout") {
            return;
        }
        if let Some(id) = value.get("id").and_then(serde_json::Value::as_u64) {
            *track.outstanding.entry(id).or_default() += 1;
        }
    }

    /// Checks the outputs carried out since the last call, then the state of every
    /// connection. Call it after each step, when the world is quiet.
    pub fn check(&mut self, world: &mut World) -> Result<(), Violation> {
        let outputs = world.take_outputs();
        self.check_outputs(&outputs)?;
        self.check_state(world)
    }

    /// Checks outputs, in the order they were carried out.
    pub fn check_outputs(&mut self, outputs: &[(String, Output)]) -> Result<(), Violation> {
        for (conn, output) in outputs {
            self.check_output(conn, output)?;
        }
        Ok(())
    }

    /// Checks the state of every connection; call it when the world is quiet.
    pub fn check_state(&mut self, world: &World) -> Result<(), Violation> {
        for name in world.conn_names() {
            let Some(c) = world.conn(&name) else { continue };
            let track = self.tracks.entry(name.clone()).or_default();
            let fail = |invariant: &'static str, detail: String| Violation {
                invariant,
                conn: name.clone(),
                detail,
            };
            if let Some(deadline) = c.expiry_deadline()
                && world.now() >= deadline
            {
                return Err(fail(
                    "no_session_live_past_expiry",
                    format!("live at {} with deadline {deadline}", world.now()),
                ));
            }
            if !c.is_closed() && !c.is_authenticated() && c.poll_timeout().is_none() {
                return Err(fail("deadline_while_waiting_for_auth", "no timer".into()));
            }
            if let (Some(user), Some(now_user)) = (&track.user, c.user())
                && user != now_user
            {
                return Err(fail(
                    "refresh_keeps_sub",
                    format!("{user} became {now_user}"),
                ));
            }
            // Calls in flight are answered later, in any order: only they may be
            // outstanding once no other request is pending.
            if c.is_closed() {
                track.outstanding.clear();
            } else if !c.is_busy()
                && !world.hold_replies
                && track.outstanding.values().sum::<usize>() > c.calls_in_flight()
            {
                return Err(fail(
                    "one_reply_per_request",
                    format!("unanswered ids {:?}", track.outstanding.keys()),
                ));
            }
        }
        Ok(())
    }

    fn check_output(&mut self, conn: &str, output: &Output) -> Result<(), Violation> {
        let track = self.tracks.entry(conn.to_owned()).or_default();
        let fail = |invariant: &'static str, detail: String| Violation {
            invariant,
            conn: conn.to_owned(),
            detail,
        };
        if track.closed {
            return Err(fail("close_is_terminal", format!("{output:?}")));
        }
        if let Some(expected) = track.awaiting_close {
            match output {
                Output::Close { code, .. } if *code == expected => track.awaiting_close = None,
                Output::Close { code, .. } => {
                    return Err(fail(
                        "fatal_error_then_close",
                        format!("close {code}, expected {expected}"),
                    ));
                }
                Output::Store(_) | Output::Event(_) => {}
                other => {
                    return Err(fail(
                        "fatal_error_then_close",
                        format!("{other:?} between a fatal error and its close"),
                    ));
                }
            }
        }
        match output {
            Output::Send(msg) => {
                use ServerMessage as M;
                match msg {
                    M::Authenticated { user_id, .. } => {
                        track.live_seen = true;
                        track.user.get_or_insert_with(|| user_id.clone());
                    }
                    M::Resumed { .. } => track.live_seen = true,
                    M::Error {
                        fatal,
                        code,
                        message,
                        ..
                    } if *fatal => {
                        let close = if message.contains("UTF-8") {
                            CloseCode::INVALID_PAYLOAD
                        } else if message.contains("breaks the WebSocket protocol") {
                            CloseCode::PROTOCOL_ERROR
                        } else if message.contains("too many frames") && !track.live_seen {
                            // The frame budget, before authentication.
                            CloseCode::POLICY_VIOLATION
                        } else {
                            code.close_code().unwrap_or(CloseCode::CLIENT_BUG)
                        };
                        track.awaiting_close = Some(close);
                    }
                    _ if !track.live_seen => {
                        return Err(fail("nothing_before_auth", format!("{msg:?}")));
                    }
                    _ => {}
                }
                if let Some(id) = msg.id() {
                    match track.outstanding.get_mut(&id) {
                        Some(n) if *n > 1 => *n -= 1,
                        Some(_) => {
                            track.outstanding.remove(&id);
                        }
                        None => {
                            return Err(fail(
                                "one_reply_per_request",
                                format!("reply to id {id} that is not outstanding"),
                            ));
                        }
                    }
                }
            }
            Output::Event(Event::Closed { .. }) => {
                if let Some(expected) = track.awaiting_close {
                    return Err(fail(
                        "fatal_error_then_close",
                        format!("closed without the close {expected}"),
                    ));
                }
                track.closed = true;
            }
            _ => {}
        }
        Ok(())
    }
}
