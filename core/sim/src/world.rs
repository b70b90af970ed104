//! The simulated world: named connections driven through their one input door, a
//! virtual clock, the real [`MemoryStore`] (reached through the same
//! [`wsauth_store::execute`] every driver uses) and a transcript of everything that
//! crosses the machine's boundary.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use wsauth_core::jwt::{Claims, TokenError};
use wsauth_core::{
    Attachment, AuthMethod, CallContext, CallResult, Connection, Event, Frame, Input, Output,
    PeerClose, Reply, RequestId, Revocation, SessionConfig, SessionFate, StoreRequest,
};
use wsauth_core::{Payload, Secret};
use wsauth_store::{MemoryStore, Notice, Notify, Store, StoreError, StoreSettings};

/// Verifies a token at a time: the real [`wsauth_core::jwt::Verifier`] or a stand-in.
pub type VerifyFn = Arc<dyn Fn(&str, u64) -> Result<Claims, TokenError> + Send + Sync>;

/// The application's handler of `rpc` calls: method, argument, caller.
pub type CallFn = Arc<dyn Fn(&str, &Payload, &CallContext) -> CallResult + Send + Sync>;

/// The store's notices, kept until the world routes them to connections.
#[derive(Default)]
struct NoticeLog(Mutex<Vec<(String, u64, Notice)>>);

impl Notify for NoticeLog {
    fn notify(&self, session_id: &str, epoch: u64, notice: Notice) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((
            session_id.to_owned(),
            epoch,
            notice,
        ));
    }
}

impl NoticeLog {
    fn take(&self) -> Vec<(String, u64, Notice)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The simulated world. Connections are named (`"A"`, `"B"`) so that transcripts
/// of several clients read well; each runs on a node (`node-1` unless opened with
/// [`World::open_on`]), and all nodes share the one store, as nodes share Redis.
pub struct World {
    start: u64,
    now: u64,
    config: Arc<SessionConfig>,
    verify: VerifyFn,
    conns: BTreeMap<String, Connection>,
    node_of: BTreeMap<String, String>,
    store: MemoryStore,
    notices: Arc<NoticeLog>,
    /// Session → the epoch and connection its notices go to (`Output::Listen`),
    /// as each node's hub keeps it.
    routes: BTreeMap<String, (u64, String)>,
    /// Notices for an epoch whose connection has not listened yet.
    early: Vec<(String, u64, Notice)>,
    /// The latest resume token handed out for each session, as its client keeps it.
    resume_tokens: BTreeMap<String, String>,
    inbox: VecDeque<(String, Input<'static>)>,
    held: Vec<(String, RequestId, Reply)>,
    /// The application's handler; without one every call is `NotFound`.
    call_handler: Option<CallFn>,
    held_calls: Vec<(String, RequestId, CallResult)>,
    labels: Vec<(String, String)>,
    lines: Vec<String>,
    last_deadline: BTreeMap<String, Option<u64>>,
    /// When false, every store request fails as if the store could not be reached.
    pub store_available: bool,
    /// When true, replies are computed but held until [`World::release`].
    pub hold_replies: bool,
    /// When true, call results are computed but held until [`World::release_calls`].
    pub hold_calls: bool,
    /// When false, timer lines are left out of the transcript.
    pub show_timers: bool,
    /// When false, no transcript is kept (fast exploration).
    pub record_transcript: bool,
    outputs: Vec<(String, Output)>,
}

impl Clone for World {
    /// An independent copy: the store's state is forked, so the two worlds'
    /// futures do not touch each other (the exhaustive walk explores from copies).
    fn clone(&self) -> Self {
        let notices = Arc::new(NoticeLog::default());
        World {
            start: self.start,
            now: self.now,
            config: self.config.clone(),
            verify: self.verify.clone(),
            conns: self.conns.clone(),
            node_of: self.node_of.clone(),
            store: self.store.fork(notices.clone() as Arc<dyn Notify>),
            notices,
            routes: self.routes.clone(),
            early: self.early.clone(),
            resume_tokens: self.resume_tokens.clone(),
            inbox: self.inbox.clone(),
            held: self.held.clone(),
            call_handler: self.call_handler.clone(),
            held_calls: self.held_calls.clone(),
            labels: self.labels.clone(),
            lines: self.lines.clone(),
            last_deadline: self.last_deadline.clone(),
            store_available: self.store_available,
            hold_replies: self.hold_replies,
            hold_calls: self.hold_calls,
            show_timers: self.show_timers,
            record_transcript: self.record_transcript,
            outputs: self.outputs.clone(),
        }
    }
}

impl World {
    /// A world at `start_ms` with these settings. The store's leeway is the
    /// session's: one value for both.
    pub fn new(
        start_ms: u64,
        config: SessionConfig,
        store_settings: StoreSettings,
        verify: VerifyFn,
    ) -> Self {
        let store_settings = StoreSettings {
            leeway_ms: config.leeway_ms,
            ..store_settings
        };
        let notices = Arc::new(NoticeLog::default());
        World {
            start: start_ms,
            now: start_ms,
            config: Arc::new(config),
            verify,
            conns: BTreeMap::new(),
            node_of: BTreeMap::new(),
            store: MemoryStore::simulated(store_settings, notices.clone() as Arc<dyn Notify>),
            notices,
            routes: BTreeMap::new(),
            early: Vec::new(),
            resume_tokens: BTreeMap::new(),
            inbox: VecDeque::new(),
            held: Vec::new(),
            call_handler: None,
            held_calls: Vec::new(),
            labels: Vec::new(),
            lines: Vec::new(),
            last_deadline: BTreeMap::new(),
            store_available: true,
            hold_replies: false,
            hold_calls: false,
            show_timers: true,
            record_transcript: true,
            outputs: Vec::new(),
        }
    }

