//! The machine's conversation with its store and verifier: what it asks
//! ([`StoreRequest`]), what comes back ([`Reply`]) and the values they carry.

use std::sync::Arc;

#[cfg(doc)]
use super::Output;
use crate::jwt::{Claims, TokenError};
use crate::protocol::{Payload, Secret};

/// Identifies one request the machine asked its driver to carry out; the answer
/// must carry the same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A message from a channel, addressed to this connection's session, with the `seq`
/// the store assigned to it in the session's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The channel.
    pub channel: std::sync::Arc<str>,
    /// The publisher's `sub`; `None` when the server published or sent it
    /// (PROTOCOL §9).
    pub from: Option<std::sync::Arc<str>>,
    /// Per-session sequence number, from 1.
    pub seq: u64,
    /// The data.
    pub data: Payload,
}

/// A session as one connection holds it: the session and the epoch of this
/// connection's attachment. Every attach (create or resume) gets a new epoch, and
/// the store ignores changes from a stale one, so a connection that was replaced
/// cannot touch the session any more. The machine owns it; its driver never does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// The session.
    pub session_id: String,
    /// This connection's attachment of it.
    pub epoch: u64,
}

/// What the store hands back when a resume succeeds.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumedSession {
    /// The session.
    pub session_id: String,
    /// The rotated resume token (the old one is spent).
    pub resume_token: Secret,
    /// The claims of the session's current token.
    pub claims: Arc<Claims>,
    /// When the current token was presented (auth or last refresh), in ms.
    pub authorized_at_ms: u64,
    /// Whether the `expiring` notice was already sent for the current token.
    pub expiring_sent: bool,
    /// Channels the session had joined.
    pub channels: Vec<String>,
    /// The session's replay buffer, in `seq` order.
    pub buffered: Vec<Delivery>,
    /// The highest `seq` ever assigned to the session (0 when none).
    pub last_seq: u64,
}

/// A revocation an operator issued (PROTOCOL §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// A token, by `jti`.
    Token {
        /// The revoked `jti`.
        jti: String,
    },
    /// Every token of a user issued at or before `at_s` (or without `iat`).
    Subject {
        /// The revoked `sub`.
        sub: String,
        /// The revocation time, in whole seconds.
        at_s: u64,
    },
    /// One session.
    Session {
        /// The revoked session.
        session_id: String,
    },
}

impl Revocation {
    /// Whether this revocation refuses a token with these claims.
    pub fn refuses_token(&self, claims: &Claims) -> bool {
        crate::rules::revocation_refuses(self, claims)
    }
}

/// What the machine asks its driver (store, channel layer) to do. Requests carrying a
/// [`RequestId`] expect a [`Reply`] with it; the others are fire-and-forget.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreRequest {
    /// Create a session for these verified claims, atomically checking revocation
    /// and the per-user limit. Reply: `Created`, `Revoked`, `TooManySessions` or
    /// `Unavailable`.
    CreateSession {
        /// Echo in the reply.
        request: RequestId,
        /// The verified claims.
        claims: Arc<Claims>,
        /// The authentication time, in ms.
        now_ms: u64,
    },
    /// Spend the resume token and hand the session over, atomically; a live
    /// connection holding it is told `Replaced`. Reply: `Resumed`, `NotFound` or
    /// `Unavailable`.
    ResumeSession {
        /// Echo in the reply.
        request: RequestId,
        /// The session to resume.
        session_id: String,
        /// The presented resume token (the store compares hashes).
        resume_token: Secret,
    },
    /// Check revocation for a refreshed token and record it as the session's token.
    /// Reply: `Refreshed`, `Revoked` or `Unavailable`.
    RefreshSession {
        /// Echo in the reply.
        request: RequestId,
        /// The session, as this connection holds it.
        attachment: Attachment,
        /// The new token's claims.
        claims: Arc<Claims>,
        /// The refresh time, in ms.
        now_ms: u64,
    },
    /// Record that the `expiring` notice was sent for the session's current token.
    NoteExpiringSent {
        /// The session, as this connection holds it.
        attachment: Attachment,
    },
    /// Subscribe the session to a channel. Reply: `Subscribed` or `Unavailable`.
    Subscribe {
        /// Echo in the reply.
        request: RequestId,
        /// The session, as this connection holds it.
        attachment: Attachment,
        /// The channel.
        channel: String,
    },
    /// Unsubscribe the session from a channel.
    Unsubscribe {
        /// The session, as this connection holds it.
        attachment: Attachment,
        /// The channel.
        channel: String,
    },
    /// Publish to a channel. Reply: `Published` or `Unavailable`.
    Publish {
        /// Echo in the reply.
        request: RequestId,
        /// The channel.
        channel: String,
        /// The publisher's `sub`.
        from: String,
        /// The data.
        data: Payload,
    },
    /// The connection ended but the session stays resumable for the grace period.
    DetachSession {
        /// The session, as this connection holds it.
        attachment: Attachment,
    },
    /// The session ends for good (logout, fatal error, revocation, close 1000).
    EndSession {
        /// The session, as this connection holds it.
        attachment: Attachment,
    },
}

