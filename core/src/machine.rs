//! The per-connection session state machine.
//!
//! See [`Connection`] for the driving loop. The connection is in one of three
//! phases (awaiting authentication, live, closed), each a type that owns exactly
//! the state valid in it (`phase.rs`); the other files split the machine by phase:
//! `awaiting.rs` (auth and resume), `live.rs` (refresh, expiry, channels),
//! `ending.rs` (every way a connection closes), `frames.rs` (frames, the request
//! queue, replies), `timers.rs`, and the public types in `config.rs`, `input.rs`,
//! `output.rs` and `requests.rs`.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::ErrorCode;
use crate::jwt::Claims;
use crate::protocol::{Secret, ServerMessage};

mod awaiting;
mod calls;
mod config;
mod ending;
mod frames;
mod input;
mod live;
mod output;
mod phase;
mod requests;
mod timers;

pub use config::SessionConfig;
pub use input::{AuthMethod, Frame, Input, PeerClose};
pub use output::{CallOutcome, Event, Output, SessionFate, VerifyPurpose};
pub use requests::{
    Attachment, CallContext, CallResult, Delivery, Reply, RequestId, ResumedSession, Revocation,
    StoreRequest,
};

use phase::{AuthStep, AwaitingAuth, Open, Phase};

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
///    answered later with an [`Input::Reply`], application calls ([`Output::Call`])
///    with an [`Input::CallResult`].
/// 3. Sleep until [`poll_timeout`](Self::poll_timeout) or the next event, whichever
///    comes first; at the deadline feed [`Input::Tick`].
///
/// Once [`is_closed`](Self::is_closed), inputs are ignored and nothing more is
/// emitted after the outputs already queued. The machine picks every error code;
/// the driver only renders what comes out.
///
/// Requests are answered in the order they arrive: while one waits for a reply, later
/// ones queue (up to `max_queued_requests`). Channel deliveries never wait, and
/// neither do application calls ([`Output::Call`]): up to `max_rpc_in_flight` run
/// side by side, and their results may overtake each other and other requests.
#[derive(Clone, Debug)]
pub struct Connection {
    config: Arc<SessionConfig>,
    phase: Phase,
    request_ids: RequestIds,
    /// Outputs outlive phases: the close's outputs are drained after it.
    outputs: Outputs,
}

/// Numbers the requests of one connection, from 1.
#[derive(Clone, Debug, Default)]
struct RequestIds(u64);

impl RequestIds {
    fn next(&mut self) -> RequestId {
        self.0 += 1;
        RequestId(self.0)
    }
}

/// The queue [`Connection::poll_output`] drains.
#[derive(Clone, Debug, Default)]
struct Outputs(VecDeque<Output>);

impl Outputs {
    fn push(&mut self, output: Output) {
        self.0.push_back(output);
    }
    fn send(&mut self, msg: ServerMessage) {
        self.push(Output::Send(msg));
    }
    fn store(&mut self, request: StoreRequest) {
        self.push(Output::Store(request));
    }
    fn event(&mut self, event: Event) {
        self.push(Output::Event(event));
    }
    /// The store refused a token this connection presented.
    fn refused(&mut self, claims: &Claims) {
        self.event(Event::Refused {
            user: claims.sub.clone(),
            jti: claims.jti.clone(),
        });
    }
    /// A channel message, sent to the client.
    fn message(&mut self, delivery: Delivery) {
        self.send(ServerMessage::Message {
            channel: delivery.channel,
            from: delivery.from,
            seq: delivery.seq,
            data: delivery.data,
        });
    }
    /// The session left a channel its token no longer allows.
    fn left_forbidden(&mut self, channel: String) {
        self.send(ServerMessage::Left {
            id: None,
            channel,
            reason: Some(ErrorCode::Forbidden),
        });
    }
}

