//! Session stores for wsauth: the [`Store`] trait every store implements, and
//! [`MemoryStore`], the embedded default for a single node.
//!
//! A store holds what outlives a connection: sessions and their grace period,
//! hashed single-use resume tokens, the per-user session index and its limit, the
//! revocation list, each session's replay buffer with its `seq` numbering, and
//! channel membership. It reaches the connections of its node through [`Notify`],
//! which [`hub::Hub`] implements for every driver.
//!
//! Use [`MemoryStore`] on one node, `wsauth-store-redis` on several, or implement
//! [`Store`] for a backend of your own and run the contract suite (feature
//! `contract-tests`) against it. A connection driver hands the core's store
//! requests to [`execute`]; calling the store directly looks like this:
//!
//! ```
//! use std::sync::Arc;
//! use wsauth_core::jwt::Claims;
//! use wsauth_store::hub::Hub;
//! use wsauth_store::{CreateOutcome, MemoryStore, Store, StoreSettings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new(StoreSettings::default(), Hub::new(256));
//! let now = 1_767_225_600_000; // Unix ms
//! let alice = Arc::new(Claims::new("alice", now + 3_600_000));
//!
//! let Ok(CreateOutcome::Created { session_id, resume_token, .. }) =
//!     store.create_session(alice, now).await
//! else {
//!     panic!("a first session is created");
//! };
//! // After a network drop the client resumes with its token, once.
//! let resumed = store.resume_session(&session_id, &resume_token, now + 1_000).await;
//! assert!(matches!(resumed, Ok(Some(_))));
//! let again = store.resume_session(&session_id, &resume_token, now + 2_000).await;
//! assert!(matches!(again, Ok(None)), "a resume token works once");
//! # }
//! ```

#![warn(missing_docs)]

use std::future::Future;
use std::sync::Arc;

use wsauth_core::jwt::Claims;
use wsauth_core::{Delivery, Payload, ResumedSession, Revocation, Secret};

mod execute;
pub mod hub;
mod memory;
mod secret;
mod sync;

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;

pub use execute::execute;
pub use memory::MemoryStore;
pub use secret::{hash_resume_token, new_resume_token, new_session_id};

/// What the per-user session limit does when it is reached (decided by
/// [`wsauth_core::rules::limit_decision`]).
pub use wsauth_core::rules::LimitPolicy;

/// A store's settings (PROTOCOL §3–§4), with the protocol's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// How long a detached session stays resumable \[30000\].
    pub resume_grace_ms: u64,
    /// Messages kept per session for replay \[256\].
    pub resume_buffer: usize,
    /// Bytes of messages kept per session for replay [1 MiB]; the oldest go
    /// first, and a resume that needs them reports a `gap`. 0: no byte bound.
    pub resume_buffer_bytes: usize,
    /// Bytes in all the replay buffers of an in-memory store past which new
    /// sessions are refused (`INTERNAL`) [0: no bound]. Redis bounds its own
    /// memory (`maxmemory`).
    pub replay_budget_bytes: usize,
    /// Sessions per `sub`, detached ones within grace included \[unlimited\].
    pub max_sessions_per_user: Option<usize>,
    /// What the limit does.
    pub limit_policy: LimitPolicy,
    /// How long a `sub` revocation (or a `jti` one whose token is unknown) lasts [24 h].
    pub max_token_lifetime_ms: u64,
    /// Clock leeway: a session's token is valid until `exp` plus this \[30000\].
    pub leeway_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            resume_grace_ms: 30_000,
            resume_buffer: 256,
            resume_buffer_bytes: 1024 * 1024,
            replay_budget_bytes: 0,
            max_sessions_per_user: None,
            limit_policy: LimitPolicy::EvictOldest,
            max_token_lifetime_ms: 24 * 3600 * 1000,
            leeway_ms: 30_000,
        }
    }
}

/// What a store tells a live connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// A channel message, with the `seq` the store assigned in the session's buffer.
    Deliver(Delivery),
    /// The session was taken over by a resume, or evicted by the per-user limit.
    Replaced,
    /// An operator revocation that concerns the session, issued at `at_ms` (for
    /// the propagation time).
    Revoked {
        /// What was revoked.
        revocation: Revocation,
        /// When the revocation was issued, in ms.
        at_ms: u64,
    },
}

