//! A live session: refresh, the `expiring` notice and expiry, channels, deliveries
//! and revocations.

use std::sync::Arc;

use super::phase::{Live, LiveStep, Phase};
use super::timers::Timer;
use super::{
    Connection, Delivery, Event, Output, Reply, RequestId, Revocation, StoreRequest, VerifyPurpose,
};
use crate::channels::channel_allowed;
use crate::error::ErrorCode;
use crate::jwt::Claims;
use crate::protocol::{ClientMessage, Payload, ServerMessage};

impl Connection {
    /// A message from an authenticated client.
    pub(super) fn process_live(&mut self, now: u64, msg: ClientMessage) {
        match msg {
            ClientMessage::Auth { id, .. } | ClientMessage::Resume { id, .. } => {
                let already = ServerMessage::error(ErrorCode::AlreadyAuthenticated, id, false);
                self.outputs.send(already);
            }
            ClientMessage::Refresh { id, token } => {
                let request = self.begin_live_step(LiveStep::RefreshVerify { id });
                self.outputs.push(Output::Verify {
                    request,
                    token,
                    purpose: VerifyPurpose::Refresh,
                });
            }
            ClientMessage::Logout { .. } => self.logout(),
            ClientMessage::Join { id, channel } => self.join(id, channel),
            ClientMessage::Leave { id, channel } => self.leave(id, channel),
            ClientMessage::Publish { id, channel, data } => self.publish(id, channel, data),
            ClientMessage::Rpc { id, method, data } => self.call(now, id, method, data),
            ClientMessage::Ping { id } => self.outputs.send(ServerMessage::Pong { id }),
        }
    }

    /// Numbers a request and makes it the pending one; the caller emits it.
    fn begin_live_step(&mut self, step: LiveStep) -> RequestId {
        let request = self.request_ids.next();
        if let Phase::Live(live) = &mut self.phase {
            live.pending = Some((request, step));
        }
        request
    }

    fn join(&mut self, id: Option<u64>, channel: String) {
        let Some(live) = self.phase.live() else {
            return;
        };
        if live.joined.contains(&channel) {
            self.outputs.send(ServerMessage::Joined { id, channel });
            return;
        }
        if !live.allows(&channel) {
            let forbidden = ServerMessage::error(ErrorCode::Forbidden, id, false);
            self.outputs.send(forbidden);
            return;
        }
        if live.joined.len() >= self.config.max_channels {
            self.outputs.send(ServerMessage::Error {
                id,
                code: ErrorCode::Forbidden,
                message: "too many channels joined".into(),
                fatal: false,
                retry: None,
                details: None,
            });
            return;
        }
        let attachment = live.attachment.clone();
        let join = LiveStep::Join {
            id,
            channel: channel.clone(),
        };
        let request = self.begin_live_step(join);
        self.outputs.store(StoreRequest::Subscribe {
            request,
            attachment,
            channel,
        });
    }

