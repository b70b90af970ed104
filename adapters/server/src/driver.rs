//! The connection driver both transports share: one task per WebSocket that feeds
//! the core's [`Connection`] with frames, store replies, notices, timers and the
//! shutdown, and carries out what the core decides. No protocol decision is taken
//! here, and nothing here knows which WebSocket library moves the frames: a
//! [`Transport`] says what a frame is to the core and how to make the three kinds
//! of frame the core sends.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, Stream, StreamExt};
use tracing::{debug, info};
use wsauth_core::{
    AuthMethod, CallResult, CloseCode, Connection, ErrorBody, ErrorCode, Event, Frame, Input,
    Output, PeerClose, Reply, RequestId, Secret, SessionFate, StoreRequest, VerifyPurpose,
};
use wsauth_store::Store;
use wsauth_store::hub::{ConnEvent, Mailbox};

use crate::app::{CallContext, SessionEnd, SessionStart};
use crate::limits::IpGuard;
use crate::meter::FrameCount;
use crate::outbound::Outbound;
use crate::state::{Shared, now_ms};
use crate::verify::TokenVerifier;
use wsauth_core::jwt::TokenError;

/// When the writer task ends (never while there is none).
async fn writer_end(
    writer: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<(), tokio::task::JoinError> {
    match writer {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Frames read after the server's close while waiting for the client's: a client's last
/// messages in flight, not a flood's.
const FRAMES_AFTER_CLOSE: u32 = 64;

/// When the frame meter reports (never without one).
async fn frames_reported(frames: &Option<Arc<FrameCount>>) {
    match frames {
        Some(count) => count.reported().await,
        None => std::future::pending().await,
    }
}

/// The reply a verification's result is to the core.
fn reply_of(
    verified: Result<Arc<wsauth_core::jwt::Claims>, wsauth_core::jwt::TokenError>,
) -> Reply {
    match verified {
        Ok(claims) => Reply::Verified(claims),
        Err(e) => Reply::NotVerified(e),
    }
}

/// A WebSocket library as the driver uses it: its socket, a stream of frames
/// read and a sink of frames to write in the library's own message type, and
/// what those frames are to the core. Implemented by a marker type of the
/// adapter (the socket type is usually not the adapter's own).
pub trait Transport: 'static {
    /// The upgraded socket.
    type Socket: Stream<Item = Result<Self::Message, Self::ReadError>>
        + Sink<Self::Message>
        + Unpin
        + Send
        + 'static;
    /// The library's message type.
    type Message: Send + 'static;
    /// Why a read failed.
    type ReadError: std::fmt::Display;

    /// A text frame carrying `json`.
    fn text(json: String) -> Self::Message;
    /// A ping.
    fn ping() -> Self::Message;
    /// A close frame.
    fn close(code: u16, reason: &'static str) -> Self::Message;
    /// What a frame read (or a read failure) is to the core; `Err` when the
    /// socket failed (logged, then fed as a lost connection).
    fn input(frame: &Result<Self::Message, Self::ReadError>)
    -> Result<Input<'_>, &Self::ReadError>;
}

/// Why the upgrade is refused: the HTTP status and JSON body to answer with, or
/// `None` when the connection is only dropped.
pub type Refusal = Option<(u16, ErrorBody)>;

/// A store call under way: the request it answers, if any, and its reply.
type StoreCall = Pin<Box<dyn Future<Output = Option<(RequestId, Reply)>> + Send>>;

/// The connection's store calls, carried out one at a time in the order the core
/// asked for them, while the connection keeps reading frames, timers and notices.
#[derive(Default)]
struct StoreCalls {
    waiting: VecDeque<StoreRequest>,
    current: Option<StoreCall>,
    /// Deliveries that came while `current` was under way: they go in after its
    /// reply. Redis sends a publish's own delivery (and a message on a channel
    /// being joined) before the call's reply; fed first, it would overtake
    /// `published`, or be dropped for a channel not joined yet.
    held: VecDeque<wsauth_core::Delivery>,
}

/// An application call under way on its own task: the request it answers, and
/// the result with how long the handler took.
type AppCall = Pin<Box<dyn Future<Output = (RequestId, CallResult, Duration)> + Send>>;

/// A verification that had to wait (introspection, a JWKS refetch, an
/// embedder's remote check), on its own task: the request it answers, the
/// reply, and how long it took.
type VerifyCall = Pin<Box<dyn Future<Output = (RequestId, Reply, Duration)> + Send>>;

/// One connection, from its upgrade request to its end.
pub struct Driver<S: Store, T: Transport> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    started: Instant,
    conn: Connection,
    out: Arc<Outbound<T::Message>>,
    mailbox: Option<Mailbox>,
    unauthenticated: Option<IpGuard>,
    store_calls: StoreCalls,
    /// When the verification of a refresh started, for its round-trip metric.
    refresh_started: Option<Instant>,
    /// The application calls under way, answered in any order.
    calls: FuturesUnordered<AppCall>,
    /// The verifications under way.
    verifies: FuturesUnordered<VerifyCall>,
    /// The continuation frames the transport counts below the WebSocket
    /// library, when it can ([`crate::meter`]).
    frames: Option<Arc<FrameCount>>,
    /// The session the application was told started on this connection, so
    /// that it is told of its end once.
    started_session: Option<(String, String)>,
}

impl<S: Store, T: Transport> Driver<S, T> {
    /// The driver of a connection from `peer`, accepted at `started`, counted in
    /// the per-IP cap until it authenticates; `token` is the upgrade's header or
    /// query token, if any (as `inspect_upgrade` found it).
    pub fn new(
        shared: Arc<Shared<S>>,
        peer: SocketAddr,
        started: Instant,
        unauthenticated: IpGuard,
        token: Option<(AuthMethod, Secret)>,
    ) -> Self {
        let config = shared.session_config.clone();
        let conn = match token {
            Some((method, token)) => {
                Connection::with_upgrade_token(config, method, token, now_ms())
            }
            None => Connection::new(config, now_ms()),
        };
        Driver {
            out: Outbound::new(
                shared.config.limits.outbound_queue,
                shared.config.limits.outbound_queue_bytes,
            ),
            shared,
            peer,
            started,
            conn,
            mailbox: None,
            unauthenticated: Some(unauthenticated),
            store_calls: StoreCalls::default(),
            refresh_started: None,
            calls: FuturesUnordered::new(),
            verifies: FuturesUnordered::new(),
            frames: None,
            started_session: None,
        }
    }

    /// With a header or query token: verifies it and creates the session before
    /// the `101` (what is sent then goes out first once the socket exists).
    /// Without one, `Ok` at once.
    pub async fn authenticate_before_upgrade(&mut self) -> Result<(), Refusal> {
        if !self.conn.awaits_upgrade() {
            return Ok(());
        }
        loop {
            if let Some(output) = self.conn.poll_output() {
                match output {
                    Output::AcceptUpgrade => return Ok(()),
                    Output::RejectUpgrade { status, body } => {
                        self.shared.metrics.upgrade_refused(body.code);
                        self.finish_events();
                        return Err(Some((status, body)));
                    }
                    Output::Send(msg) => self.out.push_final(T::text(msg.to_json())),
                    other => self.carry_out(other),
                }
                continue;
            }
            if self.has_store_calls() {
                self.finish_store_calls().await;
                continue;
            }
            if let Some((request, reply, took)) = self.verifies.next().await {
                self.verified(request, reply, took);
                continue;
            }
            // Waiting on nothing: only a timer can move the machine now.
            match self.conn.poll_timeout() {
                Some(at) => {
                    sleep_until_ms(at).await;
                    self.conn.handle(now_ms(), Input::Tick);
                }
                None => return Err(None),
            }
        }
    }

    /// The upgrade could not be completed: what the connection owes the store
    /// (a session created before the upgrade) is carried out.
    pub async fn socket_lost(mut self) {
        self.conn
            .handle(now_ms(), Input::PeerClosed(PeerClose::Lost));
        self.drain_without_socket().await;
    }

    /// Logs the remaining events of a connection that never got a socket.
    fn finish_events(&mut self) {
        while let Some(output) = self.conn.poll_output() {
            if let Output::Event(e) = output {
                self.event(e);
            }
        }
    }

    /// Carries out what a connection that lost its socket still owes the store.
    async fn drain_without_socket(&mut self) {
        loop {
            while let Some(output) = self.conn.poll_output() {
                match output {
                    Output::Store(req) => self.store_calls.waiting.push_back(req),
                    Output::Event(e) => self.event(e),
                    _ => {}
                }
            }
            if !self.has_store_calls() {
                return;
            }
            self.finish_store_calls().await;
        }
    }

    /// Feeds the core the continuation frames `count` receives (the transport
    /// counts them below the WebSocket library).
    pub fn count_frames(&mut self, count: Arc<FrameCount>) {
        self.frames = Some(count);
    }

    /// Runs the connection on its upgraded socket until it ends.
    pub async fn run(mut self, ws: T::Socket) {
        let (sink, mut stream) = ws.split();
        let mut writer = Some(tokio::spawn(self.out.clone().run_writer(sink)));
        let mut shutdown = self.shared.shutdown.clone();
        self.pump().await;
        while !self.conn.is_closed() {
            let deadline = self.conn.poll_timeout();
            tokio::select! {
                // The writer stopped before the connection ended: the socket
                // failed under it. The session ends as for a lost peer.
                ended = writer_end(&mut writer) => {
                    writer = None;
                    debug!(peer = %self.peer, failed = ?ended.err(), "the socket's writer stopped");
                    self.conn.handle(now_ms(), Input::PeerClosed(PeerClose::Lost));
                }
                () = frames_reported(&self.frames) => {
                    let counted = self.frames.as_ref().map_or(0, |f| f.take());
                    if counted > 0 {
                        self.conn.handle(now_ms(), Input::Continuations(counted));
                    }
                }
                frame = stream.next() => {
                    let input = self.frame_input(&frame);
                    self.conn.handle(now_ms(), input);
                }
                // Past the hub's bound, held deliveries wait in the mailbox, where
                // the hub's overflow rule (SLOW_CONSUMER) applies.
                event = recv_mailbox(&mut self.mailbox), if self.may_read_notices() => {
                    match event {
                        Some(ConnEvent::Deliver(d)) if self.store_calls.current.is_some() => {
                            self.store_calls.held.push_back(*d);
                        }
                        // Revocations, takeovers and lost notices act at once, even
                        // while a store call waits.
                        Some(event) => self.conn.handle(now_ms(), notice_input(event)),
                        None => self.mailbox = None,
                    }
                }
                answer = next_answer(&mut self.store_calls.current) => {
                    self.store_calls.current = None;
                    self.answered(answer);
                }
                Some((request, reply, took)) = self.verifies.next(), if !self.verifies.is_empty() => {
                    self.verified(request, reply, took);
                }
                Some((request, result, took)) = self.calls.next(), if !self.calls.is_empty() => {
                    self.shared.metrics.call_answered(took);
                    self.conn.handle(now_ms(), Input::CallResult(request, result));
                }
                () = sleep_until_opt(deadline) => self.conn.handle(now_ms(), Input::Tick),
                _ = shutdown.changed() => self.conn.handle(now_ms(), Input::Shutdown),
            }
            self.pump().await;
        }
        self.mailbox = None;
        self.out.finish();
        // What the session still owes the store (detach, end) is done before the
        // task ends, so a resume elsewhere finds the session in its final state.
        self.drain_without_socket().await;
        // Let the writer send what is queued and the close frame; a client that does
        // not read does not hold the task for long.
        if let Some(mut writer) = writer
            && tokio::time::timeout(Duration::from_secs(2), &mut writer)
                .await
                .is_err()
        {
            writer.abort();
        }
        // Give the client a moment to answer the close, then drop the socket. Only a few
        // frames are read: what a client sent before it saw the close. No budget counts
        // frames here; reading a flood that goes on (or the megabytes of it the kernel
        // holds) for the whole moment cost about 40 ms of CPU per closed socket. A client
        // still sending is not read further but its socket is held for the rest of the
        // moment: dropped with unread data, it would be reset, and the reset can destroy
        // the close frame before the client reads it.
        let frames = self.frames.clone();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let mut read = 0;
            while read < FRAMES_AFTER_CLOSE {
                tokio::select! {
                    next = stream.next() => match next {
                        Some(Ok(_)) => read += 1,
                        _ => return,
                    },
                    // Continuation frames never come out of the stream: a report of
                    // them is a client still flooding.
                    () = frames_reported(&frames) => {
                        if frames.as_ref().is_some_and(|f| f.take() > 0) {
                            break;
                        }
                    }
                }
            }
            std::future::pending::<()>().await
        })
        .await;
    }

    /// What a frame (or its absence) from the socket is to the core.
    fn frame_input<'f>(&self, frame: &'f Option<Result<T::Message, T::ReadError>>) -> Input<'f> {
        let Some(frame) = frame else {
            return Input::PeerClosed(PeerClose::Lost);
        };
        match T::input(frame) {
            Ok(input) => {
                if let Input::Frame(Frame::Text(_) | Frame::Binary(_)) = input {
                    self.shared.metrics.message_in();
                }
                input
            }
            Err(e) => {
                debug!(peer = %self.peer, error = %e, "socket error");
                Input::PeerClosed(PeerClose::Lost)
            }
        }
    }

    /// Carries out every output the core has, starting store calls as they come;
    /// a store that answers at once (the in-memory one) is answered here, without
    /// a turn of the event loop.
    async fn pump(&mut self) {
        loop {
            while let Some(output) = self.conn.poll_output() {
                self.carry_out(output);
            }
            if !self.start_store_call().await {
                return;
            }
        }
    }

    /// Starts the next store call if none is under way. `true` when it finished at
    /// once and its reply was fed to the core (which may have more outputs).
    async fn start_store_call(&mut self) -> bool {
        if self.store_calls.current.is_some() {
            return false;
        }
        let Some(request) = self.store_calls.waiting.pop_front() else {
            return false;
        };
        let mut call = self.store_call(request);
        let polled = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        match polled {
            Poll::Ready(answer) => {
                self.answered(answer);
                true
            }
            Poll::Pending => {
                self.store_calls.current = Some(call);
                false
            }
        }
    }

    fn may_read_notices(&self) -> bool {
        self.store_calls.current.is_none()
            || self.store_calls.held.len() < self.shared.config.limits.outbound_queue
    }

    /// Feeds a store call's reply, then the deliveries that came while it was
    /// under way.
    fn answered(&mut self, answer: Option<(RequestId, Reply)>) {
        if let Some((request, reply)) = answer {
            self.conn.handle(now_ms(), Input::Reply(request, reply));
        }
        while let Some(delivery) = self.store_calls.held.pop_front() {
            self.conn.handle(now_ms(), Input::Deliver(delivery));
        }
    }

    fn has_store_calls(&self) -> bool {
        self.store_calls.current.is_some() || !self.store_calls.waiting.is_empty()
    }

    /// Waits for every store call asked for so far, feeding the replies.
    async fn finish_store_calls(&mut self) {
        while self.has_store_calls() {
            let call = match self.store_calls.current.take() {
                Some(call) => call,
                None => match self.store_calls.waiting.pop_front() {
                    Some(request) => self.store_call(request),
                    None => return,
                },
            };
            let answer = call.await;
            self.answered(answer);
        }
    }

    /// One store call with its deadline, log line and metrics; a failure or a
    /// timeout answers `Unavailable` (the core then fails closed).
    fn store_call(&self, request: StoreRequest) -> StoreCall {
        let shared = self.shared.clone();
        Box::pin(async move {
            let op = request.name();
            let reply_to = request.reply_to();
            let started = Instant::now();
            let executed = tokio::time::timeout(
                shared.store_timeout,
                wsauth_store::execute(&*shared.store, request, now_ms()),
            )
            .await;
            let ok = matches!(executed, Ok(Ok(_)));
            let reply = match executed {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, op, "store unavailable");
                    None
                }
                Err(_) => {
                    tracing::warn!(op, "store call timed out");
                    None
                }
            };
            shared.metrics.store_call(op, started.elapsed(), ok);
            reply_to.map(|request| (request, reply.unwrap_or(Reply::Unavailable)))
        })
    }

    /// Carries out one output, except the store calls, which are queued.
    fn carry_out(&mut self, output: Output) {
        match output {
            Output::Send(msg) => {
                self.shared.metrics.message_out();
                let json = msg.to_json();
                let bytes = json.len();
                let frame = T::text(json);
                if self.conn.is_closed() {
                    // The error and close that end a connection are bounded by that end.
                    self.out.push_final(frame);
                } else if !self.out.push(frame, bytes) {
                    self.conn.handle(now_ms(), Input::OutboundFull);
                }
            }
            Output::Ping => {
                self.out.push_final(T::ping());
            }
            Output::Close { code, reason } => self.out.close(T::close(code.0, reason)),
            Output::Verify {
                request,
                token,
                purpose,
            } => {
                let started = Instant::now();
                if purpose == VerifyPurpose::Refresh {
                    self.refresh_started = Some(started);
                }
                let now = now_ms();
                match self.shared.verifier.verify_now(token.expose(), now) {
                    Some(verified) => self.verified(request, reply_of(verified), started.elapsed()),
                    None => {
                        let verifier = self.shared.verifier.clone();
                        let task = tokio::spawn(async move {
                            reply_of(verifier.verify(token.expose(), now).await)
                        });
                        self.verifies.push(Box::pin(async move {
                            // A verifier that panicked fails closed.
                            let reply = task
                                .await
                                .unwrap_or(Reply::NotVerified(TokenError::Unavailable));
                            (request, reply, started.elapsed())
                        }));
                    }
                }
            }
            Output::Store(request) => self.store_calls.waiting.push_back(request),
            Output::Listen(attachment) => {
                self.mailbox = Some(
                    self.shared
                        .hub
                        .register(&attachment.session_id, attachment.epoch),
                );
                // Authenticated: no longer counted against the per-IP cap.
                self.unauthenticated = None;
            }
            Output::Call {
                request,
                method,
                data,
                context,
            } => self.call(request, method, data, context),
            Output::Event(e) => self.event(e),
            Output::AcceptUpgrade | Output::RejectUpgrade { .. } => {}
        }
    }

    /// Feeds a verification's answer.
    fn verified(&mut self, request: RequestId, reply: Reply, took: Duration) {
        self.shared.metrics.verified(took);
        self.conn.handle(now_ms(), Input::Reply(request, reply));
    }

    /// Starts an application call on a task of its own (a handler that panics
    /// or outlives `rpc_timeout_ms` answers `UNAVAILABLE`); a method no handler
    /// takes is answered at once.
    fn call(
        &mut self,
        request: RequestId,
        method: String,
        data: wsauth_core::protocol::Payload,
        context: wsauth_core::CallContext,
    ) {
        let context = CallContext {
            sub: context.sub,
            session_id: context.session_id,
            claims: context.claims,
            node: self.shared.node.clone(),
        };
        let Some(handler) = self.shared.app.call(method.clone(), data, context) else {
            self.conn
                .handle(now_ms(), Input::CallResult(request, CallResult::NotFound));
            return;
        };
        let limit = Duration::from_millis(self.shared.config.app.rpc_timeout_ms);
        let started = Instant::now();
        let task = tokio::spawn(tokio::time::timeout(limit, handler));
        self.calls.push(Box::pin(async move {
            let result = match task.await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => CallResult::Unavailable,
                Err(e) => {
                    tracing::warn!(%method, panicked = e.is_panic(), "call handler failed");
                    CallResult::Unavailable
                }
            };
            (request, result, started.elapsed())
        }));
    }

    /// Tells the application that this connection's session started or ended.
    fn tell_app(&mut self, event: &Event) {
        match event {
            Event::Authenticated { .. } | Event::Resumed { .. } => {
                let (Some(claims), Some(session_id)) = (self.conn.claims(), self.conn.session_id())
                else {
                    return;
                };
                let start = SessionStart {
                    sub: claims.sub.clone(),
                    session_id: session_id.to_owned(),
                    claims: claims.clone(),
                    node: self.shared.node.clone(),
                    resumed: matches!(event, Event::Resumed { .. }),
                };
                self.started_session = Some((start.sub.clone(), start.session_id.clone()));
                self.shared.app.session_started(start);
            }
            Event::Closed { error, session, .. } => {
                if let Some((sub, session_id)) = self.started_session.take() {
                    self.shared.app.session_ended(SessionEnd {
                        sub,
                        session_id,
                        node: self.shared.node.clone(),
                        reason: *error,
                        resumable: *session == SessionFate::Detached,
                    });
                }
            }
            _ => {}
        }
    }

    fn event(&mut self, event: Event) {
        self.tell_app(&event);
        let metrics = &self.shared.metrics;
        metrics.event(&event, self.started.elapsed());
        match event {
            Event::Refreshed { .. } | Event::RefreshFailed { .. } => {
                if let Some(started) = self.refresh_started.take() {
                    metrics.refresh_answered(started.elapsed());
                }
            }
            Event::Authenticated { method, user } => {
                debug!(peer = %self.peer, %user, ?method, "authenticated");
            }
            Event::Closed {
                code,
                error,
                session,
                user,
                session_id,
            } => {
                info!(
                    peer = %self.peer,
                    user = user.as_deref().unwrap_or("-"),
                    session = session_id.as_deref().unwrap_or("-"),
                    close = code.map_or(0, |c: CloseCode| c.0),
                    code = error.map_or("-", ErrorCode::as_str),
                    fate = fate_name(session),
                    duration_ms = self.started.elapsed().as_millis() as u64,
                    "connection closed"
                );
            }
            _ => {}
        }
    }
}