impl Connection {
    /// A connection whose WebSocket is open and which must authenticate with its
    /// first message (`auth` or `resume`) within `auth_timeout_ms`.
    pub fn new(config: Arc<SessionConfig>, now: u64) -> Self {
        let mut open = Open::new(&config, now);
        open.open_websocket(&config, now);
        let awaiting = AwaitingAuth {
            open,
            upgrade: None,
            pending: None,
        };
        Connection {
            config,
            phase: Phase::AwaitingAuth(awaiting),
            request_ids: RequestIds::default(),
            outputs: Outputs::default(),
        }
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
        let mut request_ids = RequestIds::default();
        let request = request_ids.next();
        let verify = AuthStep::Verify {
            id: None,
            user_id: None,
        };
        let awaiting = AwaitingAuth {
            open: Open::new(&config, now),
            upgrade: Some(method),
            pending: Some((request, verify)),
        };
        let mut outputs = Outputs::default();
        outputs.push(Output::Verify {
            request,
            token,
            purpose: VerifyPurpose::Auth,
        });
        Connection {
            config,
            phase: Phase::AwaitingAuth(awaiting),
            request_ids,
            outputs,
        }
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

    /// Whether the WebSocket upgrade is held open until a header or query token's
    /// outcome is known ([`Output::AcceptUpgrade`] or [`Output::RejectUpgrade`]).
    pub fn awaits_upgrade(&self) -> bool {
        self.phase.upgrade().is_some()
    }

    /// The attached session's id.
    pub fn session_id(&self) -> Option<&str> {
        self.phase.live().map(|l| l.attachment.session_id.as_str())
    }

    /// The attached session's current claims.
    pub fn claims(&self) -> Option<&Arc<Claims>> {
        self.phase.live().map(|l| &l.claims)
    }

    /// The attached session's user (`sub`).
    pub fn user(&self) -> Option<&str> {
        self.phase.live().map(|l| l.claims.sub.as_str())
    }

    /// The channels the session has joined.
    pub fn joined_channels(&self) -> impl Iterator<Item = &str> {
        self.phase
            .live()
            .into_iter()
            .flat_map(|l| l.joined.iter().map(String::as_str))
    }

    /// When the session ends unless refreshed (`exp` plus leeway), in ms.
    pub fn expiry_deadline(&self) -> Option<u64> {
        self.phase
            .live()
            .map(|l| crate::rules::token_ends_at(l.claims.exp_ms, self.config.leeway_ms))
    }

    /// The highest `seq` sent to the client.
    pub fn last_seq(&self) -> Option<u64> {
        self.phase.live().map(|l| l.last_seq)
    }

    /// Whether a request is waiting for a reply (application calls aside).
    pub fn is_busy(&self) -> bool {
        self.phase.is_busy()
    }

    /// How many application calls wait for their result.
    pub fn calls_in_flight(&self) -> usize {
        self.phase.live().map_or(0, |l| l.calls.len())
    }

    // ----- outputs -------------------------------------------------------------

    /// The next thing to do. Changed by every [`handle`](Self::handle) call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.0.pop_front()
    }

    /// When [`Input::Tick`] must be fed next, in ms. Changed by every
    /// [`handle`](Self::handle) call; `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.phase.open().and_then(|open| open.timers.next())
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
            Input::Control => self.on_frames(now, 1, true),
            Input::Continuations(n) => self.on_frames(now, n, false),
            Input::Reply(request, reply) => self.on_reply(now, request, reply),
            Input::CallResult(request, result) => self.on_call_result(request, result),
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
        // A reply can arm a timer that is already due (a token that expired while
        // the store answered): it fires now, not at the next input.
        self.run_timers(now);
    }

    fn note_activity(&mut self, now: u64) {
        if let Some(open) = self.phase.open_mut() {
            open.note_activity(&self.config, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{Claims, TokenError};
    use crate::protocol::Secret;

    const NOW: u64 = 1_767_225_600_000;

    fn with_header_token() -> (Connection, RequestId) {
        let config = Arc::new(SessionConfig::default());
        let mut conn =
            Connection::with_upgrade_token(config, AuthMethod::Header, Secret::new("t"), NOW);
        let Some(Output::Verify { request, .. }) = conn.poll_output() else {
            panic!("a header token is verified first");
        };
        (conn, request)
    }

    #[test]
    fn the_upgrade_is_awaited_only_until_the_tokens_outcome() {
        let plain = Connection::new(Arc::new(SessionConfig::default()), NOW);
        assert!(
            !plain.awaits_upgrade(),
            "no token: the upgrade completes at once"
        );

        let (mut refused, request) = with_header_token();
        assert!(refused.awaits_upgrade());
        refused.handle(
            NOW,
            Input::Reply(request, Reply::NotVerified(TokenError::Expired)),
        );
        assert!(!refused.awaits_upgrade());
        assert!(refused.is_closed());

        let (mut accepted, request) = with_header_token();
        let claims = Arc::new(Claims::new("alice", NOW + 3_600_000));
        accepted.handle(NOW, Input::Reply(request, Reply::Verified(claims)));
        assert!(accepted.awaits_upgrade(), "still waiting for the store");
        let Some(Output::Store(StoreRequest::CreateSession { request, .. })) =
            accepted.poll_output()
        else {
            panic!("the session is created before the upgrade");
        };
        let created = Reply::Created {
            attachment: Attachment {
                session_id: "s_1".into(),
                epoch: 1,
            },
            resume_token: Secret::new("r_1"),
            evicted: 0,
        };
        accepted.handle(NOW, Input::Reply(request, created));
        assert!(!accepted.awaits_upgrade());
        assert!(accepted.is_authenticated());
    }
}
