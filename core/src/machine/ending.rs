//! Every way a connection ends. Closing consumes the phase: what it held is
//! dropped with it, and the `Closed` phase holds nothing.

use std::borrow::Cow;

use super::phase::Phase;
use super::{Connection, Event, Output, PeerClose, SessionFate, StoreRequest};
use crate::error::{CloseCode, ErrorCode};
use crate::protocol::{ErrorBody, ServerMessage};

impl Connection {
    /// A fatal error: the error message, the session's fate, the close.
    pub(super) fn fail(&mut self, id: Option<u64>, code: ErrorCode) {
        let close = code.close_code().unwrap_or(CloseCode::CLIENT_BUG);
        self.fail_with_close(id, code, code.spec().message.into(), close);
    }

    pub(super) fn fail_with_close(
        &mut self,
        id: Option<u64>,
        code: ErrorCode,
        message: Cow<'static, str>,
        close: CloseCode,
    ) {
        if self.is_closed() {
            return;
        }
        if self.phase.upgrade().is_some() {
            self.reject_upgrade(code);
            return;
        }
        self.outputs.send(ServerMessage::Error {
            id,
            code,
            message,
            fatal: true,
            retry: code.retry(),
            details: None,
        });
        let fate = match code {
            ErrorCode::SessionReplaced if self.is_authenticated() => SessionFate::Replaced,
            ErrorCode::SessionReplaced => SessionFate::None,
            c if c.keeps_session_resumable() => self.detach(),
            _ => self.end_session(),
        };
        self.outputs.push(Output::Close {
            code: close,
            reason: code.as_str(),
        });
        self.close(Some(close), Some(code), fate);
    }

    /// The upgrade held open for a header or query token is refused.
    fn reject_upgrade(&mut self, code: ErrorCode) {
        self.outputs.push(Output::RejectUpgrade {
            status: code.http_status(),
            body: ErrorBody::new(code),
        });
        self.close(None, Some(code), SessionFate::None);
    }

    /// The server is shutting down: close 1001, the session stays resumable.
    pub(super) fn on_shutdown(&mut self) {
        if self.phase.upgrade().is_some() {
            self.reject_upgrade(ErrorCode::Internal);
            return;
        }
        let fate = self.detach();
        self.close_with(CloseCode::GOING_AWAY, "server shutting down", fate);
    }

    /// The client logged out: close 1000, the session ends.
    pub(super) fn logout(&mut self) {
        let fate = self.end_session();
        self.close_with(CloseCode::NORMAL, "logout", fate);
    }

    /// The socket is gone. A close with 1000 ends the session for good; any other
    /// end keeps it resumable.
    pub(super) fn on_peer_closed(&mut self, how: PeerClose) {
        let (code, fate) = match how {
            PeerClose::Closed(Some(1000)) => (Some(CloseCode::NORMAL), self.end_session()),
            PeerClose::Closed(code) => (code.map(CloseCode), self.detach()),
            PeerClose::Lost => (None, self.detach()),
        };
        self.close(code, None, fate);
    }

    /// The session stays resumable for the grace period.
    fn detach(&mut self) -> SessionFate {
        let Some(live) = self.phase.live() else {
            return SessionFate::None;
        };
        let attachment = live.attachment.clone();
        self.outputs
            .store(StoreRequest::DetachSession { attachment });
        SessionFate::Detached
    }

    /// The session ends for good.
    fn end_session(&mut self) -> SessionFate {
        let Some(live) = self.phase.live() else {
            return SessionFate::None;
        };
        let attachment = live.attachment.clone();
        self.outputs.store(StoreRequest::EndSession { attachment });
        SessionFate::Ended
    }

    /// A close without an error: the close frame, then the close.
    fn close_with(&mut self, code: CloseCode, reason: &'static str, fate: SessionFate) {
        self.outputs.push(Output::Close { code, reason });
        self.close(Some(code), None, fate);
    }

    /// Consumes the phase, whatever it was, and reports the end.
    fn close(&mut self, code: Option<CloseCode>, error: Option<ErrorCode>, session: SessionFate) {
        let (user, session_id) = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Live(live) => (
                Some(live.claims.sub.clone()),
                Some(live.attachment.session_id),
            ),
            Phase::AwaitingAuth(_) | Phase::Closed => (None, None),
        };
        self.outputs.event(Event::Closed {
            code,
            error,
            session,
            user,
            session_id,
        });
    }
}