/// What a store notice, routed by the hub, is to the core.
fn notice_input(event: ConnEvent) -> Input<'static> {
    match event {
        ConnEvent::Deliver(d) => Input::Deliver(*d),
        ConnEvent::Replaced => Input::Replaced,
        ConnEvent::Revoked(revoked) => {
            let (revocation, issued_at_ms) = *revoked;
            Input::Revoked {
                revocation,
                issued_at_ms,
            }
        }
        ConnEvent::Overflow => Input::OutboundFull,
        ConnEvent::NoticesLost => Input::NoticesLost,
    }
}

/// The reply of the store call under way; never, when none is.
async fn next_answer(current: &mut Option<StoreCall>) -> Option<(RequestId, Reply)> {
    match current {
        Some(call) => call.await,
        None => std::future::pending().await,
    }
}

fn fate_name(fate: SessionFate) -> &'static str {
    match fate {
        SessionFate::None => "none",
        SessionFate::Detached => "resumable",
        SessionFate::Ended => "ended",
        SessionFate::Replaced => "replaced",
    }
}

async fn recv_mailbox(mailbox: &mut Option<Mailbox>) -> Option<ConnEvent> {
    match mailbox {
        Some(m) => m.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_ms(at_ms: u64) {
    let wait = at_ms.saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

async fn sleep_until_opt(at_ms: Option<u64>) {
    match at_ms {
        Some(at) => sleep_until_ms(at).await,
        None => std::future::pending().await,
    }
}