    /// The current virtual time, in Unix ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The session configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// A connection, to inspect.
    pub fn conn(&self, name: &str) -> Option<&Connection> {
        self.conns.get(name)
    }

    /// Names of all connections ever opened.
    pub fn conn_names(&self) -> Vec<String> {
        self.conns.keys().cloned().collect()
    }

    /// How many sessions the store holds (attached or within their grace).
    pub fn stored_sessions(&self) -> usize {
        ready(self.store.stats()).map_or(0, |s| s.sessions)
    }

    /// The session ids the store holds for `sub`, in order.
    pub fn sessions_of(&self, sub: &str) -> Vec<String> {
        let mut ids: Vec<String> = ready(self.store.sessions_of(sub))
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.session_id)
            .collect();
        ids.sort();
        ids
    }

    /// The latest resume token handed out for a session (the store keeps only its
    /// hash; this is what its client would hold).
    pub fn resume_token_of(&self, session_id: &str) -> Option<String> {
        self.resume_tokens.get(session_id).cloned()
    }

    /// The real store behind the world.
    pub fn memory_store(&self) -> &MemoryStore {
        &self.store
    }

    /// Shows `token` as `<label>` in the transcript.
    pub fn label(&mut self, token: &str, label: &str) {
        self.labels.push((token.to_owned(), format!("<{label}>")));
    }

    /// Adds a free-form comment line to the transcript.
    pub fn note(&mut self, text: &str) {
        self.push_line(format!("{:<9}   # {text}", self.stamp()));
    }

    /// The transcript so far.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }

    /// Opens a connection that authenticates by message.
    pub fn open(&mut self, name: &str) {
        let conn = Connection::new(self.config.clone(), self.now);
        self.conns.insert(name.to_owned(), conn);
        self.line(name, "open (no token on the upgrade request)".to_owned());
        self.pump(name);
    }

