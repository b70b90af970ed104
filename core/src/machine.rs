//! The per-connection session state machine.
//!
//! See [`Connection`] for the driving loop.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::channels::channel_allowed;
use crate::error::{CloseCode, ErrorCode};
use crate::jwt::{Claims, TokenError};
use crate::protocol::{
    ClientMessage, DecodeError, ErrorBody, PROTOCOL_VERSION, Payload, Secret, ServerMessage,
    decode_client_message,
};
use crate::rate::TokenBucket;

/// Timings and limits of one connection (PROTOCOL §1–§4), in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time allowed from the upgrade to a completed `auth` or `resume` [5000].
    pub auth_timeout_ms: u64,
    /// Interval of the server's WebSocket pings [25000].
    pub heartbeat_ms: u64,
    /// A connection that sends nothing for this long is closed [60000].
    pub idle_timeout_ms: u64,
    /// Longest lead of the `expiring` notice [60000].
    pub refresh_notice_ms: u64,
    /// Clock leeway; a session lives until `exp` plus this [30000].
    pub leeway_ms: u64,
    /// Largest message accepted, in bytes [65536].
    pub max_message_bytes: usize,
    /// Sustained data frames per second [100].
    pub rate_per_sec: u32,
    /// Burst of data frames [200].
    pub rate_burst: u32,
    /// Requests a client may pipeline while one is being answered [64]; more is
    /// `RATE_LIMITED`.
    pub max_queued_requests: usize,
    /// Channels one session may join at once [256]; a join over it is refused with
    /// a non-fatal `FORBIDDEN`.
    pub max_channels: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            auth_timeout_ms: 5_000,
            heartbeat_ms: 25_000,
            idle_timeout_ms: 60_000,
            refresh_notice_ms: 60_000,
            leeway_ms: 30_000,
            max_message_bytes: 64 * 1024,
            rate_per_sec: 100,
            rate_burst: 200,
            max_queued_requests: 64,
            max_channels: 256,
        }
    }
}

/// Where a connection's token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// `Authorization: Bearer` on the upgrade request.
    Header,
    /// `?access_token=` on the upgrade request (when enabled).
    Query,
    /// The first message, `auth`.
    Message,
    /// A `resume` of an earlier session.
    Resume,
}

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
    /// The publisher's `sub`.
    pub from: std::sync::Arc<str>,
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

/// The driver's answer to a [`StoreRequest`] or a [`Output::Verify`].
#[derive(Clone, Debug, PartialEq)]
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

/// Why a connection's socket is gone, as the driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerClose {
    /// The client sent a close frame with this code (`None`: no code).
    Closed(Option<u16>),
    /// The TCP connection was lost without a close frame.
    Lost,
}

/// A data frame as the driver received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text frame (already checked to be UTF-8).
    Text(&'a str),
    /// A text frame whose payload is not UTF-8.
    InvalidUtf8,
    /// A binary frame of this many bytes.
    Binary(usize),
    /// A message the transport refused for its size, of at least this many bytes.
    TooLarge(usize),
}

/// Everything that can happen to a connection, as one value: the only way in
/// ([`Connection::handle`]). No input carries an error code: the machine picks
/// every code itself from what happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Input<'a> {
    /// A data frame arrived.
    Frame(Frame<'a>),
    /// A control frame (ping or pong) arrived: activity, not counted against the rate.
    Control,
    /// The answer to an [`Output::Verify`] or a [`StoreRequest`]. Answers that match
    /// no pending request (late ones, after a close) are ignored.
    Reply(RequestId, Reply),
    /// A channel message for this session (a store notice). Delivered when the
    /// channel is joined and its `seq` is newer than the last one sent.
    Deliver(Delivery),
    /// An operator revocation reached this node (a store notice).
    Revoked {
        /// What was revoked.
        revocation: Revocation,
        /// When it was issued, in ms (for the propagation time).
        issued_at_ms: u64,
    },
    /// The session was taken over (resume elsewhere) or evicted by the per-user
    /// limit (a store notice).
    Replaced,
    /// The store may have lost notices meant for this node: a revocation may have
    /// been missed.
    NoticesLost,
    /// The outbound queue is full, or deliveries were dropped for it: the client
    /// does not read.
    OutboundFull,
    /// The server is shutting down.
    Shutdown,
    /// The socket is gone.
    PeerClosed(PeerClose),
    /// Time passed; run due timers.
    Tick,
}

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
    /// Count or log this.
    Event(Event),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Auth,
    Idle,
    Heartbeat,
    Expiring,
    Expiry,
}

