//! One task per connection: it reads the upgrade, feeds the core's
//! [`Connection`] with frames, store replies, notices and timers, and carries out
//! what the core decides. No protocol decision is taken here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info};
use wsauth_core::upgrade::{UpgradeDecision, inspect_upgrade};
use wsauth_core::{
    CloseCode, Connection, ErrorBody, ErrorCode, Event, Frame, Output, PeerClose, Reply,
    SessionFate, StoreRequest,
};
use wsauth_store::{CreateOutcome, RefreshOutcome, Store};

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
        refuse(&mut io, ErrorCode::RateLimited, &shared, peer).await;
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
                if let Some(status) = e.status() {
                    let body = ErrorBody::new(ErrorCode::BadRequest);
                    let _ = handshake::write_refusal(&mut io, status, &body).await;
                }
                debug!(%peer, error = %e, "upgrade refused");
                shared.metrics.upgrade_refused(ErrorCode::BadRequest);
                return;
            }
            Err(_) => {
                debug!(%peer, "upgrade request not received in time");
                shared.metrics.upgrade_refused(ErrorCode::AuthTimeout);
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
        early: Vec::new(),
        epoch: 0,
        session_id: None,
        mailbox: None,
        unauthenticated: Some(unauthenticated),
        upgraded: false,
        slow: false,
        user: None,
        refresh_started: None,
    };
    if let Some((method, token)) = token {
        driver.conn =
            Connection::with_upgrade_token(shared.session_config.clone(), method, token, now_ms());
        match Box::pin(driver.authenticate_before_upgrade(&mut io)).await {
            UpgradeOutcome::Accepted => {}
            UpgradeOutcome::Refused => return,
        }
    }
    if handshake::write_switching_protocols(&mut io, &request.key, subprotocol)
        .await
        .is_err()
    {
        driver.conn.handle_peer_closed(now_ms(), PeerClose::Lost);
        driver.drain_without_socket().await;
        return;
    }
    driver.upgraded = true;
    let UpgradeRequest { leftover, .. } = request;
    let ws =
        WebSocketStream::from_partially_read(io, leftover, Role::Server, Some(shared.ws_config))
            .await;
    driver.run(ws).await;
}

async fn refuse<S: Store, IO: AsyncWrite + Unpin>(
    io: &mut IO,
    code: ErrorCode,
    shared: &Shared<S>,
    peer: SocketAddr,
) {
    let _ = handshake::write_refusal(io, code.http_status(), &ErrorBody::new(code)).await;
    info!(%peer, code = %code, "upgrade refused");
    shared.metrics.upgrade_refused(code);
}

enum UpgradeOutcome {
    Accepted,
    Refused,
}

struct Driver<S: Store> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    started: Instant,
    conn: Connection,
    out: Arc<Outbound>,
    /// Messages decided before the WebSocket exists (header authentication).
    early: Vec<Message>,
    epoch: u64,
    session_id: Option<String>,
    mailbox: Option<Mailbox>,
    unauthenticated: Option<crate::limits::IpGuard>,
    upgraded: bool,
    slow: bool,
    /// The session's user, kept for the outcome line (the machine forgets it at close).
    user: Option<String>,
    /// When the verification of a refresh started (a verify once a session exists).
    refresh_started: Option<Instant>,
}

