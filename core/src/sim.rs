//! A deterministic, single-threaded world for driving [`Connection`]s without I/O:
//! a virtual clock, a small in-memory store with the protocol's semantics, and a
//! transcript of everything that crosses the machine's boundary.
//!
//! The project's transcripts (the readable specification), property tests,
//! exhaustive exploration and fuzz targets all drive the machine through it, and an
//! embedder can use it to test a custom verifier or configuration the same way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::jwt::{Claims, TokenError};
use crate::machine::{
    Attachment, Connection, Delivery, Event, Frame, Input, Output, PeerClose, Reply, RequestId,
    ResumedSession, Revocation, SessionConfig, SessionFate, StoreRequest,
};
use crate::protocol::{Payload, Secret};

/// What the per-user session limit does when it is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitPolicy {
    /// Close the oldest session with `SESSION_REPLACED`.
    EvictOldest,
    /// Refuse the new one with `TOO_MANY_SESSIONS`.
    RejectNew,
}

/// The simulated store's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long a detached session stays resumable [30000].
    pub resume_grace_ms: u64,
    /// Messages kept per session for replay [256].
    pub resume_buffer: usize,
    /// Sessions per `sub`, detached ones within their grace included [unlimited].
    pub max_sessions_per_user: Option<usize>,
    /// What the limit does.
    pub limit_policy: LimitPolicy,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            resume_grace_ms: 30_000,
            resume_buffer: 256,
            max_sessions_per_user: None,
            limit_policy: LimitPolicy::EvictOldest,
        }
    }
}

/// Verifies a token at a time: the real [`crate::jwt::Verifier`] or a stand-in.
pub type VerifyFn = Arc<dyn Fn(&str, u64) -> Result<Claims, TokenError> + Send + Sync>;

#[derive(Clone, Debug)]
struct StoredSession {
    claims: Arc<Claims>,
    resume_token: String,
    attached: Option<String>,
    epoch: u64,
    detached_at: Option<u64>,
    created_seq: u64,
    authorized_at_ms: u64,
    expiring_sent: bool,
    joined: BTreeSet<String>,
    buffer: VecDeque<Delivery>,
    last_seq: u64,
}