const TIMER_COUNT: usize = 5;
const TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Auth,
    Timer::Idle,
    Timer::Heartbeat,
    Timer::Expiring,
    Timer::Expiry,
];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TimerTable([Option<u64>; TIMER_COUNT]);

impl TimerTable {
    fn set(&mut self, timer: Timer, at: u64) {
        self.0[timer as usize] = Some(at);
    }
    fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }
    fn get(&self, timer: Timer) -> Option<u64> {
        self.0[timer as usize]
    }
    fn next(&self) -> Option<u64> {
        self.0.iter().flatten().copied().min()
    }
    /// The earliest timer due at `now`, if any.
    fn due(&self, now: u64) -> Option<Timer> {
        TIMERS
            .iter()
            .copied()
            .filter(|t| self.get(*t).is_some_and(|at| at <= now))
            .min_by_key(|t| self.get(*t))
    }
}

/// A live session's state.
#[derive(Clone, Debug)]
struct Live {
    attachment: Attachment,
    claims: Arc<Claims>,
    authorized_at_ms: u64,
    /// `exp` of the token the `expiring` notice was last sent for.
    expiring_sent_for: Option<u64>,
    joined: BTreeSet<String>,
    last_seq: u64,
}

/// The one request being answered; later ones wait in the queue.
#[derive(Clone, Debug)]
enum InFlight {
    AuthVerify {
        id: Option<u64>,
        user_id: Option<String>,
    },
    AuthCreate {
        id: Option<u64>,
        claims: Arc<Claims>,
    },
    Resume {
        id: Option<u64>,
        last_seq: u64,
    },
    RefreshVerify {
        id: Option<u64>,
    },
    RefreshStore {
        id: Option<u64>,
        claims: Arc<Claims>,
    },
    Join {
        id: Option<u64>,
        channel: String,
    },
    Publish {
        id: Option<u64>,
    },
}

#[derive(Clone, Debug)]
enum Phase {
    /// Waiting for `auth` or `resume` (or for a header token's outcome).
    Unauthenticated,
    /// A session is attached.
    Live(Box<Live>),
    /// Over: nothing more is emitted.
    Closed,
}

/// One WebSocket connection's protocol state: authentication, session lifetime,
/// resume and channels, with no I/O.
///
/// # Driving it
/// A driver (the tokio server, the axum adapter, a test, a fuzzer) owns the socket,
/// the clock and the store, and loops:
/// 1. Feed what happened with the current time through [`handle`](Self::handle),
///    the one way in: frames, store and verifier replies, store notices, transport
///    events and timeouts are all an [`Input`].
/// 2. Drain [`poll_output`](Self::poll_output) until it returns `None`, carrying each
///    [`Output`] out in order. Requests ([`Output::Verify`], [`Output::Store`]) are
///    answered later with an [`Input::Reply`].
/// 3. Sleep until [`poll_timeout`](Self::poll_timeout) or the next event, whichever
///    comes first; at the deadline feed [`Input::Tick`].
///
/// Once [`is_closed`](Self::is_closed), inputs are ignored and nothing more is
/// emitted after the outputs already queued. The machine picks every error code;
/// the driver only renders what comes out.
///
/// Requests are answered in the order they arrive: while one waits for a reply, later
/// ones queue (up to `max_queued_requests`). Channel deliveries never wait.
#[derive(Clone, Debug)]
pub struct Connection {
    config: Arc<SessionConfig>,
    phase: Phase,
    /// The upgrade is held open until a header or query token's outcome is known.
    upgrade: Option<AuthMethod>,
    timers: TimerTable,
    rate: TokenBucket,
    in_flight: Option<(RequestId, InFlight)>,
    queue: VecDeque<Result<ClientMessage, DecodeError>>,
    next_request: u64,
    outputs: VecDeque<Output>,
}

impl Connection {
    /// A connection whose WebSocket is open and which must authenticate with its
    /// first message (`auth` or `resume`) within `auth_timeout_ms`.
    pub fn new(config: Arc<SessionConfig>, now: u64) -> Self {
        let mut conn = Connection::bare(config, now);
        conn.open_websocket(now);
        conn
    }