    /// Opens a connection that authenticates by message on another node sharing the
    /// store (a second server behind the same load balancer).
    pub fn open_on(&mut self, name: &str, node: &str) {
        let conn = Connection::new(self.config.clone(), self.now);
        self.conns.insert(name.to_owned(), conn);
        self.node_of.insert(name.to_owned(), node.to_owned());
        self.line(
            name,
            format!("open on {node} (no token on the upgrade request)"),
        );
        self.pump(name);
    }

    /// The node a connection runs on.
    pub fn node_of(&self, name: &str) -> &str {
        self.node_of.get(name).map_or("node-1", String::as_str)
    }

    /// A node dies at once (SIGKILL): its connections vanish without a word to the
    /// store, whose sessions stay attached until a resume elsewhere takes them over.
    pub fn crash(&mut self, node: &str) {
        self.push_line(format!("{:<9}   ** {node} is killed", self.stamp()));
        let gone: Vec<String> = self
            .conns
            .keys()
            .filter(|name| self.node_of(name) == node)
            .cloned()
            .collect();
        for name in gone {
            self.conns.remove(&name);
            self.routes.retain(|_, (_, conn)| *conn != name);
        }
    }

    /// A node's store cannot rule out that notices for it were lost: every live
    /// connection on it is told.
    pub fn lose_notices(&mut self, node: &str) {
        self.push_line(format!(
            "{:<9}   ** {node} may have missed notices",
            self.stamp()
        ));
        let names: Vec<String> = self
            .conns
            .keys()
            .filter(|name| self.node_of(name) == node)
            .cloned()
            .collect();
        for name in names {
            self.feed(&name, Input::NoticesLost);
        }
    }

    /// Opens a connection whose upgrade request carries `Authorization: Bearer`.
    pub fn open_with_header(&mut self, name: &str, token: &str) {
        let conn = Connection::with_upgrade_token(
            self.config.clone(),
            AuthMethod::Header,
            Secret::new(token),
            self.now,
        );
        self.conns.insert(name.to_owned(), conn);
        let shown = self.redact(token);
        self.line(
            name,
            format!("open with header Authorization: Bearer {shown}"),
        );
        self.pump(name);
    }

    /// Opens a connection from a full upgrade request: the origin, subprotocol and
    /// token decisions of [`wsauth_core::upgrade::inspect_upgrade`], then the machine.
    pub fn open_upgrade(
        &mut self,
        name: &str,
        headers: &[(&str, &str)],
        query: Option<&str>,
        policy: &wsauth_core::upgrade::UpgradePolicy,
    ) {
        let shown: Vec<String> = headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", self.redact(v)))
            .collect();
        let target = query.map_or_else(|| "/ws".to_owned(), |q| format!("/ws?{}", self.redact(q)));
        self.line(name, format!("GET {target} {}", shown.join(", ")));
        let decision = wsauth_core::upgrade::inspect_upgrade(
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            query,
            policy,
        );
        match decision {
            wsauth_core::upgrade::UpgradeDecision::Refuse { status, body } => {
                self.line(name, format!("-> HTTP {status} {}", body.to_json()));
            }
            wsauth_core::upgrade::UpgradeDecision::Proceed { subprotocol, token } => {
                if let Some(p) = subprotocol {
                    self.line(name, format!(".. subprotocol {p} selected"));
                }
                let conn = match token {
                    Some((method, token)) => {
                        Connection::with_upgrade_token(self.config.clone(), method, token, self.now)
                    }
                    None => {
                        self.line(name, "-> 101 Switching Protocols".to_owned());
                        Connection::new(self.config.clone(), self.now)
                    }
                };
                self.conns.insert(name.to_owned(), conn);
                self.pump(name);
            }
        }
    }

    /// The client sends a text frame.
    pub fn send(&mut self, name: &str, text: &str) {
        let shown = self.redact(text);
        self.line(name, format!("<- {shown}"));
        self.feed(name, Input::Frame(Frame::Text(text)));
    }

