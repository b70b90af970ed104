//! What the machine asks its driver to do, and what it reports.

use super::input::AuthMethod;
use super::requests::{Attachment, CallContext, RequestId, StoreRequest};
#[cfg(doc)]
use super::{Connection, Reply};
use crate::error::{CloseCode, ErrorCode};
use crate::protocol::{ErrorBody, Payload, Secret, ServerMessage};

/// Countable and loggable happenings. Values here are safe to log: no token, no
/// resume token. Metric labels should use the codes and kinds, never `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session was created.
    Authenticated {
        /// How.
        method: AuthMethod,
        /// The `sub` (for logs, not for metric labels).
        user: String,
    },
    /// An authentication or resume failed.
    AuthFailed {
        /// How it was attempted.
        method: AuthMethod,
        /// Why.
        code: ErrorCode,
    },
    /// A session was resumed.
    Resumed {
        /// How many messages were replayed.
        replayed: u64,
        /// Whether some were no longer buffered.
        gap: bool,
    },
    /// A token was refreshed.
    Refreshed {
        /// Time that was left on the old token, in ms (0 if already past `exp`).
        remaining_ms: u64,
    },
    /// A refresh failed, not fatally.
    RefreshFailed {
        /// Why.
        code: ErrorCode,
    },
    /// The `expiring` notice was sent.
    ExpiringSent,
    /// The store refused a token this connection presented (revoked, or the
    /// per-user limit), for the operator's list of refusals.
    Refused {
        /// The token's `sub`.
        user: String,
        /// The token's `jti`, when it has one.
        jti: Option<String>,
    },
    /// Creating this connection's session removed older sessions of the user
    /// (per-user limit, `evict_oldest`).
    Evicted {
        /// How many.
        sessions: usize,
    },
    /// An operator revocation closed this connection.
    RevocationApplied {
        /// When the revocation was issued, in ms.
        issued_at_ms: u64,
    },
    /// The message rate limit closed the connection.
    RateLimited,
    /// An application call (`rpc`) was answered, or refused before it reached
    /// the application (`BUSY`).
    CallEnded {
        /// How.
        outcome: CallOutcome,
    },
    /// The connection is over.
    Closed {
        /// The close code sent or received (`None`: the socket was lost, or the
        /// upgrade was refused).
        code: Option<CloseCode>,
        /// The error that caused it, if any.
        error: Option<ErrorCode>,
        /// What became of the session.
        session: SessionFate,
        /// The session's user, if one was attached (for the log line).
        user: Option<String>,
        /// The session, if one was attached (for the log line).
        session_id: Option<String>,
    },
}

/// How an application call ended, for the operator's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The handler answered (`rpc_result`).
    Ok,
    /// The handler refused (`APP_ERROR`).
    AppError,
    /// No handler for the method (`METHOD_NOT_FOUND`).
    NotFound,
    /// The handler's backend failed (`UNAVAILABLE`).
    Unavailable,
    /// The call outlived `rpc_timeout_ms` (`UNAVAILABLE`).
    TimedOut,
    /// Too many calls in flight (`BUSY`); the application never saw it.
    Busy,
}

impl CallOutcome {
    /// The name used in metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::AppError => "app_error",
            CallOutcome::NotFound => "not_found",
            CallOutcome::Unavailable => "unavailable",
            CallOutcome::TimedOut => "timeout",
            CallOutcome::Busy => "busy",
        }
    }
}

/// What became of a connection's session when the connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionFate {
    /// There was no session (the connection never authenticated).
    None,
    /// Kept resumable for the grace period.
    Detached,
    /// Ended for good.
    Ended,
    /// Handed to another connection, or evicted.
    Replaced,
}

/// Why the machine asks for a token to be verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyPurpose {
    /// Authentication (header, query or `auth`).
    Auth,
    /// A live session's `refresh`.
    Refresh,
}

/// What the machine asks its driver to do, drained with [`Connection::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Header or query authentication succeeded: complete the WebSocket upgrade now,
    /// before sending anything else.
    AcceptUpgrade,
    /// Header or query authentication failed: answer the upgrade request with this
    /// HTTP status and JSON body, and no upgrade.
    RejectUpgrade {
        /// 401, 403, 429 or 503.
        status: u16,
        /// The body.
        body: ErrorBody,
    },
    /// Send this message in one text frame.
    Send(ServerMessage),
    /// Send a WebSocket ping.
    Ping,
    /// Send a close frame with this code, then drop the connection.
    Close {
        /// The close code.
        code: CloseCode,
        /// The close reason (the error code's name, or empty).
        reason: &'static str,
    },
    /// Verify this token and answer with [`Reply::Verified`] or [`Reply::NotVerified`].
    Verify {
        /// Echo in the reply.
        request: RequestId,
        /// The token.
        token: Secret,
        /// What the token is for (timing metrics tell the two apart).
        purpose: VerifyPurpose,
    },
    /// The connection now holds this session: route the store's notices for it
    /// (deliveries, takeover, revocations) to this connection. Comes before the
    /// `authenticated` or `resumed` message.
    Listen(Attachment),
    /// Carry out a store or channel request.
    Store(StoreRequest),
    /// Call the application's handler for `method` and answer with
    /// [`Input::CallResult`](super::Input::CallResult). Calls run side by side:
    /// another may be emitted before this one is answered.
    Call {
        /// Echo in the answer.
        request: RequestId,
        /// The method, already checked against the protocol's charset.
        method: String,
        /// The argument.
        data: Payload,
        /// Who calls.
        context: CallContext,
    },
    /// Count or log this.
    Event(Event),
}