    fn leave(&mut self, id: Option<u64>, channel: String) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        if live.joined.remove(&channel) {
            self.outputs.store(StoreRequest::Unsubscribe {
                attachment: live.attachment.clone(),
                channel: channel.clone(),
            });
        }
        let reason = None;
        self.outputs.send(ServerMessage::Left {
            id,
            channel,
            reason,
        });
    }

    fn publish(&mut self, id: Option<u64>, channel: String, data: Payload) {
        let Some(live) = self.phase.live() else {
            return;
        };
        if !live.allows(&channel) {
            let forbidden = ServerMessage::error(ErrorCode::Forbidden, id, false);
            self.outputs.send(forbidden);
            return;
        }
        let from = live.claims.sub.clone();
        let request = self.begin_live_step(LiveStep::Publish { id });
        self.outputs.store(StoreRequest::Publish {
            request,
            channel,
            from,
            data,
        });
    }

    /// The reply to the live session's pending request.
    pub(super) fn continue_live(&mut self, now: u64, step: LiveStep, reply: Reply) {
        match (step, reply) {
            (LiveStep::RefreshVerify { id }, Reply::Verified(claims)) => {
                self.refresh_verified(now, id, claims);
            }
            (LiveStep::RefreshVerify { id }, Reply::NotVerified(e)) => {
                self.refresh_failed(id, e.code());
            }
            (LiveStep::RefreshStore { id, claims }, Reply::Refreshed) => {
                self.refreshed(now, id, claims);
            }
            (LiveStep::RefreshStore { id, claims }, Reply::Revoked) => {
                self.outputs.refused(&claims);
                self.refresh_failed(id, ErrorCode::TokenRevoked);
            }
            (LiveStep::RefreshVerify { id } | LiveStep::RefreshStore { id, .. }, _) => {
                // Unavailable, or a reply that makes no sense here: the refresh
                // fails without harming the session.
                self.refresh_failed(id, ErrorCode::Internal);
            }
            (LiveStep::Join { id, channel }, Reply::Subscribed) => {
                if let Phase::Live(live) = &mut self.phase {
                    live.joined.insert(channel.clone());
                }
                self.outputs.send(ServerMessage::Joined { id, channel });
            }
            (LiveStep::Publish { id }, Reply::Published) => {
                self.outputs.send(ServerMessage::Published { id });
            }
            (LiveStep::Join { id, .. } | LiveStep::Publish { id }, _) => {
                let internal = ServerMessage::error(ErrorCode::Internal, id, false);
                self.outputs.send(internal);
            }
        }
    }

    /// A refresh token verified: the store checks revocation and records it.
    fn refresh_verified(&mut self, now: u64, id: Option<u64>, claims: Arc<Claims>) {
        let Some(live) = self.phase.live() else {
            return;
        };
        if claims.sub != live.claims.sub {
            self.refresh_failed(id, ErrorCode::SubjectMismatch);
            return;
        }
        if now >= crate::rules::token_ends_at(claims.exp_ms, self.config.leeway_ms) {
            self.refresh_failed(id, ErrorCode::TokenExpired);
            return;
        }
        let attachment = live.attachment.clone();
        let store = LiveStep::RefreshStore {
            id,
            claims: claims.clone(),
        };
        let request = self.begin_live_step(store);
        self.outputs.store(StoreRequest::RefreshSession {
            request,
            attachment,
            claims,
            now_ms: now,
        });
    }

    fn refreshed(&mut self, now: u64, id: Option<u64>, claims: Arc<Claims>) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        let remaining_ms = live.claims.exp_ms.saturating_sub(now);
        let expires_at = claims.exp_ms;
        live.claims = claims;
        live.authorized_at_ms = now;
        let no_longer_allowed: Vec<String> = live
            .joined
            .iter()
            .filter(|c| !live.allows(c))
            .cloned()
            .collect();
        for c in &no_longer_allowed {
            live.joined.remove(c);
        }
        let attachment = live.attachment.clone();
        self.arm_expiry_timers(now, None);
        self.outputs
            .send(ServerMessage::Refreshed { id, expires_at });
        for channel in no_longer_allowed {
            self.outputs.store(StoreRequest::Unsubscribe {
                attachment: attachment.clone(),
                channel: channel.clone(),
            });
            self.outputs.left_forbidden(channel);
        }
        self.outputs.event(Event::Refreshed { remaining_ms });
    }

    fn refresh_failed(&mut self, id: Option<u64>, code: ErrorCode) {
        self.outputs.send(ServerMessage::error(code, id, false));
        self.outputs.event(Event::RefreshFailed { code });
    }

    /// Arms the expiry and `expiring` timers for the live session's current token.
    /// `earlier_authorization` is the time of the auth or refresh before a resume,
    /// whose notice time still counts.
    pub(super) fn arm_expiry_timers(&mut self, now: u64, earlier_authorization: Option<u64>) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        let exp = live.claims.exp_ms;
        let notice_at = |from: u64| {
            let lead = self
                .config
                .refresh_notice_ms
                .min(exp.saturating_sub(from) / 2);
            exp.saturating_sub(lead)
        };
        let mut at = notice_at(live.authorized_at_ms.max(now));
        if let Some(earlier) = earlier_authorization {
            at = at.min(notice_at(earlier));
        }
        let timers = &mut live.open.timers;
        timers.set(
            Timer::Expiry,
            crate::rules::token_ends_at(exp, self.config.leeway_ms),
        );
        if live.expiring_sent_for == Some(exp) {
            timers.stop(Timer::Expiring);
        } else {
            timers.set(Timer::Expiring, at);
        }
    }

    /// The `expiring` notice, once per token.
    pub(super) fn send_expiring(&mut self, now: u64) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        let expires_at = live.claims.exp_ms;
        if live.expiring_sent_for == Some(expires_at) {
            return;
        }
        live.expiring_sent_for = Some(expires_at);
        let attachment = live.attachment.clone();
        self.outputs.send(ServerMessage::Expiring {
            expires_at,
            in_ms: expires_at.saturating_sub(now),
        });
        self.outputs
            .store(StoreRequest::NoteExpiringSent { attachment });
        self.outputs.event(Event::ExpiringSent);
    }

    /// A channel message is sent when its `seq` is new and its channel is joined
    /// or is the session's own `user:<sub>` ([`crate::rules::accepts_channel`]).
    pub(super) fn on_delivery(&mut self, delivery: Delivery) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        if delivery.seq <= live.last_seq
            || !crate::rules::accepts_channel(&delivery.channel, &live.claims.sub, &live.joined)
        {
            return;
        }
        live.last_seq = delivery.seq;
        self.outputs.message(delivery);
    }

    /// A revocation closes the connection (4403) when it concerns its session
    /// or its token; a session revocation for another session leaves it alone.
    pub(super) fn on_revoked(&mut self, revocation: &Revocation, issued_at_ms: u64) {
        let Some(live) = self.phase.live() else {
            return;
        };
        let code = match revocation {
            Revocation::Session { session_id } if *session_id == live.attachment.session_id => {
                ErrorCode::SessionRevoked
            }
            r if r.refuses_token(&live.claims) => ErrorCode::TokenRevoked,
            _ => return,
        };
        self.outputs
            .event(Event::RevocationApplied { issued_at_ms });
        self.fail(None, code);
    }
}

impl Live {
    /// Whether the current token allows `channel`.
    fn allows(&self, channel: &str) -> bool {
        channel_allowed(self.claims.channels.as_deref(), &self.claims.sub, channel)
    }
}
