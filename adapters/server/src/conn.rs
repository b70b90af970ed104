//! One task per connection: it reads the upgrade, feeds the core's
//! [`Connection`] with frames, store replies, notices and timers, and carries out
//! what the core decides. No protocol decision is taken here.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info};
use wsauth_core::upgrade::{AcceptRefusal, UpgradeDecision, inspect_upgrade};
use wsauth_core::{
    CloseCode, Connection, ErrorCode, Event, Frame, Input, Output, PeerClose, Reply, RequestId,
    SessionFate, StoreRequest, VerifyPurpose,
};
use wsauth_store::Store;

use crate::handshake::{self, UpgradeRequest};
use crate::hub::{ConnEvent, Mailbox};
use crate::outbound::Outbound;
use crate::server::Shared;

/// The current time in Unix milliseconds: the one clock read the core never does.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serves one accepted socket (already through TLS when configured).
pub async fn serve<S, IO>(shared: Arc<Shared<S>>, mut io: IO, peer: SocketAddr, accepted: Instant)
where
    S: Store,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = accepted;
    let _open = shared.metrics.connection_opened();
    // Counted from accept until authentication; over the cap, refused at once.
    let Some(unauthenticated) = shared.ip_limiter.try_acquire(peer.ip()) else {
        refuse(
            &mut io,
            AcceptRefusal::TooManyUnauthenticated,
            &shared,
            peer,
        )
        .await;
        return;
    };
    // One deadline for the whole accept: TLS (already done by the caller) and the head.
    let deadline = tokio::time::Instant::from_std(accepted)
        + Duration::from_millis(shared.config.limits.handshake_timeout_ms);
    let request =
        // Boxed: the read buffers live only for the handshake, not in every
        // connection's task for its whole life.
        match tokio::time::timeout_at(deadline, Box::pin(handshake::read_upgrade_request(&mut io))).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "upgrade refused");
                let refusal = match e.status() {
                    Some(status) => AcceptRefusal::MalformedRequest { status },
                    // The socket is gone: nothing to answer, only to count.
                    None => AcceptRefusal::HeadTimeout,
                };
                refuse(&mut io, refusal, &shared, peer).await;
                return;
            }
            Err(_) => {
                debug!(%peer, "upgrade request not received in time");
                refuse(&mut io, AcceptRefusal::HeadTimeout, &shared, peer).await;
                return;
            }
        };
    if request.path != shared.config.path {
        let _ = handshake::write_plain(&mut io, 404, "text/plain", "not found\n").await;
        return;
    }
    let policy = &shared.upgrade_policy;
    let decision = inspect_upgrade(request.header_pairs(), request.query.as_deref(), policy);
    let (subprotocol, token) = match decision {
        UpgradeDecision::Refuse { status, body } => {
            let _ = handshake::write_refusal(&mut io, status, &body).await;
            info!(%peer, code = %body.code, "upgrade refused");
            shared.metrics.upgrade_refused(body.code);
            return;
        }
        UpgradeDecision::Proceed { subprotocol, token } => (subprotocol, token),
    };

    let mut driver = Driver {
        shared: shared.clone(),
        peer,
        started,
        conn: Connection::new(shared.session_config.clone(), now_ms()),
        out: Outbound::new(shared.config.limits.outbound_queue),
        mailbox: None,
        unauthenticated: Some(unauthenticated),
        store_calls: StoreCalls::default(),
        refresh_started: None,
    };
    let mut early = Vec::new();
    if let Some((method, token)) = token {
        driver.conn =
            Connection::with_upgrade_token(shared.session_config.clone(), method, token, now_ms());
        match Box::pin(driver.authenticate_before_upgrade(&mut io)).await {
            UpgradeOutcome::Accepted(sent) => early = sent,
            UpgradeOutcome::Refused => return,
        }
    }
    if handshake::write_switching_protocols(&mut io, &request.key, subprotocol)
        .await
        .is_err()
    {
        driver
            .conn
            .handle(now_ms(), Input::PeerClosed(PeerClose::Lost));
        driver.drain_without_socket().await;
        return;
    }
    let UpgradeRequest { leftover, .. } = request;
    let ws =
        WebSocketStream::from_partially_read(io, leftover, Role::Server, Some(shared.ws_config))
            .await;
    driver.run(ws, early).await;
}

async fn refuse<S: Store, IO: AsyncWrite + Unpin>(
    io: &mut IO,
    refusal: AcceptRefusal,
    shared: &Shared<S>,
    peer: SocketAddr,
) {
    if let Some((status, body)) = refusal.response() {
        let _ = handshake::write_refusal(io, status, &body).await;
        info!(%peer, code = %body.code, "upgrade refused");
    }
    shared.metrics.upgrade_refused(refusal.code());
}

enum UpgradeOutcome {
    /// The upgrade may complete; these messages were decided before the socket
    /// existed and go out first.
    Accepted(Vec<Message>),
    Refused,
}

/// A store call under way: the request it answers, if any, and its reply.
type StoreCall = Pin<Box<dyn Future<Output = Option<(RequestId, Reply)>> + Send>>;

/// The connection's store calls, carried out one at a time in the order the core
/// asked for them, while the connection keeps reading frames and timers.
#[derive(Default)]
struct StoreCalls {
    waiting: VecDeque<StoreRequest>,
    current: Option<StoreCall>,
}