/// The simulated world. Connections are named (`"A"`, `"B"`) so that transcripts
/// of several clients read well.
#[derive(Clone)]
pub struct World {
    start: u64,
    now: u64,
    config: Arc<SessionConfig>,
    store_config: StoreConfig,
    verify: VerifyFn,
    conns: BTreeMap<String, Connection>,
    sessions: BTreeMap<String, StoredSession>,
    revocations: Vec<Revocation>,
    next_id: u64,
    inbox: VecDeque<(String, Input<'static>)>,
    held: Vec<(String, RequestId, Reply)>,
    labels: Vec<(String, String)>,
    lines: Vec<String>,
    last_deadline: BTreeMap<String, Option<u64>>,
    /// When false, every store request that expects a reply gets `Unavailable`.
    pub store_available: bool,
    /// When true, replies are computed but held until [`World::release`].
    pub hold_replies: bool,
    /// When false, timer lines are left out of the transcript.
    pub show_timers: bool,
    /// When false, no transcript is kept (fast exploration).
    pub record_transcript: bool,
    outputs: Vec<(String, Output)>,
}

impl World {
    /// A world at `start_ms` with these settings.
    pub fn new(
        start_ms: u64,
        config: SessionConfig,
        store_config: StoreConfig,
        verify: VerifyFn,
    ) -> Self {
        World {
            start: start_ms,
            now: start_ms,
            config: Arc::new(config),
            store_config,
            verify,
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            revocations: Vec::new(),
            next_id: 0,
            inbox: VecDeque::new(),
            held: Vec::new(),
            labels: Vec::new(),
            lines: Vec::new(),
            last_deadline: BTreeMap::new(),
            store_available: true,
            hold_replies: false,
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

    /// How many sessions the store holds (attached or detached).
    pub fn stored_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The session ids the store holds for `sub`.
    pub fn sessions_of(&self, sub: &str) -> Vec<String> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.claims.sub == sub)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The current resume token of a stored session.
    pub fn resume_token_of(&self, session_id: &str) -> Option<String> {
        self.sessions
            .get(session_id)
            .map(|s| s.resume_token.clone())
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

    /// Opens a connection whose upgrade request carries `Authorization: Bearer`.
    pub fn open_with_header(&mut self, name: &str, token: &str) {
        let conn = Connection::with_upgrade_token(
            self.config.clone(),
            crate::machine::AuthMethod::Header,
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
    /// token decisions of [`crate::upgrade::inspect_upgrade`], then the machine.
    pub fn open_upgrade(
        &mut self,
        name: &str,
        headers: &[(&str, &str)],
        query: Option<&str>,
        policy: &crate::upgrade::UpgradePolicy,
    ) {
        let shown: Vec<String> = headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", self.redact(v)))
            .collect();
        let target = query.map_or_else(|| "/ws".to_owned(), |q| format!("/ws?{}", self.redact(q)));
        self.line(name, format!("GET {target} {}", shown.join(", ")));
        let decision = crate::upgrade::inspect_upgrade(
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            query,
            policy,
        );
        match decision {
            crate::upgrade::UpgradeDecision::Refuse { status, body } => {
                self.line(name, format!("-> HTTP {status} {}", body.to_json()));
            }
            crate::upgrade::UpgradeDecision::Proceed { subprotocol, token } => {
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
        };
        self.line(name, shown);
        self.feed(name, Input::Frame(frame));
    }

    /// The client answers a ping (or pings): a control frame.
    pub fn pong(&mut self, name: &str) {
        self.line(name, "<- pong".to_owned());
        self.feed(name, Input::Control);
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

    /// An operator revokes something: recorded in the store, then every connection
    /// is told.
    pub fn revoke(&mut self, revocation: Revocation) {
        let shown = match &revocation {
            Revocation::Token { jti } => format!("operator revokes token jti={jti}"),
            Revocation::Subject { sub, at_s } => {
                format!("operator revokes user {sub} (tokens issued at or before {at_s}s)")
            }
            Revocation::Session { session_id } => format!("operator revokes session {session_id}"),
        };
        self.push_line(format!("{:<9}   ** {shown}", self.stamp()));
        if let Revocation::Session { session_id } = &revocation {
            self.sessions.remove(session_id);
        } else {
            let r = revocation.clone();
            self.sessions.retain(|_, s| !r.refuses_token(&s.claims));
        }
        self.revocations.push(revocation.clone());
        let names: Vec<String> = self.conns.keys().cloned().collect();
        for name in names {
            self.feed(
                &name,
                Input::Revoked {
                    revocation: revocation.clone(),
                    issued_at_ms: self.now,
                },
            );
        }
    }

    /// Someone outside publishes to a channel.
    pub fn publish_external(&mut self, channel: &str, from: &str, data: &str) {
        self.push_line(format!(
            "{:<9}   ** {from} publishes to {channel} from elsewhere: {data}",
            self.stamp()
        ));
        if let Ok(payload) = Payload::from_json(data) {
            let n = self.fan_out(channel, from, payload);
            self.push_line(format!(
                "{:<9}   ** delivered to {n} session(s)",
                self.stamp()
            ));
        }
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
                Output::Listen(_) => {}
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

    fn fresh_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn revoked(&self, claims: &Claims) -> bool {
        self.revocations.iter().any(|r| r.refuses_token(claims))
    }

    fn store(&mut self, name: &str, req: StoreRequest) {
        let now = self.now;
        let (request, reply, shown) = match req {
            StoreRequest::CreateSession {
                request, claims, ..
            } => {
                let shown = format!("store: create a session for {}", claims.sub);
                let reply = if !self.store_available {
                    Reply::Unavailable
                } else if self.revoked(&claims) {
                    Reply::Revoked
                } else if !self.make_room_for(&claims.sub) {
                    Reply::TooManySessions
                } else {
                    let session_id = self.fresh_id("s_");
                    let resume_token = self.fresh_id("r_");
                    self.sessions.insert(
                        session_id.clone(),
                        StoredSession {
                            claims: claims.clone(),
                            resume_token: resume_token.clone(),
                            attached: Some(name.to_owned()),
                            epoch: self.next_id,
                            detached_at: None,
                            created_seq: self.next_id,
                            authorized_at_ms: now,
                            expiring_sent: false,
                            joined: BTreeSet::new(),
                            buffer: VecDeque::new(),
                            last_seq: 0,
                        },
                    );
                    Reply::Created {
                        attachment: Attachment {
                            session_id,
                            epoch: self.next_id,
                        },
                        resume_token: Secret::new(resume_token),
                        evicted: 0,
                    }
                };
                (request, reply, shown)
            }
            StoreRequest::ResumeSession {
                request,
                session_id,
                resume_token,
            } => {
                let shown = format!("store: resume {session_id} with {}", resume_token.expose());
                let reply = if self.store_available {
                    self.resume(name, &session_id, resume_token.expose())
                } else {
                    Reply::Unavailable
                };
                (request, reply, shown)
            }
            StoreRequest::RefreshSession {
                request,
                attachment,
                claims,
                now_ms,
            } => {
                let session_id = &attachment.session_id;
                let shown = format!("store: record the refreshed token of {session_id}");
                let reply = if !self.store_available {
                    Reply::Unavailable
                } else if self.revoked(&claims) {
                    Reply::Revoked
                } else if let Some(s) = self.current(&attachment) {
                    s.claims = claims;
                    s.authorized_at_ms = now_ms;
                    s.expiring_sent = false;
                    Reply::Refreshed
                } else {
                    Reply::Unavailable
                };
                (request, reply, shown)
            }
            StoreRequest::Subscribe {
                request,
                attachment,
                channel,
            } => {
                let shown = format!("store: subscribe {} to {channel}", attachment.session_id);
                let available = self.store_available;
                let reply = match self.current(&attachment) {
                    Some(s) if available => {
                        s.joined.insert(channel);
                        Reply::Subscribed
                    }
                    _ => Reply::Unavailable,
                };
                (request, reply, shown)
            }
            StoreRequest::Publish {
                request,
                channel,
                from,
                data,
            } => {
                let (reply, shown) = if self.store_available {
                    let n = self.fan_out(&channel, &from, data);
                    let shown = format!("store: publish to {channel} ({n} subscriber(s))");
                    (Reply::Published, shown)
                } else {
                    (Reply::Unavailable, format!("store: publish to {channel}"))
                };
                (request, reply, shown)
            }
            StoreRequest::Unsubscribe {
                attachment,
                channel,
            } => {
                let session_id = &attachment.session_id;
                if let Some(s) = self.current(&attachment) {
                    s.joined.remove(&channel);
                }
                self.line(
                    name,
                    format!(".. store: unsubscribe {session_id} from {channel}"),
                );
                return;
            }
            StoreRequest::NoteExpiringSent { attachment } => {
                let session_id = &attachment.session_id;
                if let Some(s) = self.current(&attachment) {
                    s.expiring_sent = true;
                }
                self.line(
                    name,
                    format!(".. store: note the expiring notice of {session_id}"),
                );
                return;
            }
            StoreRequest::DetachSession { attachment } => {
                let session_id = &attachment.session_id;
                if let Some(s) = self.current(&attachment) {
                    s.attached = None;
                    s.detached_at = Some(now);
                }
                self.line(
                    name,
                    format!(".. store: detach {session_id} (resumable for {})", {
                        human_ms(self.store_config.resume_grace_ms)
                    }),
                );
                return;
            }
            StoreRequest::EndSession { attachment } => {
                let session_id = &attachment.session_id;
                if self.current(&attachment).is_some() {
                    self.sessions.remove(session_id);
                }
                self.line(name, format!(".. store: end {session_id} for good"));
                return;
            }
        };
        self.line(name, format!(".. {shown}: {}", describe_reply(&reply)));
        self.answer(name, request, reply);
    }

    /// The session, if this attachment still holds it (a replaced connection's
    /// epoch is stale and changes nothing).
    fn current(&mut self, attachment: &Attachment) -> Option<&mut StoredSession> {
        self.sessions
            .get_mut(&attachment.session_id)
            .filter(|s| s.epoch == attachment.epoch)
    }

    /// Enforces the per-user limit before a new session; false when it refuses.
    fn make_room_for(&mut self, sub: &str) -> bool {
        self.expire_grace();
        let Some(max) = self.store_config.max_sessions_per_user else {
            return true;
        };
        let mut mine: Vec<(u64, String)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.claims.sub == sub)
            .map(|(id, s)| (s.created_seq, id.clone()))
            .collect();
        if mine.len() < max {
            return true;
        }
        if self.store_config.limit_policy == LimitPolicy::RejectNew {
            return false;
        }
        mine.sort();
        let excess = mine.len() + 1 - max;
        for (_, id) in mine.into_iter().take(excess) {
            if let Some(s) = self.sessions.remove(&id)
                && let Some(conn) = s.attached
            {
                self.inbox.push_back((conn, Input::Replaced));
            }
        }
        true
    }

    fn expire_grace(&mut self) {
        let now = self.now;
        let grace = self.store_config.resume_grace_ms;
        self.sessions.retain(|_, s| {
            s.detached_at
                .is_none_or(|at| now < at.saturating_add(grace))
        });
    }

    fn resume(&mut self, name: &str, session_id: &str, token: &str) -> Reply {
        self.expire_grace();
        let revoked = match self.sessions.get(session_id) {
            Some(s) if s.resume_token == token => self.revoked(&s.claims),
            _ => return Reply::NotFound,
        };
        if revoked {
            self.sessions.remove(session_id);
            return Reply::NotFound;
        }
        let new_token = self.fresh_id("r_");
        let epoch = self.next_id;
        let Some(s) = self.sessions.get_mut(session_id) else {
            return Reply::NotFound;
        };
        s.resume_token = new_token.clone();
        s.epoch = epoch;
        s.detached_at = None;
        if let Some(old) = s.attached.replace(name.to_owned())
            && old != name
        {
            self.inbox.push_back((old, Input::Replaced));
        }
        let session = Box::new(ResumedSession {
            session_id: session_id.to_owned(),
            resume_token: Secret::new(new_token),
            claims: s.claims.clone(),
            authorized_at_ms: s.authorized_at_ms,
            expiring_sent: s.expiring_sent,
            channels: s.joined.iter().cloned().collect(),
            buffered: s.buffer.iter().cloned().collect(),
            last_seq: s.last_seq,
        });
        Reply::Resumed { session, epoch }
    }

    /// Appends a message to every joined session's buffer with its next `seq`, and
    /// hands it to the attached connections. Returns how many sessions got it.
    fn fan_out(&mut self, channel: &str, from: &str, data: Payload) -> usize {
        let cap = self.store_config.resume_buffer;
        let mut n = 0;
        let (channel_name, publisher): (Arc<str>, Arc<str>) = (channel.into(), from.into());
        for s in self.sessions.values_mut() {
            if !s.joined.contains(channel) {
                continue;
            }
            n += 1;
            s.last_seq += 1;
            let delivery = Delivery {
                channel: channel_name.clone(),
                from: publisher.clone(),
                seq: s.last_seq,
                data: data.clone(),
            };
            s.buffer.push_back(delivery.clone());
            while s.buffer.len() > cap {
                s.buffer.pop_front();
            }
            if let Some(conn) = &s.attached {
                self.inbox
                    .push_back((conn.clone(), Input::Deliver(delivery)));
            }
        }
        n
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

fn method_name(method: crate::machine::AuthMethod) -> &'static str {
    use crate::machine::AuthMethod;
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

/// A broken invariant: its name (as the tests and docs name it) and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// The connection concerned.
    pub conn: String,
    /// What was seen.
    pub detail: String,
}

/// The invariants every property test, the exhaustive exploration and the fuzz
/// target check after every step.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "nothing_before_auth",
        "no reply but an error is sent before `authenticated` or `resumed`",
    ),
    (
        "no_session_live_past_expiry",
        "no session is live at or past `exp` + leeway",
    ),
    (
        "close_is_terminal",
        "after the connection's close, nothing more is emitted",
    ),
    (
        "one_reply_per_request",
        "every request with an `id` gets exactly one reply or error with that `id`, unless the connection closes first (logout's only reply is the close)",
    ),
    ("refresh_keeps_sub", "a session's `sub` never changes"),
    (
        "fatal_error_then_close",
        "every fatal error is followed by the close code of its row (1007 for invalid UTF-8), with nothing sent in between",
    ),
    (
        "deadline_while_waiting_for_auth",
        "a deadline is always armed while the connection waits for authentication",
    ),
];

#[derive(Clone, Debug, Default)]
struct Track {
    live_seen: bool,
    closed: bool,
    user: Option<String>,
    awaiting_close: Option<crate::CloseCode>,
    outstanding: BTreeMap<u64, usize>,
}

/// Checks [`INVARIANTS`] over a [`World`]'s outputs and state.
#[derive(Clone, Debug, Default)]
pub struct InvariantChecker {
    tracks: BTreeMap<String, Track>,
}

impl InvariantChecker {
    /// A checker with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets a connection's history: its name is being reused for a new one.
    pub fn forget(&mut self, conn: &str) {
        self.tracks.remove(conn);
    }

    /// Registers a frame the client sent, to follow its request id.
    pub fn client_sent(&mut self, conn: &str, text: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return;
        };
        let track = self.tracks.entry(conn.to_owned()).or_default();
        if track.closed || value.get("type").and_then(|t| t.as_str()) == Some("logout") {
            return;
        }
        if let Some(id) = value.get("id").and_then(serde_json::Value::as_u64) {
            *track.outstanding.entry(id).or_default() += 1;
        }
    }

    /// Checks the outputs carried out since the last call, then the state of every
    /// connection. Call it after each step, when the world is quiet.
    pub fn check(&mut self, world: &mut World) -> Result<(), Violation> {
        let outputs = world.take_outputs();
        self.check_outputs(&outputs)?;
        self.check_state(world)
    }

    /// Checks outputs, in the order they were carried out.
    pub fn check_outputs(&mut self, outputs: &[(String, Output)]) -> Result<(), Violation> {
        for (conn, output) in outputs {
            self.check_output(conn, output)?;
        }
        Ok(())
    }

    /// Checks the state of every connection; call it when the world is quiet.
    pub fn check_state(&mut self, world: &World) -> Result<(), Violation> {
        for name in world.conn_names() {
            let Some(c) = world.conn(&name) else { continue };
            let track = self.tracks.entry(name.clone()).or_default();
            let fail = |invariant: &'static str, detail: String| Violation {
                invariant,
                conn: name.clone(),
                detail,
            };
            if let Some(deadline) = c.expiry_deadline()
                && world.now() >= deadline
            {
                return Err(fail(
                    "no_session_live_past_expiry",
                    format!("live at {} with deadline {deadline}", world.now()),
                ));
            }
            if !c.is_closed() && !c.is_authenticated() && c.poll_timeout().is_none() {
                return Err(fail("deadline_while_waiting_for_auth", "no timer".into()));
            }
            if let (Some(user), Some(now_user)) = (&track.user, c.user())
                && user != now_user
            {
                return Err(fail(
                    "refresh_keeps_sub",
                    format!("{user} became {now_user}"),
                ));
            }
            if c.is_closed() {
                track.outstanding.clear();
            } else if !c.is_busy() && !world.hold_replies && !track.outstanding.is_empty() {
                return Err(fail(
                    "one_reply_per_request",
                    format!("unanswered ids {:?}", track.outstanding.keys()),
                ));
            }
        }
        Ok(())
    }

    fn check_output(&mut self, conn: &str, output: &Output) -> Result<(), Violation> {
        let track = self.tracks.entry(conn.to_owned()).or_default();
        let fail = |invariant: &'static str, detail: String| Violation {
            invariant,
            conn: conn.to_owned(),
            detail,
        };
        if track.closed {
            return Err(fail("close_is_terminal", format!("{output:?}")));
        }
        if let Some(expected) = track.awaiting_close {
            match output {
                Output::Close { code, .. } if *code == expected => track.awaiting_close = None,
                Output::Close { code, .. } => {
                    return Err(fail(
                        "fatal_error_then_close",
                        format!("close {code}, expected {expected}"),
                    ));
                }
                Output::Store(_) | Output::Event(_) => {}
                other => {
                    return Err(fail(
                        "fatal_error_then_close",
                        format!("{other:?} between a fatal error and its close"),
                    ));
                }
            }
        }
        match output {
            Output::Send(msg) => {
                use crate::protocol::ServerMessage as M;
                match msg {
                    M::Authenticated { user_id, .. } => {
                        track.live_seen = true;
                        track.user.get_or_insert_with(|| user_id.clone());
                    }
                    M::Resumed { .. } => track.live_seen = true,
                    M::Error {
                        fatal,
                        code,
                        message,
                        ..
                    } if *fatal => {
                        let close = if message.contains("UTF-8") {
                            crate::CloseCode::INVALID_PAYLOAD
                        } else {
                            code.close_code().unwrap_or(crate::CloseCode::CLIENT_BUG)
                        };
                        track.awaiting_close = Some(close);
                    }
                    _ if !track.live_seen => {
                        return Err(fail("nothing_before_auth", format!("{msg:?}")));
                    }
                    _ => {}
                }
                if let Some(id) = msg.id() {
                    match track.outstanding.get_mut(&id) {
                        Some(n) if *n > 1 => *n -= 1,
                        Some(_) => {
                            track.outstanding.remove(&id);
                        }
                        None => {
                            return Err(fail(
                                "one_reply_per_request",
                                format!("reply to id {id} that is not outstanding"),
                            ));
                        }
                    }
                }
            }
            Output::Event(Event::Closed { .. }) => {
                if let Some(expected) = track.awaiting_close {
                    return Err(fail(
                        "fatal_error_then_close",
                        format!("closed without the close {expected}"),
                    ));
                }
                track.closed = true;
            }
            _ => {}
        }
        Ok(())
    }
}