/// How a store reaches the connections of its node. Every attach (create or
/// resume) of a session gets a new `epoch`; a notice names the epoch it is for, so
/// that the connection being replaced, not the new one, hears `Replaced`.
pub trait Notify: Send + Sync + 'static {
    /// Delivers `notice` to the connection holding `session_id` at `epoch`, if any.
    /// Must not block.
    fn notify(&self, session_id: &str, epoch: u64, notice: Notice);

    /// The store cannot rule out that notices for this node were lost (a shared
    /// store whose notice stream was trimmed or wiped while the node was away).
    /// Every live connection must close with its session resumable: the clients
    /// resume, get their replay, and every revocation is checked again.
    fn notices_lost(&self) {}
}

/// The outcome of [`Store::create_session`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The session exists and is attached at `epoch`.
    Created {
        /// Random, ≥ 128 bits.
        session_id: String,
        /// Random, ≥ 256 bits; the store keeps only its hash.
        resume_token: Secret,
        /// The attachment's epoch.
        epoch: u64,
        /// Older sessions of the user removed by the per-user limit (`evict_oldest`).
        evicted: usize,
    },
    /// The token's `jti` or `sub` is revoked.
    Revoked,
    /// The per-user limit refuses it (policy `reject_new`).
    TooManySessions,
}

/// The outcome of [`Store::refresh_session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The new token is recorded.
    Refreshed,
    /// The new token is revoked.
    Revoked,
}

/// What the admin API shows of a session: never a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session.
    pub session_id: String,
    /// Whether a connection holds it now.
    pub attached: bool,
    /// When it was created, in ms.
    pub created_at_ms: u64,
    /// Its token's `exp`, in ms.
    pub expires_at_ms: u64,
    /// Channels joined.
    pub channels: Vec<String>,
    /// The node holding (or that last held) it, when the store records nodes.
    pub node: Option<String>,
}

/// Counts, for tests and operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Sessions held (attached or within grace).
    pub sessions: usize,
    /// Revocation entries held.
    pub revocations: usize,
    /// Messages held in replay buffers.
    pub buffered: usize,
}

/// How a shared store's notices reach this node, for metrics. A store that
/// notifies directly (the in-memory one) reports zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoticeStreamStats {
    /// Times notices were trimmed from the node's stream before the node read
    /// them (found on a read).
    pub lost_trimmed: u64,
    /// Times the last notice read was gone from the stream on a reconnect
    /// (trimmed while away, or the store lost its data).
    pub lost_gone: u64,
    /// Times the stream went unread for longer than the bound
    /// (`store.max_notice_lag_ms`).
    pub lost_lag: u64,
    /// How long since the stream was last read up to date, in ms.
    pub lag_ms: u64,
}