impl<S: Store> Driver<S> {
    /// Header or query token: verify and create the session before the `101`.
    async fn authenticate_before_upgrade<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
    ) -> UpgradeOutcome {
        loop {
            let Some(output) = self.conn.poll_output() else {
                // Waiting on nothing: only a timer can move the machine now.
                match self.conn.poll_timeout() {
                    Some(at) => {
                        sleep_until_ms(at).await;
                        self.conn.handle_timeout(now_ms());
                        continue;
                    }
                    None => return UpgradeOutcome::Refused,
                }
            };
            match output {
                Output::AcceptUpgrade => return UpgradeOutcome::Accepted,
                Output::RejectUpgrade { status, body } => {
                    let _ = handshake::write_refusal(io, status, &body).await;
                    self.shared.metrics.upgrade_refused(body.code);
                    self.finish_events();
                    return UpgradeOutcome::Refused;
                }
                other => self.execute(other).await,
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

    async fn drain_without_socket(&mut self) {
        while let Some(output) = self.conn.poll_output() {
            match output {
                Output::Store(req) => self.store(req).await,
                Output::Event(e) => self.event(e),
                _ => {}
            }
        }
    }

    async fn run<IO>(mut self, ws: WebSocketStream<IO>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, mut stream) = ws.split();
        for msg in std::mem::take(&mut self.early) {
            self.out.push_final(msg);
        }
        let writer = tokio::spawn(self.out.clone().run_writer(sink));
        let mut shutdown = self.shared.shutdown.clone();
        self.pump().await;
        while !self.conn.is_closed() {
            let deadline = self.conn.poll_timeout();
            tokio::select! {
                frame = stream.next() => {
                    let now = now_ms();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            self.shared.metrics.message_in();
                            self.conn.handle_frame(now, Frame::Text(text.as_str()));
                        }
                        Some(Ok(Message::Binary(b))) => {
                            self.shared.metrics.message_in();
                            self.conn.handle_frame(now, Frame::Binary(b.len()));
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => self.conn.handle_control_frame(now),
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map(|f| u16::from(f.code));
                            self.conn.handle_peer_closed(now, PeerClose::Closed(code));
                        }
                        Some(Ok(Message::Frame(_))) => {}
                        Some(Err(WsError::Utf8(_))) => self.conn.handle_frame(now, Frame::InvalidUtf8),
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
                            self.conn.handle_frame(now, Frame::TooLarge(size));
                        }
                        Some(Err(e)) => {
                            debug!(peer = %self.peer, error = %e, "socket error");
                            self.conn.handle_peer_closed(now, PeerClose::Lost);
                        }
                        None => self.conn.handle_peer_closed(now, PeerClose::Lost),
                    }
                }
                event = recv_mailbox(&mut self.mailbox) => {
                    let now = now_ms();
                    match event {
                        Some(ConnEvent::Deliver(d)) => self.conn.handle_delivery(now, *d),
                        Some(ConnEvent::Replaced) => self.conn.handle_replaced(now),
                        Some(ConnEvent::Revoked(revoked)) => {
                            let (revocation, at_ms) = *revoked;
                            self.conn.handle_revocation(now, &revocation);
                            if self.conn.is_closed() {
                                self.shared.metrics.revocation_closed(at_ms, now_ms());
                            }
                        }
                        Some(ConnEvent::Overflow) => self.conn.handle_fault(now, ErrorCode::SlowConsumer),
                        Some(ConnEvent::NoticesLost) => self.conn.handle_fault(now, ErrorCode::Internal),
                        None => self.mailbox = None,
                    }
                }
                () = sleep_until_opt(deadline) => self.conn.handle_timeout(now_ms()),
                _ = shutdown.changed() => self.conn.handle_shutdown(now_ms()),
            }
            self.pump().await;
        }
        self.mailbox = None;
        self.out.finish();
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

    /// Carries out every output the core has.
    async fn pump(&mut self) {
        while let Some(output) = self.conn.poll_output() {
            self.execute(output).await;
        }
    }

    async fn execute(&mut self, output: Output) {
        match output {
            Output::Send(msg) => {
                self.shared.metrics.message_out();
                let frame = Message::text(msg.to_json());
                if !self.upgraded {
                    self.early.push(frame);
                } else if self.slow || self.conn.is_closed() {
                    self.out.push_final(frame);
                } else if !self.out.push(frame) {
                    self.slow = true;
                    self.conn.handle_fault(now_ms(), ErrorCode::SlowConsumer);
                }
            }
            Output::Ping => {
                self.out.push_final(Message::Ping(Default::default()));
            }
            Output::Close { code, reason } => self.out.close(code.0, reason),
            Output::Verify { request, token } => {
                let started = Instant::now();
                if self.session_id.is_some() {
                    // Once a session exists, a verification is a refresh's.
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
                self.conn.handle_reply(now_ms(), request, reply);
            }
            Output::Store(req) => self.store(req).await,
            Output::Event(e) => self.event(e),
            Output::AcceptUpgrade | Output::RejectUpgrade { .. } => {}
        }
    }

    async fn store(&mut self, req: StoreRequest) {
        let store = self.shared.store.clone();
        let timeout = self.shared.store_timeout;
        let now = now_ms();
        let metrics = self.shared.metrics.clone();
        macro_rules! call {
            ($op:literal, $fut:expr) => {{
                let started = Instant::now();
                let result = match tokio::time::timeout(timeout, $fut).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, op = $op, "store unavailable");
                        Err(())
                    }
                    Err(_) => {
                        tracing::warn!(op = $op, "store call timed out");
                        Err(())
                    }
                };
                metrics.store_call($op, started.elapsed(), result.is_ok());
                result
            }};
        }
        match req {
            StoreRequest::CreateSession {
                request,
                claims,
                now_ms: at,
            } => {
                let reply = match call!("create", store.create_session(claims.clone(), at)) {
                    Ok(CreateOutcome::Created {
                        session_id,
                        resume_token,
                        epoch,
                        evicted,
                    }) => {
                        metrics.evicted(evicted);
                        self.attach(&session_id, epoch);
                        Reply::Created {
                            session_id,
                            resume_token,
                        }
                    }
                    Ok(CreateOutcome::Revoked) => {
                        metrics.refused(&claims.sub, claims.jti.as_deref());
                        Reply::Revoked
                    }
                    Ok(CreateOutcome::TooManySessions) => {
                        metrics.refused(&claims.sub, claims.jti.as_deref());
                        Reply::TooManySessions
                    }
                    Err(()) => Reply::Unavailable,
                };
                self.conn.handle_reply(now_ms(), request, reply);
            }
            StoreRequest::ResumeSession {
                request,
                session_id,
                resume_token,
            } => {
                let reply = match call!(
                    "resume",
                    store.resume_session(&session_id, &resume_token, now)
                ) {
                    Ok(Some((session, epoch))) => {
                        self.attach(&session_id, epoch);
                        Reply::Resumed(Box::new(session))
                    }
                    Ok(None) => Reply::NotFound,
                    Err(()) => Reply::Unavailable,
                };
                self.conn.handle_reply(now_ms(), request, reply);
            }
            StoreRequest::RefreshSession {
                request,
                session_id,
                claims,
                now_ms: at,
            } => {
                let reply = match call!(
                    "refresh",
                    store.refresh_session(&session_id, self.epoch, claims.clone(), at)
                ) {
                    Ok(RefreshOutcome::Refreshed) => Reply::Refreshed,
                    Ok(RefreshOutcome::Revoked) => {
                        metrics.refused(&claims.sub, claims.jti.as_deref());
                        Reply::Revoked
                    }
                    Err(()) => Reply::Unavailable,
                };
                self.conn.handle_reply(now_ms(), request, reply);
            }
            StoreRequest::NoteExpiringSent { session_id } => {
                let _ = call!(
                    "expiring",
                    store.note_expiring_sent(&session_id, self.epoch)
                );
            }
            StoreRequest::Subscribe {
                request,
                session_id,
                channel,
            } => {
                let reply = match call!("join", store.subscribe(&session_id, self.epoch, &channel))
                {
                    Ok(()) => Reply::Subscribed,
                    Err(()) => Reply::Unavailable,
                };
                self.conn.handle_reply(now_ms(), request, reply);
            }
            StoreRequest::Unsubscribe {
                session_id,
                channel,
            } => {
                let _ = call!(
                    "leave",
                    store.unsubscribe(&session_id, self.epoch, &channel)
                );
            }
            StoreRequest::Publish {
                request,
                channel,
                from,
                data,
            } => {
                let reply = match call!("publish", store.publish(&channel, &from, data, now)) {
                    Ok(_) => Reply::Published,
                    Err(()) => Reply::Unavailable,
                };
                self.conn.handle_reply(now_ms(), request, reply);
            }
            StoreRequest::DetachSession { session_id } => {
                let _ = call!("detach", store.detach(&session_id, self.epoch, now));
            }
            StoreRequest::EndSession { session_id } => {
                let _ = call!("end", store.end_session(&session_id, self.epoch));
            }
        }
    }

    fn remember_user(&mut self) {
        if self.user.is_none() {
            self.user = self.conn.user().map(str::to_owned);
        }
    }

    fn attach(&mut self, session_id: &str, epoch: u64) {
        self.epoch = epoch;
        self.session_id = Some(session_id.to_owned());
        self.mailbox = Some(self.shared.hub.register(session_id, epoch));
        // Authenticated: no longer counted against the per-IP cap.
        self.unauthenticated = None;
    }

    fn event(&mut self, event: Event) {
        self.remember_user();
        self.shared.metrics.event(&event, self.started.elapsed());
        if matches!(event, Event::Refreshed { .. } | Event::RefreshFailed { .. })
            && let Some(started) = self.refresh_started.take()
        {
            self.shared.metrics.refresh_answered(started.elapsed());
        }
        match event {
            Event::Authenticated { method, user } => {
                debug!(peer = %self.peer, %user, ?method, "authenticated");
            }
            Event::Closed {
                code,
                error,
                session,
            } => {
                info!(
                    peer = %self.peer,
                    user = self.user.as_deref().unwrap_or("-"),
                    session = self.session_id.as_deref().unwrap_or("-"),
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