struct Driver<S: Store> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    started: Instant,
    conn: Connection,
    out: Arc<Outbound>,
    mailbox: Option<Mailbox>,
    unauthenticated: Option<crate::limits::IpGuard>,
    store_calls: StoreCalls,
    /// When the verification of a refresh started, for its round-trip metric.
    refresh_started: Option<Instant>,
}

impl<S: Store> Driver<S> {
    /// Header or query token: verify and create the session before the `101`.
    async fn authenticate_before_upgrade<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
    ) -> UpgradeOutcome {
        let mut early = Vec::new();
        loop {
            if let Some(output) = self.conn.poll_output() {
                match output {
                    Output::AcceptUpgrade => return UpgradeOutcome::Accepted(early),
                    Output::RejectUpgrade { status, body } => {
                        let _ = handshake::write_refusal(io, status, &body).await;
                        self.shared.metrics.upgrade_refused(body.code);
                        self.finish_events();
                        return UpgradeOutcome::Refused;
                    }
                    Output::Send(msg) => early.push(Message::text(msg.to_json())),
                    other => self.carry_out(other),
                }
                continue;
            }
            if self.has_store_calls() {
                self.finish_store_calls().await;
                continue;
            }
            // Waiting on nothing: only a timer can move the machine now.
            match self.conn.poll_timeout() {
                Some(at) => {
                    sleep_until_ms(at).await;
                    self.conn.handle(now_ms(), Input::Tick);
                }
                None => return UpgradeOutcome::Refused,
            }
        }
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

    async fn run<IO>(mut self, ws: WebSocketStream<IO>, early: Vec<Message>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, mut stream) = ws.split();
        for msg in early {
            self.out.push_final(msg);
        }
        let writer = tokio::spawn(self.out.clone().run_writer(sink));
        let mut shutdown = self.shared.shutdown.clone();
        self.pump().await;
        while !self.conn.is_closed() {
            let deadline = self.conn.poll_timeout();
            tokio::select! {
                frame = stream.next() => {
                    let input = self.frame_input(&frame);
                    self.conn.handle(now_ms(), input);
                }
                event = recv_mailbox(&mut self.mailbox) => {
                    match event {
                        Some(event) => self.conn.handle(now_ms(), notice_input(event)),
                        None => self.mailbox = None,
                    }
                }
                answer = next_answer(&mut self.store_calls.current) => {
                    self.store_calls.current = None;
                    if let Some((request, reply)) = answer {
                        self.conn.handle(now_ms(), Input::Reply(request, reply));
                    }
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
        let mut writer = writer;
        if tokio::time::timeout(Duration::from_secs(2), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        // Give the client a moment to answer the close, then drop the socket.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }

    /// What a frame (or its absence) from the socket is to the core.
    fn frame_input<'f>(&self, frame: &'f Option<Result<Message, WsError>>) -> Input<'f> {
        let metrics = &self.shared.metrics;
        match frame {
            Some(Ok(Message::Text(text))) => {
                metrics.message_in();
                Input::Frame(Frame::Text(text.as_str()))
            }
            Some(Ok(Message::Binary(b))) => {
                metrics.message_in();
                Input::Frame(Frame::Binary(b.len()))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Input::Control,
            Some(Ok(Message::Close(frame))) => {
                Input::PeerClosed(PeerClose::Closed(frame.as_ref().map(|f| u16::from(f.code))))
            }
            // tungstenite hands raw frames only to writers; nothing to feed.
            Some(Ok(Message::Frame(_))) => Input::Tick,
            Some(Err(WsError::Utf8(_))) => Input::Frame(Frame::InvalidUtf8),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
                Input::Frame(Frame::TooLarge(*size))
            }
            Some(Err(e)) => {
                debug!(peer = %self.peer, error = %e, "socket error");
                Input::PeerClosed(PeerClose::Lost)
            }
            None => Input::PeerClosed(PeerClose::Lost),
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
                if let Some((request, reply)) = answer {
                    self.conn.handle(now_ms(), Input::Reply(request, reply));
                }
                true
            }
            Poll::Pending => {
                self.store_calls.current = Some(call);
                false
            }
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
            if let Some((request, reply)) = call.await {
                self.conn.handle(now_ms(), Input::Reply(request, reply));
            }
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
                let frame = Message::text(msg.to_json());
                if self.conn.is_closed() {
                    // The error and close that end a connection are bounded by that end.
                    self.out.push_final(frame);
                } else if !self.out.push(frame) {
                    self.conn.handle(now_ms(), Input::OutboundFull);
                }
            }
            Output::Ping => {
                self.out.push_final(Message::Ping(Default::default()));
            }
            Output::Close { code, reason } => self.out.close(code.0, reason),
            Output::Verify {
                request,
                token,
                purpose,
            } => {
                let started = Instant::now();
                if purpose == VerifyPurpose::Refresh {
                    self.refresh_started = Some(started);
                }
                let verified = self.shared.verifier.verify_cached(
                    token.expose(),
                    now_ms(),
                    &self.shared.verify_cache,
                );
                let reply = match verified {
                    Ok(claims) => Reply::Verified(claims),
                    Err(e) => Reply::NotVerified(e),
                };
                self.shared.metrics.verified(started.elapsed());
                self.conn.handle(now_ms(), Input::Reply(request, reply));
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
            Output::Event(e) => self.event(e),
            Output::AcceptUpgrade | Output::RejectUpgrade { .. } => {}
        }
    }

    fn event(&mut self, event: Event) {
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