    /// The client sends a frame of another kind.
    pub fn send_frame(&mut self, name: &str, frame: Frame<'_>) {
        let shown = match frame {
            Frame::Text(t) => format!("<- {}", self.redact(t)),
            Frame::InvalidUtf8 => "<- text frame with invalid UTF-8".to_owned(),
            Frame::Binary(n) => format!("<- binary frame ({n} bytes)"),
            Frame::TooLarge(n) => format!("<- frame over the size limit ({n} bytes)"),
            Frame::ProtocolViolation => "<- frame breaking the WebSocket protocol".to_owned(),
        };
        self.line(name, shown);
        self.feed(name, Input::Frame(frame));
    }

    /// The client answers a ping (or pings): a control frame.
    pub fn pong(&mut self, name: &str) {
        self.line(name, "<- pong".to_owned());
        self.feed(name, Input::Control);
    }

    /// The client sends `n` pings at once (control frames).
    pub fn pings(&mut self, name: &str, n: u32) {
        self.line(name, format!("<- {n} pings"));
        for _ in 0..n {
            self.feed(name, Input::Control);
        }
    }

    /// The client sends `n` empty continuation frames (never a final one), as
    /// the driver counts them.
    pub fn continuations(&mut self, name: &str, n: u32) {
        self.line(name, format!("<- {n} empty continuation frames"));
        self.feed(name, Input::Continuations(n));
    }

    /// The socket closes from the client's side.
    pub fn peer_close(&mut self, name: &str, how: PeerClose) {
        let shown = match how {
            PeerClose::Closed(Some(code)) => format!("<- close {code}"),
            PeerClose::Closed(None) => "<- close (no code)".to_owned(),
            PeerClose::Lost => "xx TCP connection lost (no close frame)".to_owned(),
        };
        self.line(name, shown);
        self.feed(name, Input::PeerClosed(how));
    }

    /// Feeds any input to one connection and runs the world until it is quiet.
    pub fn feed(&mut self, name: &str, input: Input<'_>) {
        if let Some(conn) = self.conns.get_mut(name) {
            conn.handle(self.now, input);
        }
        self.pump(name);
        self.run_inbox();
    }

    /// Lets `ms` of virtual time pass, firing every timer on the way in order.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now.saturating_add(ms);
        self.lines
            .push(format!("{:<9}   ... {} pass", self.stamp(), human_ms(ms)));
        loop {
            let next = self
                .conns
                .iter()
                .filter_map(|(n, c)| c.poll_timeout().map(|t| (t, n.clone())))
                .filter(|(t, _)| *t <= target)
                .min();
            let Some((at, name)) = next else {
                break;
            };
            self.now = self.now.max(at);
            if let Some(conn) = self.conns.get_mut(&name) {
                conn.handle(self.now, Input::Tick);
            }
            self.pump(&name);
            self.run_inbox();
        }
        self.now = target;
    }

    /// An operator revokes something: the store records it and tells the
    /// connections it concerns, wherever they are.
    pub fn revoke(&mut self, revocation: Revocation) {
        let shown = match &revocation {
            Revocation::Token { jti } => format!("operator revokes token jti={jti}"),
            Revocation::Subject { sub, at_s } => {
                format!("operator revokes user {sub} (tokens issued at or before {at_s}s)")
            }
            Revocation::Session { session_id } => format!("operator revokes session {session_id}"),
        };
        self.push_line(format!("{:<9}   ** {shown}", self.stamp()));
        let _ = ready(self.store.revoke(revocation, self.now));
        self.route_notices();
        self.run_inbox();
    }

    /// Someone outside publishes to a channel (another node's client, or the
    /// application).
    pub fn publish_external(&mut self, channel: &str, from: &str, data: &str) {
        self.push_line(format!(
            "{:<9}   ** {from} publishes to {channel} from elsewhere: {data}",
            self.stamp()
        ));
        self.fan_out(data, |store, payload, now| {
            ready(store.publish(channel, Some(from), payload, now))
        });
    }