impl StoreRequest {
    /// The request a [`Reply`] must name, for the requests that expect one.
    pub fn reply_to(&self) -> Option<RequestId> {
        match self {
            StoreRequest::CreateSession { request, .. }
            | StoreRequest::ResumeSession { request, .. }
            | StoreRequest::RefreshSession { request, .. }
            | StoreRequest::Subscribe { request, .. }
            | StoreRequest::Publish { request, .. } => Some(*request),
            StoreRequest::NoteExpiringSent { .. }
            | StoreRequest::Unsubscribe { .. }
            | StoreRequest::DetachSession { .. }
            | StoreRequest::EndSession { .. } => None,
        }
    }

    /// A short name of the operation, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            StoreRequest::CreateSession { .. } => "create",
            StoreRequest::ResumeSession { .. } => "resume",
            StoreRequest::RefreshSession { .. } => "refresh",
            StoreRequest::NoteExpiringSent { .. } => "expiring",
            StoreRequest::Subscribe { .. } => "join",
            StoreRequest::Unsubscribe { .. } => "leave",
            StoreRequest::Publish { .. } => "publish",
            StoreRequest::DetachSession { .. } => "detach",
            StoreRequest::EndSession { .. } => "end",
        }
    }
}

/// Who makes an application call ([`Output::Call`]): the session's context, for
/// the handler. The node's id is the driver's to add.
#[derive(Clone, Debug, PartialEq)]
pub struct CallContext {
    /// The session's user.
    pub sub: String,
    /// The session.
    pub session_id: String,
    /// The session's current verified claims, custom claims included.
    pub claims: Arc<Claims>,
}

/// The application's answer to an [`Output::Call`], fed back with
/// [`Input::CallResult`](super::Input::CallResult).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CallResult {
    /// The handler answered with this value (`rpc_result`).
    Ok(Payload),
    /// The handler refused (`APP_ERROR`). `details` over 4 KiB, or not a JSON
    /// object, is dropped; the message is kept.
    AppError {
        /// For people, from the application.
        message: String,
        /// For programs, from the application.
        details: Option<Payload>,
    },
    /// No handler for the method, or the method is not allowed (`METHOD_NOT_FOUND`).
    NotFound,
    /// The handler's backend is unreachable (`UNAVAILABLE`).
    Unavailable,
}

/// The driver's answer to a [`StoreRequest`] or a [`Output::Verify`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Reply {
    /// The token verified.
    Verified(Arc<Claims>),
    /// The token was refused.
    NotVerified(TokenError),
    /// `CreateSession` succeeded.
    Created {
        /// The new session (its id random, ≥ 128 bits) as this connection holds it.
        attachment: Attachment,
        /// Its resume token (random, ≥ 256 bits); the store keeps only a hash.
        resume_token: Secret,
        /// Older sessions of the user the per-user limit removed (`evict_oldest`).
        evicted: usize,
    },
    /// The token's `jti` or `sub` is revoked.
    Revoked,
    /// The per-user limit refuses a new session (policy `reject_new`).
    TooManySessions,
    /// `ResumeSession` succeeded; the session is now attached at `epoch`.
    Resumed {
        /// The session as the store kept it.
        session: Box<ResumedSession>,
        /// This connection's attachment of it.
        epoch: u64,
    },
    /// `ResumeSession` failed: unknown, wrong or spent token, grace over, revoked.
    NotFound,
    /// `RefreshSession` succeeded.
    Refreshed,
    /// `Subscribe` succeeded: every message accepted from now on is delivered.
    Subscribed,
    /// `Publish` succeeded: the message was accepted for delivery.
    Published,
    /// The store or channel layer could not be reached.
    Unavailable,
}
