//! Before a session is attached: `auth` (or a header or query token), `resume`,
//! and the transition to the live phase.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::phase::{AuthStep, AwaitingAuth, Live, Open, Phase};
use super::timers::Timer;
use super::{
    Attachment, AuthMethod, Connection, Event, Output, Reply, RequestId, ResumedSession,
    StoreRequest, VerifyPurpose,
};
use crate::channels::channel_allowed;
use crate::error::ErrorCode;
use crate::jwt::Claims;
use crate::protocol::{ClientMessage, PROTOCOL_VERSION, Secret, ServerMessage};

impl Connection {
    /// A message before authentication: only `auth` and `resume` are allowed.
    pub(super) fn process_awaiting(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::Auth { id, token, user_id } => {
                let request = self.begin_auth_step(AuthStep::Verify { id, user_id });
                self.outputs.push(Output::Verify {
                    request,
                    token,
                    purpose: VerifyPurpose::Auth,
                });
            }
            ClientMessage::Resume {
                id,
                session_id,
                resume_token,
                last_seq,
            } => {
                let request = self.begin_auth_step(AuthStep::Resume { id, last_seq });
                self.outputs.store(StoreRequest::ResumeSession {
                    request,
                    session_id,
                    resume_token,
                });
            }
            other => self.fail(other.id(), ErrorCode::NotAuthenticated),
        }
    }

    /// Numbers a request and makes it the pending one; the caller emits it.
    fn begin_auth_step(&mut self, step: AuthStep) -> RequestId {
        let request = self.request_ids.next();
        if let Phase::AwaitingAuth(awaiting) = &mut self.phase {
            awaiting.pending = Some((request, step));
        }
        request
    }

    /// The reply to the pending authentication request.
    pub(super) fn continue_auth(&mut self, now: u64, step: AuthStep, reply: Reply) {
        match (step, reply) {
            (AuthStep::Verify { id, user_id }, Reply::Verified(claims)) => {
                if user_id.is_some_and(|u| u != claims.sub) {
                    self.auth_failed(id, ErrorCode::AuthFailed);
                    return;
                }
                // A verifier that answered late (introspection, a slow JWKS fetch)
                // may vouch for a token that has expired since.
                if now >= crate::rules::token_ends_at(claims.exp_ms, self.config.leeway_ms) {
                    self.auth_failed(id, ErrorCode::TokenExpired);
                    return;
                }
                let create = AuthStep::Create {
                    id,
                    claims: claims.clone(),
                };
                let request = self.begin_auth_step(create);
                self.outputs.store(StoreRequest::CreateSession {
                    request,
                    claims,
                    now_ms: now,
                });
            }
            (AuthStep::Verify { id, .. }, Reply::NotVerified(e)) => self.auth_failed(id, e.code()),
            (AuthStep::Create { id, claims }, reply) => {
                self.continue_create(now, id, claims, reply)
            }
            (AuthStep::Resume { id, last_seq }, Reply::Resumed { session, epoch }) => {
                self.handed_over(now, id, last_seq, *session, epoch);
            }
            (AuthStep::Resume { id, .. }, Reply::NotFound | Reply::Revoked) => {
                self.resume_failed(id, ErrorCode::SessionNotFound);
            }
            // Unavailable (fail closed), or a reply that makes no sense here.
            (AuthStep::Verify { id, .. }, _) => self.auth_failed(id, ErrorCode::Internal),
            (AuthStep::Resume { id, .. }, _) => self.resume_failed(id, ErrorCode::Internal),
        }
    }

    /// The store's answer to `CreateSession`.
    fn continue_create(&mut self, now: u64, id: Option<u64>, claims: Arc<Claims>, reply: Reply) {
        match reply {
            Reply::Created {
                attachment,
                resume_token,
                evicted,
            } => {
                if evicted > 0 {
                    self.outputs.event(Event::Evicted { sessions: evicted });
                }
                self.authenticated(now, id, claims, attachment, resume_token);
            }
            Reply::Revoked => {
                self.outputs.refused(&claims);
                self.auth_failed(id, ErrorCode::TokenRevoked);
            }
            Reply::TooManySessions => {
                self.outputs.refused(&claims);
                self.auth_failed(id, ErrorCode::TooManySessions);
            }
            // Unavailable (fail closed), or a reply that makes no sense here.
            _ => self.auth_failed(id, ErrorCode::Internal),
        }
    }

    /// Consumes the awaiting phase into a live one: its timers, rate and queue
    /// carry over, the authentication deadline stops, and a held upgrade is
    /// accepted now. Returns the upgrade's method, if one was held.
    fn enter_live(&mut self, now: u64, build: impl FnOnce(Open) -> Live) -> Option<AuthMethod> {
        let awaiting = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::AwaitingAuth(awaiting) => awaiting,
            other => {
                self.phase = other;
                return None;
            }
        };
        let AwaitingAuth {
            mut open, upgrade, ..
        } = awaiting;
        if upgrade.is_some() {
            open.open_websocket(&self.config, now);
        }
        open.timers.stop(Timer::Auth);
        let live = build(open);
        self.outputs.push(Output::Listen(live.attachment.clone()));
        if upgrade.is_some() {
            self.outputs.push(Output::AcceptUpgrade);
        }
        self.phase = Phase::Live(Box::new(live));
        upgrade
    }

    fn authenticated(
        &mut self,
        now: u64,
        id: Option<u64>,
        claims: Arc<Claims>,
        attachment: Attachment,
        resume_token: Secret,
    ) {
        let expires_at = claims.exp_ms;
        let user = claims.sub.clone();
        let session_id = attachment.session_id.clone();
        let method = self
            .enter_live(now, |open| Live::new(open, attachment, claims, now))
            .unwrap_or(AuthMethod::Message);
        self.arm_expiry_timers(now, None);
        self.outputs.send(ServerMessage::Authenticated {
            id,
            session_id,
            resume_token,
            user_id: user.clone(),
            expires_at,
            heartbeat_ms: self.config.heartbeat_ms,
            protocol: PROTOCOL_VERSION,
        });
        self.outputs.event(Event::Authenticated { method, user });
    }

    /// The store handed the session over. A resume is a full re-authorization: the
    /// token must still be valid (the store has checked revocation).
    fn handed_over(
        &mut self,
        now: u64,
        id: Option<u64>,
        last_seq: u64,
        session: ResumedSession,
        epoch: u64,
    ) {
        let attachment = Attachment {
            session_id: session.session_id.clone(),
            epoch,
        };
        if now >= crate::rules::token_ends_at(session.claims.exp_ms, self.config.leeway_ms) {
            self.outputs.store(StoreRequest::EndSession { attachment });
            self.resume_failed(id, ErrorCode::SessionNotFound);
        } else {
            self.resumed(now, id, last_seq, session, attachment);
        }
    }

    fn resumed(
        &mut self,
        now: u64,
        id: Option<u64>,
        last_seq: u64,
        session: ResumedSession,
        attachment: Attachment,
    ) {
        let ResumedSession {
            session_id,
            resume_token,
            claims,
            authorized_at_ms,
            expiring_sent,
            channels,
            buffered,
            last_seq: last_assigned,
        } = session;
        let (kept, dropped) = self.keep_allowed_channels(&attachment, &claims, channels);
        let joined: BTreeSet<String> = kept.iter().cloned().collect();
        // The gap is judged on everything still buffered, before dropping the messages
        // of channels that are no longer allowed.
        let (replay, gap) =
            crate::rules::replay(buffered, last_seq, last_assigned, &claims.sub, &joined);
        let replayed = replay.len() as u64;
        let expires_at = claims.exp_ms;
        self.enter_live(now, |open| Live {
            expiring_sent_for: expiring_sent.then_some(expires_at),
            joined,
            // What the store assigned, not what the client claims: a `last_seq` beyond
            // it must not make later live messages look like duplicates.
            last_seq: last_assigned,
            ..Live::new(open, attachment, claims, authorized_at_ms)
        });
        self.outputs.send(ServerMessage::Resumed {
            id,
            session_id,
            resume_token,
            expires_at,
            channels: kept,
            replayed,
            gap,
        });
        replay.into_iter().for_each(|d| self.outputs.message(d));
        dropped
            .into_iter()
            .for_each(|c| self.outputs.left_forbidden(c));
        self.outputs.event(Event::Resumed { replayed, gap });
        self.arm_expiry_timers(now, Some(authorized_at_ms));
        // A notice whose time passed while detached follows `resumed` at once.
        self.run_timers(now);
    }

    /// Splits a resumed session's channels into those its token still allows and
    /// the others, which the store is told to unsubscribe.
    fn keep_allowed_channels(
        &mut self,
        attachment: &Attachment,
        claims: &Claims,
        channels: Vec<String>,
    ) -> (Vec<String>, Vec<String>) {
        let (kept, dropped): (Vec<String>, Vec<String>) = channels
            .into_iter()
            .partition(|c| channel_allowed(claims.channels.as_deref(), &claims.sub, c));
        for channel in &dropped {
            self.outputs.store(StoreRequest::Unsubscribe {
                attachment: attachment.clone(),
                channel: channel.clone(),
            });
        }
        (kept, dropped)
    }

    fn auth_failed(&mut self, id: Option<u64>, code: ErrorCode) {
        let method = self.phase.upgrade().unwrap_or(AuthMethod::Message);
        self.outputs.event(Event::AuthFailed { method, code });
        self.fail(id, code);
    }

    fn resume_failed(&mut self, id: Option<u64>, code: ErrorCode) {
        let method = AuthMethod::Resume;
        self.outputs.event(Event::AuthFailed { method, code });
        self.fail(id, code);
    }
}