    /// The application publishes to a channel through the server API (PROTOCOL
    /// §9): every session joined to it gets the message, without `from`.
    pub fn server_publish(&mut self, channel: &str, data: &str) {
        self.push_line(format!(
            "{:<9}   ** the server publishes to {channel}: {data}",
            self.stamp()
        ));
        self.fan_out(data, |store, payload, now| {
            ready(store.publish(channel, None, payload, now))
        });
    }

    /// The application sends to a user through the server API (PROTOCOL §9):
    /// every live or resumable session of `sub` gets the message on `user:<sub>`,
    /// without `from`, whether or not it joined that channel.
    pub fn server_send(&mut self, sub: &str, data: &str) {
        self.push_line(format!(
            "{:<9}   ** the server sends to user {sub}: {data}",
            self.stamp()
        ));
        self.fan_out(data, |store, payload, now| {
            ready(store.send_to_user(sub, payload, now))
        });
    }

    /// Hands `data` to the store as `call` does and routes the notices it causes to
    /// the connections, the way a node's notify does.
    fn fan_out(
        &mut self,
        data: &str,
        call: impl FnOnce(&MemoryStore, Payload, u64) -> Result<usize, StoreError>,
    ) {
        if let Ok(payload) = Payload::from_json(data) {
            let n = call(&self.store, payload, self.now).unwrap_or(0);
            self.push_line(format!(
                "{:<9}   ** delivered to {n} session(s)",
                self.stamp()
            ));
        }
        self.route_notices();
        self.run_inbox();
    }

    /// Delivers the held replies, in the order they were asked for.
    pub fn release(&mut self) {
        let held = std::mem::take(&mut self.held);
        for (name, request, reply) in held {
            self.line(&name, format!(".. (late) {}", describe_reply(&reply)));
            if let Some(conn) = self.conns.get_mut(&name) {
                conn.handle(self.now, Input::Reply(request, reply));
            }
            self.pump(&name);
        }
        self.run_inbox();
    }

    /// Sets the application's handler of `rpc` calls.
    pub fn set_call_handler(&mut self, handler: CallFn) {
        self.call_handler = Some(handler);
    }

    /// Delivers the held call results, in the order the calls were made, or in
    /// the reverse order (to show results overtaking each other).
    pub fn release_calls(&mut self, reverse: bool) {
        let mut held = std::mem::take(&mut self.held_calls);
        if reverse {
            held.reverse();
        }
        for (name, request, result) in held {
            self.line(
                &name,
                format!(".. (late) call result: {}", describe_call(&result)),
            );
            if let Some(conn) = self.conns.get_mut(&name) {
                conn.handle(self.now, Input::CallResult(request, result));
            }
            self.pump(&name);
        }
        self.run_inbox();
    }

    /// Runs the handler for a call, as a driver does (`NotFound` without one).
    fn call(
        &mut self,
        name: &str,
        request: RequestId,
        method: &str,
        data: &Payload,
        context: &CallContext,
    ) {
        let result = match &self.call_handler {
            Some(handler) => handler(method, data, context),
            None => CallResult::NotFound,
        };
        let shown = format!(
            ".. call {method}({}) for {} in {}: {}",
            data.get(),
            context.sub,
            context.session_id,
            describe_call(&result)
        );
        self.line(name, shown);
        if self.hold_calls {
            self.held_calls.push((name.to_owned(), request, result));
            self.line(name, ".. (call result held)".to_owned());
            return;
        }
        if let Some(conn) = self.conns.get_mut(name) {
            conn.handle(self.now, Input::CallResult(request, result));
        }
    }

    fn run_inbox(&mut self) {
        while let Some((name, input)) = self.inbox.pop_front() {
            if let Some(conn) = self.conns.get_mut(&name) {
                conn.handle(self.now, input);
            }
            self.pump(&name);
        }
    }

    fn stamp(&self) -> String {
        format!("+{}ms", self.now - self.start)
    }