    /// A connection whose upgrade request carried a token (`Authorization: Bearer` or
    /// `?access_token=`). The upgrade waits: the machine asks for the token to be
    /// verified, then emits [`Output::AcceptUpgrade`] or [`Output::RejectUpgrade`].
    pub fn with_upgrade_token(
        config: Arc<SessionConfig>,
        method: AuthMethod,
        token: Secret,
        now: u64,
    ) -> Self {
        let mut conn = Connection::bare(config, now);
        conn.upgrade = Some(method);
        let request = conn.new_request();
        conn.in_flight = Some((
            request,
            InFlight::AuthVerify {
                id: None,
                user_id: None,
            },
        ));
        conn.outputs.push_back(Output::Verify {
            request,
            token,
            purpose: VerifyPurpose::Auth,
        });
        conn
    }

    fn bare(config: Arc<SessionConfig>, now: u64) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Auth, now.saturating_add(config.auth_timeout_ms));
        let rate = TokenBucket::new(config.rate_per_sec, config.rate_burst, now);
        Connection {
            config,
            phase: Phase::Unauthenticated,
            upgrade: None,
            timers,
            rate,
            in_flight: None,
            queue: VecDeque::new(),
            next_request: 0,
            outputs: VecDeque::new(),
        }
    }

    fn open_websocket(&mut self, now: u64) {
        self.timers
            .set(Timer::Idle, now.saturating_add(self.config.idle_timeout_ms));
        self.timers.set(
            Timer::Heartbeat,
            now.saturating_add(self.config.heartbeat_ms),
        );
    }

    // ----- getters -------------------------------------------------------------

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether a session is attached.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.phase, Phase::Live(_))
    }

    /// The attached session's id.
    pub fn session_id(&self) -> Option<&str> {
        self.live().map(|l| l.attachment.session_id.as_str())
    }

    /// The attached session's current claims.
    pub fn claims(&self) -> Option<&Arc<Claims>> {
        self.live().map(|l| &l.claims)
    }

    /// The attached session's user (`sub`).
    pub fn user(&self) -> Option<&str> {
        self.live().map(|l| l.claims.sub.as_str())
    }

    /// The channels the session has joined.
    pub fn joined_channels(&self) -> impl Iterator<Item = &str> {
        self.live()
            .into_iter()
            .flat_map(|l| l.joined.iter().map(String::as_str))
    }

    /// When the session ends unless refreshed (`exp` plus leeway), in ms.
    pub fn expiry_deadline(&self) -> Option<u64> {
        self.live()
            .map(|l| l.claims.exp_ms.saturating_add(self.config.leeway_ms))
    }

    /// The highest `seq` sent to the client.
    pub fn last_seq(&self) -> Option<u64> {
        self.live().map(|l| l.last_seq)
    }

    /// Whether a request is waiting for a reply.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    fn live(&self) -> Option<&Live> {
        match &self.phase {
            Phase::Live(l) => Some(l),
            _ => None,
        }
    }

    // ----- outputs -------------------------------------------------------------

    /// The next thing to do. Changed by every [`handle`](Self::handle) call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Input::Tick`] must be fed next, in ms. Changed by every
    /// [`handle`](Self::handle) call; `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.is_closed() {
            None
        } else {
            self.timers.next()
        }
    }

    // ----- inputs --------------------------------------------------------------

    /// Feeds what happened at `now`: the only way in. Due timers run first, so a
    /// late driver can never keep a session alive past its expiry.
    pub fn handle(&mut self, now: u64, input: Input<'_>) {
        self.run_timers(now);
        if self.is_closed() {
            return;
        }
        match input {
            Input::Frame(frame) => self.on_frame(now, frame),
            Input::Control => self.note_activity(now),
            Input::Reply(request, reply) => self.on_reply(now, request, reply),
            Input::Deliver(delivery) => self.on_delivery(delivery),
            Input::Revoked {
                revocation,
                issued_at_ms,
            } => self.on_revoked(&revocation, issued_at_ms),
            Input::Replaced => self.fail(None, ErrorCode::SessionReplaced),
            Input::NoticesLost => self.fail(None, ErrorCode::Internal),
            Input::OutboundFull => self.fail(None, ErrorCode::SlowConsumer),
            Input::Shutdown => self.on_shutdown(),
            Input::PeerClosed(how) => self.on_peer_closed(how),
            Input::Tick => {}
        }
    }

    /// Runs the timers due at `now`.
    fn run_timers(&mut self, now: u64) {
        while !self.is_closed() {
            let Some(timer) = self.timers.due(now) else {
                return;
            };
            self.timers.stop(timer);
            match timer {
                Timer::Auth => {
                    if !self.is_authenticated() {
                        self.fail(None, ErrorCode::AuthTimeout);
                    }
                }
                Timer::Idle => self.fail(None, ErrorCode::IdleTimeout),
                Timer::Heartbeat => {
                    self.outputs.push_back(Output::Ping);
                    self.timers.set(
                        Timer::Heartbeat,
                        now.saturating_add(self.config.heartbeat_ms),
                    );
                }
                Timer::Expiring => self.send_expiring(now),
                Timer::Expiry => self.fail(None, ErrorCode::SessionExpired),
            }
        }
    }

    fn on_frame(&mut self, now: u64, frame: Frame<'_>) {
        self.note_activity(now);
        if !self.rate.try_take(now) {
            self.outputs.push_back(Output::Event(Event::RateLimited));
            self.fail(None, ErrorCode::RateLimited);
            return;
        }
        let decoded = match frame {
            Frame::Text(text) => decode_client_message(text, self.config.max_message_bytes),
            Frame::TooLarge(_) => Err(DecodeError {
                code: ErrorCode::MessageTooLarge,
                id: None,
                reason: "message is larger than the size limit".into(),
            }),
            Frame::Binary(_) => Err(DecodeError {
                code: ErrorCode::BadRequest,
                id: None,
                reason: "binary frames are not part of the protocol".into(),
            }),
            Frame::InvalidUtf8 => {
                self.fail_with_close(
                    None,
                    ErrorCode::BadRequest,
                    "text frame is not valid UTF-8".into(),
                    CloseCode::INVALID_PAYLOAD,
                );
                return;
            }
        };
        if self.in_flight.is_some() {
            if self.queue.len() >= self.config.max_queued_requests {
                self.outputs.push_back(Output::Event(Event::RateLimited));
                self.fail(None, ErrorCode::RateLimited);
            } else {
                self.queue.push_back(decoded);
            }
            return;
        }
        self.process(decoded);
        self.drain_queue();
    }

    fn on_reply(&mut self, now: u64, request: RequestId, reply: Reply) {
        let Some((pending, _)) = &self.in_flight else {
            return;
        };
        if *pending != request {
            return;
        }
        let Some((_, step)) = self.in_flight.take() else {
            return;
        };
        self.continue_request(now, step, reply);
        self.drain_queue();
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        if delivery.seq <= live.last_seq || !live.joined.contains(&*delivery.channel) {
            return;
        }
        live.last_seq = delivery.seq;
        self.outputs.push_back(Output::Send(ServerMessage::Message {
            channel: delivery.channel,
            from: delivery.from,
            seq: delivery.seq,
            data: delivery.data,
        }));
    }

    /// A revocation closes the connection (4403) when it concerns its session
    /// or its token; a session revocation for another session leaves it alone.
    fn on_revoked(&mut self, revocation: &Revocation, issued_at_ms: u64) {
        let Some(live) = self.live() else {
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
            .push_back(Output::Event(Event::RevocationApplied { issued_at_ms }));
        self.fail(None, code);
    }

    /// The server is shutting down: close 1001, the session stays resumable.
    fn on_shutdown(&mut self) {
        if self.upgrade.is_some() {
            self.reject_upgrade(ErrorCode::Internal);
            return;
        }
        let fate = self.detach();
        self.outputs.push_back(Output::Close {
            code: CloseCode::GOING_AWAY,
            reason: "server shutting down",
        });
        self.close(Some(CloseCode::GOING_AWAY), None, fate);
    }

    /// The socket is gone. A close with 1000 ends the session for good; any other
    /// end keeps it resumable.
    fn on_peer_closed(&mut self, how: PeerClose) {
        let (code, fate) = match how {
            PeerClose::Closed(Some(1000)) => (Some(CloseCode::NORMAL), self.end_session()),
            PeerClose::Closed(code) => (code.map(CloseCode), self.detach()),
            PeerClose::Lost => (None, self.detach()),
        };
        self.close(code, None, fate);
    }

    // ----- internals -----------------------------------------------------------

    fn new_request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn note_activity(&mut self, now: u64) {
        if self.timers.get(Timer::Idle).is_some() {
            self.timers
                .set(Timer::Idle, now.saturating_add(self.config.idle_timeout_ms));
        }
    }

    fn drain_queue(&mut self) {
        while self.in_flight.is_none() && !self.is_closed() {
            let Some(next) = self.queue.pop_front() else {
                return;
            };
            self.process(next);
        }
    }

    fn process(&mut self, decoded: Result<ClientMessage, DecodeError>) {
        let msg = match decoded {
            Ok(msg) => msg,
            Err(e) => {
                self.fail_with_close(
                    e.id,
                    e.code,
                    e.reason,
                    e.code.close_code().unwrap_or(CloseCode::CLIENT_BUG),
                );
                return;
            }
        };
        let authenticated = self.is_authenticated();
        match msg {
            ClientMessage::Auth { id, .. } | ClientMessage::Resume { id, .. } if authenticated => {
                self.send(ServerMessage::error(
                    ErrorCode::AlreadyAuthenticated,
                    id,
                    false,
                ));
            }
            ClientMessage::Auth { id, token, user_id } => {
                let request = self.new_request();
                self.in_flight = Some((request, InFlight::AuthVerify { id, user_id }));
                self.outputs.push_back(Output::Verify {
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
                let request = self.new_request();
                self.in_flight = Some((request, InFlight::Resume { id, last_seq }));
                self.outputs
                    .push_back(Output::Store(StoreRequest::ResumeSession {
                        request,
                        session_id,
                        resume_token,
                    }));
            }
            other if !authenticated => {
                self.fail(other.id(), ErrorCode::NotAuthenticated);
            }
            ClientMessage::Refresh { id, token } => {
                let request = self.new_request();
                self.in_flight = Some((request, InFlight::RefreshVerify { id }));
                self.outputs.push_back(Output::Verify {
                    request,
                    token,
                    purpose: VerifyPurpose::Refresh,
                });
            }
            ClientMessage::Logout { .. } => {
                let fate = self.end_session();
                self.outputs.push_back(Output::Close {
                    code: CloseCode::NORMAL,
                    reason: "logout",
                });
                self.close(Some(CloseCode::NORMAL), None, fate);
            }
            ClientMessage::Join { id, channel } => self.join(id, channel),
            ClientMessage::Leave { id, channel } => {
                let Phase::Live(live) = &mut self.phase else {
                    return;
                };
                if live.joined.remove(&channel) {
                    let attachment = live.attachment.clone();
                    self.outputs
                        .push_back(Output::Store(StoreRequest::Unsubscribe {
                            attachment,
                            channel: channel.clone(),
                        }));
                }
                self.send(ServerMessage::Left {
                    id,
                    channel,
                    reason: None,
                });
            }
            ClientMessage::Publish { id, channel, data } => {
                let Some(live) = self.live() else {
                    return;
                };
                if !channel_allowed(live.claims.channels.as_deref(), &live.claims.sub, &channel) {
                    self.send(ServerMessage::error(ErrorCode::Forbidden, id, false));
                    return;
                }
                let from = live.claims.sub.clone();
                let request = self.new_request();
                self.in_flight = Some((request, InFlight::Publish { id }));
                self.outputs.push_back(Output::Store(StoreRequest::Publish {
                    request,
                    channel,
                    from,
                    data,
                }));
            }
        }
    }

    fn join(&mut self, id: Option<u64>, channel: String) {
        let Some(live) = self.live() else {
            return;
        };
        if live.joined.contains(&channel) {
            self.send(ServerMessage::Joined { id, channel });
            return;
        }
        if !channel_allowed(live.claims.channels.as_deref(), &live.claims.sub, &channel) {
            self.send(ServerMessage::error(ErrorCode::Forbidden, id, false));
            return;
        }
        if live.joined.len() >= self.config.max_channels {
            self.send(ServerMessage::Error {
                id,
                code: ErrorCode::Forbidden,
                message: "too many channels joined".into(),
                fatal: false,
                retry: None,
            });
            return;
        }
        let attachment = live.attachment.clone();
        let request = self.new_request();
        self.in_flight = Some((
            request,
            InFlight::Join {
                id,
                channel: channel.clone(),
            },
        ));
        self.outputs
            .push_back(Output::Store(StoreRequest::Subscribe {
                request,
                attachment,
                channel,
            }));
    }

    fn continue_request(&mut self, now: u64, step: InFlight, reply: Reply) {
        match (step, reply) {
            (InFlight::AuthVerify { id, user_id }, Reply::Verified(claims)) => {
                if user_id.is_some_and(|u| u != claims.sub) {
                    self.auth_failed(id, ErrorCode::AuthFailed);
                    return;
                }
                let request = self.new_request();
                self.in_flight = Some((
                    request,
                    InFlight::AuthCreate {
                        id,
                        claims: claims.clone(),
                    },
                ));
                self.outputs
                    .push_back(Output::Store(StoreRequest::CreateSession {
                        request,
                        claims,
                        now_ms: now,
                    }));
            }
            (InFlight::AuthVerify { id, .. }, Reply::NotVerified(e)) => {
                self.auth_failed(id, e.code());
            }
            (
                InFlight::AuthCreate { id, claims },
                Reply::Created {
                    attachment,
                    resume_token,
                    evicted,
                },
            ) => {
                if evicted > 0 {
                    self.outputs
                        .push_back(Output::Event(Event::Evicted { sessions: evicted }));
                }
                self.authenticated(now, id, claims, attachment, resume_token);
            }
            (InFlight::AuthCreate { id, claims }, Reply::Revoked) => {
                self.refused(&claims);
                self.auth_failed(id, ErrorCode::TokenRevoked);
            }
            (InFlight::AuthCreate { id, claims }, Reply::TooManySessions) => {
                self.refused(&claims);
                self.auth_failed(id, ErrorCode::TooManySessions);
            }
            (InFlight::Resume { id, last_seq }, Reply::Resumed { session, epoch }) => {
                self.resumed(now, id, last_seq, *session, epoch);
            }
            (InFlight::Resume { id, .. }, Reply::NotFound | Reply::Revoked) => {
                self.resume_failed(id, ErrorCode::SessionNotFound);
            }
            (InFlight::RefreshVerify { id }, Reply::Verified(claims)) => {
                let Some(live) = self.live() else {
                    return;
                };
                if claims.sub != live.claims.sub {
                    self.refresh_failed(id, ErrorCode::SubjectMismatch);
                    return;
                }
                let attachment = live.attachment.clone();
                let request = self.new_request();
                self.in_flight = Some((
                    request,
                    InFlight::RefreshStore {
                        id,
                        claims: claims.clone(),
                    },
                ));
                self.outputs
                    .push_back(Output::Store(StoreRequest::RefreshSession {
                        request,
                        attachment,
                        claims,
                        now_ms: now,
                    }));
            }
            (InFlight::RefreshVerify { id }, Reply::NotVerified(e)) => {
                self.refresh_failed(id, e.code());
            }
            (InFlight::RefreshStore { id, claims }, Reply::Refreshed) => {
                self.refreshed(now, id, claims);
            }
            (InFlight::RefreshStore { id, claims }, Reply::Revoked) => {
                self.refused(&claims);
                self.refresh_failed(id, ErrorCode::TokenRevoked);
            }
            (InFlight::RefreshVerify { id } | InFlight::RefreshStore { id, .. }, _) => {
                // Unavailable, or a reply that makes no sense here: the refresh
                // fails without harming the session.
                self.refresh_failed(id, ErrorCode::Internal);
            }
            (InFlight::Join { id, channel }, Reply::Subscribed) => {
                if let Phase::Live(live) = &mut self.phase {
                    live.joined.insert(channel.clone());
                }
                self.send(ServerMessage::Joined { id, channel });
            }
            (InFlight::Publish { id }, Reply::Published) => {
                self.send(ServerMessage::Published { id });
            }
            (InFlight::Join { id, .. } | InFlight::Publish { id }, _) => {
                self.send(ServerMessage::error(ErrorCode::Internal, id, false));
            }
            (InFlight::AuthVerify { id, .. } | InFlight::AuthCreate { id, .. }, _) => {
                // Unavailable (fail closed), or a reply that makes no sense here.
                self.auth_failed(id, ErrorCode::Internal);
            }
            (InFlight::Resume { id, .. }, _) => self.resume_failed(id, ErrorCode::Internal),
        }
    }

    fn authenticated(
        &mut self,
        now: u64,
        id: Option<u64>,
        claims: Arc<Claims>,
        attachment: Attachment,
        resume_token: Secret,
    ) {
        self.outputs.push_back(Output::Listen(attachment.clone()));
        let method = match self.upgrade.take() {
            Some(method) => {
                self.outputs.push_back(Output::AcceptUpgrade);
                self.open_websocket(now);
                method
            }
            None => AuthMethod::Message,
        };
        self.timers.stop(Timer::Auth);
        let expires_at = claims.exp_ms;
        let user = claims.sub.clone();
        let session_id = attachment.session_id.clone();
        self.phase = Phase::Live(Box::new(Live {
            attachment,
            claims,
            authorized_at_ms: now,
            expiring_sent_for: None,
            joined: BTreeSet::new(),
            last_seq: 0,
        }));
        self.arm_expiry_timers(now, None);
        self.send(ServerMessage::Authenticated {
            id,
            session_id,
            resume_token,
            user_id: user.clone(),
            expires_at,
            heartbeat_ms: self.config.heartbeat_ms,
            protocol: PROTOCOL_VERSION,
        });
        self.outputs
            .push_back(Output::Event(Event::Authenticated { method, user }));
    }

    fn resumed(
        &mut self,
        now: u64,
        id: Option<u64>,
        last_seq: u64,
        session: ResumedSession,
        epoch: u64,
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
        let attachment = Attachment {
            session_id: session_id.clone(),
            epoch,
        };
        // A resume is a full re-authorization: the token must still be valid (the
        // store has checked revocation).
        if now >= claims.exp_ms.saturating_add(self.config.leeway_ms) {
            self.outputs
                .push_back(Output::Store(StoreRequest::EndSession { attachment }));
            self.resume_failed(id, ErrorCode::SessionNotFound);
            return;
        }
        let (kept, dropped): (Vec<String>, Vec<String>) = channels
            .into_iter()
            .partition(|c| channel_allowed(claims.channels.as_deref(), &claims.sub, c));
        for channel in &dropped {
            self.outputs
                .push_back(Output::Store(StoreRequest::Unsubscribe {
                    attachment: attachment.clone(),
                    channel: channel.clone(),
                }));
        }
        let joined: BTreeSet<String> = kept.iter().cloned().collect();
        // The gap is judged on everything still buffered, before dropping the messages
        // of channels that are no longer allowed.
        let (replay, gap) = crate::rules::replay(buffered, last_seq, last_assigned, &joined);
        let replayed = replay.len() as u64;
        let expires_at = claims.exp_ms;
        self.timers.stop(Timer::Auth);
        self.outputs.push_back(Output::Listen(attachment.clone()));
        self.phase = Phase::Live(Box::new(Live {
            attachment,
            claims,
            authorized_at_ms,
            expiring_sent_for: expiring_sent.then_some(expires_at),
            joined,
            // What the store assigned, not what the client claims: a `last_seq` beyond
            // it must not make later live messages look like duplicates.
            last_seq: last_assigned,
        }));
        self.send(ServerMessage::Resumed {
            id,
            session_id,
            resume_token,
            expires_at,
            channels: kept,
            replayed,
            gap,
        });
        for d in replay {
            self.send(ServerMessage::Message {
                channel: d.channel,
                from: d.from,
                seq: d.seq,
                data: d.data,
            });
        }
        for channel in dropped {
            self.send(ServerMessage::Left {
                id: None,
                channel,
                reason: Some(ErrorCode::Forbidden),
            });
        }
        self.outputs
            .push_back(Output::Event(Event::Resumed { replayed, gap }));
        self.arm_expiry_timers(now, Some(authorized_at_ms));
        // A notice whose time passed while detached follows `resumed` at once.
        self.run_timers(now);
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
            .filter(|c| !channel_allowed(live.claims.channels.as_deref(), &live.claims.sub, c))
            .cloned()
            .collect();
        for c in &no_longer_allowed {
            live.joined.remove(c);
        }
        let attachment = live.attachment.clone();
        self.arm_expiry_timers(now, None);
        self.send(ServerMessage::Refreshed { id, expires_at });
        for channel in no_longer_allowed {
            self.outputs
                .push_back(Output::Store(StoreRequest::Unsubscribe {
                    attachment: attachment.clone(),
                    channel: channel.clone(),
                }));
            self.send(ServerMessage::Left {
                id: None,
                channel,
                reason: Some(ErrorCode::Forbidden),
            });
        }
        self.outputs
            .push_back(Output::Event(Event::Refreshed { remaining_ms }));
    }

    /// Arms the expiry and `expiring` timers for the live session's current token.
    /// `earlier_authorization` is the time of the auth or refresh before a resume,
    /// whose notice time still counts.
    fn arm_expiry_timers(&mut self, now: u64, earlier_authorization: Option<u64>) {
        let Some(live) = self.live() else {
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
        let already_sent = live.expiring_sent_for == Some(exp);
        let expiry = exp.saturating_add(self.config.leeway_ms);
        self.timers.set(Timer::Expiry, expiry);
        if already_sent {
            self.timers.stop(Timer::Expiring);
        } else {
            self.timers.set(Timer::Expiring, at);
        }
    }

    fn send_expiring(&mut self, now: u64) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        let expires_at = live.claims.exp_ms;
        if live.expiring_sent_for == Some(expires_at) {
            return;
        }
        live.expiring_sent_for = Some(expires_at);
        let attachment = live.attachment.clone();
        self.send(ServerMessage::Expiring {
            expires_at,
            in_ms: expires_at.saturating_sub(now),
        });
        self.outputs
            .push_back(Output::Store(StoreRequest::NoteExpiringSent { attachment }));
        self.outputs.push_back(Output::Event(Event::ExpiringSent));
    }

    fn refused(&mut self, claims: &Claims) {
        self.outputs.push_back(Output::Event(Event::Refused {
            user: claims.sub.clone(),
            jti: claims.jti.clone(),
        }));
    }

    fn refresh_failed(&mut self, id: Option<u64>, code: ErrorCode) {
        self.send(ServerMessage::error(code, id, false));
        self.outputs
            .push_back(Output::Event(Event::RefreshFailed { code }));
    }

    fn auth_failed(&mut self, id: Option<u64>, code: ErrorCode) {
        let method = self.upgrade.unwrap_or(AuthMethod::Message);
        self.outputs
            .push_back(Output::Event(Event::AuthFailed { method, code }));
        self.fail(id, code);
    }

    fn resume_failed(&mut self, id: Option<u64>, code: ErrorCode) {
        self.outputs.push_back(Output::Event(Event::AuthFailed {
            method: AuthMethod::Resume,
            code,
        }));
        self.fail(id, code);
    }

    fn send(&mut self, msg: ServerMessage) {
        self.outputs.push_back(Output::Send(msg));
    }

    /// A fatal error: the error message, the session's fate, the close.
    fn fail(&mut self, id: Option<u64>, code: ErrorCode) {
        let close = code.close_code().unwrap_or(CloseCode::CLIENT_BUG);
        self.fail_with_close(id, code, code.spec().message.into(), close);
    }

    fn fail_with_close(
        &mut self,
        id: Option<u64>,
        code: ErrorCode,
        message: std::borrow::Cow<'static, str>,
        close: CloseCode,
    ) {
        if self.is_closed() {
            return;
        }
        if self.upgrade.is_some() {
            self.reject_upgrade(code);
            return;
        }
        self.send(ServerMessage::Error {
            id,
            code,
            message,
            fatal: true,
            retry: code.retry(),
        });
        let fate = match code {
            ErrorCode::SessionReplaced => {
                if self.is_authenticated() {
                    SessionFate::Replaced
                } else {
                    SessionFate::None
                }
            }
            c if c.keeps_session_resumable() => self.detach(),
            _ => self.end_session(),
        };
        self.outputs.push_back(Output::Close {
            code: close,
            reason: code.as_str(),
        });
        self.close(Some(close), Some(code), fate);
    }

    fn reject_upgrade(&mut self, code: ErrorCode) {
        self.upgrade = None;
        self.outputs.push_back(Output::RejectUpgrade {
            status: code.http_status(),
            body: ErrorBody::new(code),
        });
        self.close(None, Some(code), SessionFate::None);
    }

    fn detach(&mut self) -> SessionFate {
        match self.live() {
            Some(live) => {
                let attachment = live.attachment.clone();
                self.outputs
                    .push_back(Output::Store(StoreRequest::DetachSession { attachment }));
                SessionFate::Detached
            }
            None => SessionFate::None,
        }
    }

    fn end_session(&mut self) -> SessionFate {
        match self.live() {
            Some(live) => {
                let attachment = live.attachment.clone();
                self.outputs
                    .push_back(Output::Store(StoreRequest::EndSession { attachment }));
                SessionFate::Ended
            }
            None => SessionFate::None,
        }
    }

    fn close(&mut self, code: Option<CloseCode>, error: Option<ErrorCode>, session: SessionFate) {
        let (user, session_id) = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Live(live) => (
                Some(live.claims.sub.clone()),
                Some(live.attachment.session_id),
            ),
            _ => (None, None),
        };
        self.timers = TimerTable::default();
        self.in_flight = None;
        self.queue.clear();
        self.upgrade = None;
        self.outputs.push_back(Output::Event(Event::Closed {
            code,
            error,
            session,
            user,
            session_id,
        }));
    }
}