/// Why a store call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached; the message names no secret.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A session store.
///
/// # Contract
/// Every implementation (in-memory, Redis) must keep these promises; the suite in
/// `contract` (feature `contract-tests`) checks them against both. Grace, `exp` + leeway, what a revocation
/// refuses and how long it lasts, and the per-user limit are the functions of
/// [`wsauth_core::rules`]; `contract::RULE_CASES` checks every store against them.
///
/// - **Atomicity.** `create_session` checks revocation and the per-user limit and
///   inserts in one step: two creations for one user never both pass a limit of one,
///   and a token revoked before `create_session` starts is never accepted.
///   `resume_session` verifies and spends the resume token in one step: of two racing
///   resumes with the same token, exactly one succeeds. `revoke` records the entry
///   before it returns, so no create, refresh or resume that starts afterwards accepts
///   the revoked token.
/// - **Resume tokens** are random (≥ 256 bits, URL-safe base64, prefix `r_`), stored
///   only as a SHA-256 hash, compared in constant time, single-use and rotated on every
///   resume. Session ids are random (≥ 128 bits, prefix `s_`).
/// - **Grace.** `detach` keeps a session resumable for `resume_grace_ms`; after that it
///   is gone. A detached session within grace counts toward the per-user limit.
/// - **Resume** fails (returns `None`) for an unknown id, a wrong or spent token, a
///   grace period that is over, a revoked token, or a token past `exp` + leeway. On
///   success the previous attachment, if any, is told [`Notice::Replaced`].
/// - **Epochs.** Every attach gets a new epoch. `detach`, `end_session`, `refresh`,
///   `subscribe`, `unsubscribe` and `note_expiring_sent` with a stale epoch do nothing:
///   a connection that was replaced cannot touch the session any more.
/// - **Replay buffer and `seq`.** `publish` appends the message to the buffer of every
///   session joined to the channel, attached or not, with that session's next `seq`
///   (1, 2, 3, …), keeps the last `resume_buffer` messages, and notifies
///   [`Notice::Deliver`] to the attached ones. Nothing accepted is lost between a drop
///   and a resume: the resume returns the buffer. A user's publish carries its `sub`
///   as `from`; the server's (PROTOCOL §9) carries none, with the same `seq`, buffer
///   and notices.
/// - **Send to a user.** `send_to_user(sub, …)` does what `publish` does, without
///   `from`, on the channel `user:<sub>` ([`wsauth_core::rules::user_channel`]), for every session
///   of that user the store holds and that is alive (attached, or detached within
///   grace, before `exp` + leeway) whether or not it joined that channel; it
///   returns how many sessions got the message. Another user's sessions, and the
///   user's sessions past grace, get nothing.
/// - **Revocation** by `jti` lasts until the token's `exp` when a stored session knows
///   it, else `max_token_lifetime_ms`; by `sub` it refuses tokens of that user with `iat`
///   at or before the revocation time (or no `iat`) for `max_token_lifetime_ms`. `revoke`
///   removes every stored session it concerns and notifies the attached ones with
///   [`Notice::Revoked`]; it returns how many connections were told.
/// - **Nothing grows forever.** `purge_expired` drops sessions past grace or past their
///   token's `exp` + leeway, and revocation entries past their time.
/// - Notices are sent after the store's own state is updated, never while a lock is
///   held, and reach [`Notify`] in the order the state changed. A store may deliver
///   them after the call returns (Redis: through the node's stream); [`Store::settle`]
///   waits for them.
pub trait Store: Send + Sync + 'static {
    /// Creates a session for verified claims.
    fn create_session(
        &self,
        claims: Arc<Claims>,
        now_ms: u64,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// Spends the resume token and attaches the session to the caller.
    fn resume_session(
        &self,
        session_id: &str,
        resume_token: &Secret,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<(ResumedSession, u64)>, StoreError>> + Send;

    /// Records a refreshed token, unless it is revoked.
    fn refresh_session(
        &self,
        session_id: &str,
        epoch: u64,
        claims: Arc<Claims>,
        now_ms: u64,
    ) -> impl Future<Output = Result<RefreshOutcome, StoreError>> + Send;

    /// Records that the `expiring` notice went out for the current token.
    fn note_expiring_sent(
        &self,
        session_id: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Joins a channel: every message published afterwards reaches the session.
    fn subscribe(
        &self,
        session_id: &str,
        epoch: u64,
        channel: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Leaves a channel.
    fn unsubscribe(
        &self,
        session_id: &str,
        epoch: u64,
        channel: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Publishes to a channel; returns how many sessions got the message. `from` is
    /// the publishing user's `sub`, or `None` when the server publishes.
    fn publish(
        &self,
        channel: &str,
        from: Option<&str>,
        data: Payload,
        now_ms: u64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Sends a message, without `from`, to every live or resumable session of user
    /// `sub`, on the channel `user:<sub>` whether or not the session joined it;
    /// returns how many sessions got the message (PROTOCOL §9).
    fn send_to_user(
        &self,
        sub: &str,
        data: Payload,
        now_ms: u64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The connection at `epoch` is gone; the session stays resumable for the grace.
    fn detach(
        &self,
        session_id: &str,
        epoch: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The session ends for good.
    fn end_session(
        &self,
        session_id: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a revocation and closes what it concerns.
    fn revoke(
        &self,
        revocation: Revocation,
        now_ms: u64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// One session, live or resumable, if the store has it.
    fn session(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<Option<SessionInfo>, StoreError>> + Send;

    /// A user's sessions, live and resumable.
    fn sessions_of(
        &self,
        sub: &str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, StoreError>> + Send;

    /// Whether a token with these claims is revoked now.
    fn is_revoked(
        &self,
        claims: &Claims,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Whether the store answers (readiness).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Drops what has expired.
    fn purge_expired(&self, now_ms: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Counts, for tests and operators.
    fn stats(&self) -> impl Future<Output = Result<StoreStats, StoreError>> + Send;

    /// Waits until every notice caused by calls that have returned has reached this
    /// node's [`Notify`]. A store that notifies before its calls return (the
    /// in-memory one) has nothing to wait for.
    fn settle(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    /// How this node's notices have fared, for metrics ([`Notify::notices_lost`]
    /// by why, and the current lag). Zeros for a store without a notice stream.
    fn notice_stream(&self) -> NoticeStreamStats {
        NoticeStreamStats::default()
    }
}