    /// Every output carried out since the last call, with its connection's name.
    pub fn take_outputs(&mut self) -> Vec<(String, Output)> {
        std::mem::take(&mut self.outputs)
    }

    fn push_line(&mut self, line: String) {
        if self.record_transcript {
            self.lines.push(line);
        }
    }

    fn line(&mut self, name: &str, text: String) {
        if self.record_transcript {
            let line = format!("{:<9} {:<2} {}", self.stamp(), name, text);
            self.lines.push(line);
        }
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (token, label) in &self.labels {
            out = out.replace(token, label);
        }
        out
    }

    /// Carries out a connection's outputs until it has none.
    fn pump(&mut self, name: &str) {
        while let Some(output) = self.conns.get_mut(name).and_then(Connection::poll_output) {
            self.outputs.push((name.to_owned(), output.clone()));
            match output {
                Output::AcceptUpgrade => self.line(name, "-> 101 Switching Protocols".to_owned()),
                Output::RejectUpgrade { status, body } => {
                    self.line(name, format!("-> HTTP {status} {}", body.to_json()));
                }
                Output::Send(msg) => {
                    let shown = self.redact(&msg.to_json());
                    self.line(name, format!("-> {shown}"));
                }
                Output::Ping => self.line(name, "-> ping".to_owned()),
                Output::Close { code, reason } => {
                    self.line(name, format!("-> close {code} {reason}"));
                }
                // Plumbing: the store lines already show which session is attached.
                Output::Listen(attachment) => self.listen(name, attachment),
                Output::Verify { request, token, .. } => {
                    let shown = self.redact(token.expose());
                    let reply = match (self.verify)(token.expose(), self.now) {
                        Ok(claims) => Reply::Verified(Arc::new(claims)),
                        Err(e) => Reply::NotVerified(e),
                    };
                    self.line(
                        name,
                        format!(".. verify {shown}: {}", describe_reply(&reply)),
                    );
                    self.answer(name, request, reply);
                }
                Output::Store(req) => self.store(name, req),
                Output::Call {
                    request,
                    method,
                    data,
                    context,
                } => self.call(name, request, &method, &data, &context),
                // These repeat the failure or close line beside them, for operators'
                // counters; the transcript shows that line only.
                Output::Event(Event::Refused { .. } | Event::RevocationApplied { .. }) => {}
                Output::Event(event) => {
                    let shown = describe_event(&event);
                    self.line(name, format!("== {shown}"));
                }
            }
        }
        if self.show_timers {
            let deadline = self.conns.get(name).and_then(Connection::poll_timeout);
            let before = self.last_deadline.insert(name.to_owned(), deadline);
            if before != Some(deadline)
                && let Some(at) = deadline
            {
                let shown = format!(".. next timer at +{}ms", at.saturating_sub(self.start));
                self.line(name, shown);
            }
        }
    }

    fn answer(&mut self, name: &str, request: RequestId, reply: Reply) {
        if self.hold_replies {
            self.held.push((name.to_owned(), request, reply));
            self.line(name, ".. (reply held)".to_owned());
            return;
        }
        if let Some(conn) = self.conns.get_mut(name) {
            conn.handle(self.now, Input::Reply(request, reply));
        }
    }

    /// Carries out a store request on the real store, as a driver does, then
    /// routes the notices it caused.
    fn store(&mut self, name: &str, request: StoreRequest) {
        let shown = describe_request(&request, self.store.settings().resume_grace_ms);
        let reply_to = request.reply_to();
        let outcome = if self.store_available {
            ready(wsauth_store::execute(&self.store, request, self.now))
        } else {
            Err(wsauth_store::StoreError::Unavailable(
                "the store is down".into(),
            ))
        };
        let reply = match outcome {
            Ok(reply) => reply,
            // A driver answers a failed call `Unavailable`: the machine fails closed.
            Err(_) => reply_to.map(|_| Reply::Unavailable),
        };
        match (reply_to, reply) {
            (Some(request), Some(reply)) => {
                self.remember_resume_token(&reply);
                self.line(name, format!(".. {shown}: {}", describe_reply(&reply)));
                self.answer(name, request, reply);
            }
            _ if self.store_available => self.line(name, format!(".. {shown}")),
            _ => self.line(name, format!(".. {shown}: unavailable")),
        }
        self.route_notices();
    }

    fn remember_resume_token(&mut self, reply: &Reply) {
        let (session_id, token) = match reply {
            Reply::Created {
                attachment,
                resume_token,
                ..
            } => (&attachment.session_id, resume_token),
            Reply::Resumed { session, .. } => (&session.session_id, &session.resume_token),
            _ => return,
        };
        self.resume_tokens
            .insert(session_id.clone(), token.expose().to_owned());
    }

    /// A connection asked for its session's notices: route them to it, with
    /// those that arrived for its epoch before it asked.
    fn listen(&mut self, name: &str, attachment: Attachment) {
        let Attachment { session_id, epoch } = attachment;
        self.routes
            .insert(session_id.clone(), (epoch, name.to_owned()));
        let early = std::mem::take(&mut self.early);
        for (id, at, notice) in early {
            if id == session_id && at == epoch {
                self.inbox
                    .push_back((name.to_owned(), notice_input(notice)));
            } else if id != session_id || at > epoch {
                self.early.push((id, at, notice));
            }
        }
    }

    /// Hands the store's notices to the connections holding their session at
    /// their epoch, as each node's hub does. Across sessions the store's order is
    /// not meaningful (and a hash map's): sorted by session for a stable
    /// transcript, each session's own notices kept in order.
    fn route_notices(&mut self) {
        let mut notices = self.notices.take();
        notices.sort_by(|a, b| a.0.cmp(&b.0));
        for (session_id, epoch, notice) in notices {
            match self.routes.get(&session_id) {
                Some((at, conn)) if *at == epoch => {
                    self.inbox.push_back((conn.clone(), notice_input(notice)));
                }
                // For a connection already replaced on this node: nobody to tell.
                Some((at, _)) if *at > epoch => {}
                _ => self.early.push((session_id, epoch, notice)),
            }
        }
    }
}

/// Runs a store call to completion: the in-memory store never waits.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-memory store waited; the simulator cannot"),
    }
}

/// What a store notice is to the connection it reaches.
fn notice_input(notice: Notice) -> Input<'static> {
    match notice {
        Notice::Deliver(delivery) => Input::Deliver(delivery),
        Notice::Replaced => Input::Replaced,
        Notice::Revoked { revocation, at_ms } => Input::Revoked {
            revocation,
            issued_at_ms: at_ms,
        },
    }
}

/// A store request as the transcript shows it.
fn describe_request(request: &StoreRequest, grace_ms: u64) -> String {
    match request {
        StoreRequest::CreateSession { claims, .. } => {
            format!("store: create a session for {}", claims.sub)
        }
        StoreRequest::ResumeSession {
            session_id,
            resume_token,
            ..
        } => format!("store: resume {session_id} with {}", resume_token.expose()),
        StoreRequest::RefreshSession { attachment, .. } => format!(
            "store: record the refreshed token of {}",
            attachment.session_id
        ),
        StoreRequest::Subscribe {
            attachment,
            channel,
            ..
        } => format!("store: subscribe {} to {channel}", attachment.session_id),
        StoreRequest::Publish { channel, .. } => format!("store: publish to {channel}"),
        StoreRequest::Unsubscribe {
            attachment,
            channel,
        } => format!(
            "store: unsubscribe {} from {channel}",
            attachment.session_id
        ),
        StoreRequest::NoteExpiringSent { attachment } => format!(
            "store: note the expiring notice of {}",
            attachment.session_id
        ),
        StoreRequest::DetachSession { attachment } => {
            format!(
                "store: detach {} (resumable for {})",
                attachment.session_id,
                human_ms(grace_ms)
            )
        }
        StoreRequest::EndSession { attachment } => {
            format!("store: end {} for good", attachment.session_id)
        }
    }
}

fn describe_reply(reply: &Reply) -> String {
    match reply {
        Reply::Verified(c) => {
            let mut s = format!("valid, sub={} exp={}", c.sub, c.exp_ms / 1000);
            if let Some(ch) = &c.channels {
                let _ = write!(s, " channels={ch:?}");
            }
            s
        }
        Reply::NotVerified(e) => format!("refused: {e} ({})", e.code()),
        Reply::Created {
            attachment,
            resume_token,
            ..
        } => {
            format!(
                "created {}, resume token {}",
                attachment.session_id,
                resume_token.expose()
            )
        }
        Reply::Revoked => "revoked".to_owned(),
        Reply::TooManySessions => "refused: per-user limit reached".to_owned(),
        Reply::Resumed { session: s, .. } => format!(
            "resumed, new resume token {}, {} buffered, last seq {}",
            s.resume_token.expose(),
            s.buffered.len(),
            s.last_seq
        ),
        Reply::NotFound => "not found".to_owned(),
        Reply::Refreshed => "ok".to_owned(),
        Reply::Subscribed => "ok".to_owned(),
        Reply::Published => "accepted".to_owned(),
        Reply::Unavailable => "unavailable".to_owned(),
    }
}

fn describe_call(result: &CallResult) -> String {
    match result {
        CallResult::Ok(data) => format!("ok {}", data.get()),
        CallResult::AppError { message, details } => {
            // Long details are summarised: the transcript shows their size, not them.
            let details = details
                .as_ref()
                .map_or_else(String::new, |d| match d.get() {
                    json if json.len() <= 200 => format!(" details {json}"),
                    json => format!(" details ({} bytes of JSON)", json.len()),
                });
            format!("refused {message:?}{details}")
        }
        CallResult::NotFound => "no such method".to_owned(),
        CallResult::Unavailable => "unavailable".to_owned(),
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::Authenticated { method, user } => {
            format!("authenticated {user} by {}", method_name(*method))
        }
        Event::AuthFailed { method, code } => {
            format!("authentication by {} failed: {code}", method_name(*method))
        }
        Event::Resumed { replayed, gap } => format!("resumed: {replayed} replayed, gap={gap}"),
        Event::Refreshed { remaining_ms } => {
            format!(
                "refreshed with {} left on the old token",
                human_ms(*remaining_ms)
            )
        }
        Event::RefreshFailed { code } => format!("refresh failed: {code}"),
        Event::ExpiringSent => "expiring notice sent".to_owned(),
        Event::RateLimited => "rate limit hit".to_owned(),
        Event::CallEnded { outcome } => format!("call ended: {}", outcome.as_str()),
        Event::Refused { user, .. } => format!("store refused a token of {user}"),
        Event::Evicted { sessions } => format!("{sessions} older session(s) evicted"),
        Event::RevocationApplied { .. } => "revocation applied".to_owned(),
        Event::Closed {
            code,
            error,
            session,
            ..
        } => {
            let code = code.map_or_else(|| "no close frame".to_owned(), |c| format!("close {c}"));
            let error = error.map_or_else(String::new, |e| format!(" after {e}"));
            let session = match session {
                SessionFate::None => "no session",
                SessionFate::Detached => "session resumable",
                SessionFate::Ended => "session ended",
                SessionFate::Replaced => "session taken over",
            };
            format!("closed ({code}{error}; {session})")
        }
    }
}

fn method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Header => "header",
        AuthMethod::Query => "query token",
        AuthMethod::Message => "message",
        AuthMethod::Resume => "resume",
    }
}

/// `1500` → `1.5s`, `60000` → `60s`, `250` → `250ms`.
fn human_ms(ms: u64) -> String {
    if ms >= 1000 && ms.is_multiple_of(100) {
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
        }
    } else {
        format!("{ms}ms")
    }
}
