//! The client's sans-IO state machine: no sockets, no clock, no randomness of its own.
//!
//! A driver feeds [`Input`]s with the current time (Unix milliseconds) through
//! [`Machine::handle`] and carries out every [`Action`] that [`Machine::poll_action`]
//! returns, in order. Randomness (the backoff's jitter) comes from the [`Rng`] given at
//! construction, so tests replay the same waits. The JavaScript client in `clients/js`
//! has the same shape: the same inputs, actions, timers and events.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde_json::{Value, json};
pub use wsauth_core::Retry;

/// Identifies one application request (join, leave, publish, rpc, logout) across the
/// machine and its driver. The driver picks it.
pub type ReqId = u64;

/// A source of randomness for the backoff's jitter.
pub trait Rng: Send {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64;
}

/// A small seedable generator (SplitMix64): good enough for jitter, reproducible in tests.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl Rng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How the token is presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// `Authorization: Bearer` on the upgrade request (the default).
    #[default]
    Header,
    /// An `auth` message right after the socket opens.
    Message,
}

/// The machine's settings; every duration in milliseconds.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How the token is presented.
    pub auth: AuthMode,
    /// The backoff's base: attempt n waits uniform in [0, min(cap, base·2^n)].
    pub backoff_base_ms: u64,
    /// The backoff's cap.
    pub backoff_cap_ms: u64,
    /// The first wait after a server close 1001, 1011 or 1013 is uniform in [0, this].
    pub server_restart_wait_ms: u64,
    /// A token callback that takes longer is a failed attempt.
    pub token_timeout_ms: u64,
    /// The connection is lost when no `pong` answers a `ping` within this.
    pub pong_timeout_ms: u64,
    /// The connection is lost when it is not authenticated (or resumed) within this of opening.
    pub auth_timeout_ms: u64,
    /// How long a `logout` waits for the server's close.
    pub close_timeout_ms: u64,
    /// The silence after which a `ping` is sent; `None`: the `heartbeat_ms` of
    /// `authenticated`.
    pub silence_ms: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auth: AuthMode::Header,
            backoff_base_ms: 250,
            backoff_cap_ms: 30_000,
            server_restart_wait_ms: 5_000,
            token_timeout_ms: 10_000,
            pong_timeout_ms: 10_000,
            auth_timeout_ms: 10_000,
            close_timeout_ms: 5_000,
            silence_ms: None,
        }
    }
}

/// The timers the machine sets; at most one of each kind at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The backoff before the next connection attempt.
    Reconnect,
    /// The bound on the token callback.
    TokenDeadline,
    /// The backoff before retrying a failed refresh.
    RefreshRetry,
    /// Nothing heard for `heartbeat_ms`: send a `ping`.
    Silence,
    /// No `pong` in time: the connection is lost.
    PongDeadline,
    /// Not authenticated in time after the socket opened.
    AuthDeadline,
    /// The server did not close after `logout`.
    CloseDeadline,
    /// The per-call timeout of an rpc.
    Rpc(ReqId),
}

/// A command of the application.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Join a channel (kept across reconnections).
    Join(ReqId, String),
    /// Leave a channel.
    Leave(ReqId, String),
    /// Publish to a channel (at most once).
    Publish(ReqId, String, Value),
    /// Call the application (at most once), with a timeout in ms.
    Rpc(ReqId, String, Value, u64),
    /// End the session for good (close 1000 by the server).
    Logout(ReqId),
    /// Go offline: close with 4000; the session stays resumable.
    Disconnect,
    /// Come back after [`Command::Disconnect`]: resume, or authenticate.
    Reconnect,
    /// Stop: close with 1000 and stop every timer.
    Close,
}

/// What happened, as the driver tells it.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Begin connecting.
    Start,
    /// The socket `conn` is open (header authentication, if any, succeeded).
    Opened(u64),
    /// The socket `conn` ended: a close frame from the server with its code, or a drop
    /// or a failed connection (`None`).
    Closed(u64, Option<u16>),
    /// The server refused the upgrade of `conn`: HTTP status, and the body's code and
    /// `retry` when it had them.
    Refused {
        /// The socket.
        conn: u64,
        /// The HTTP status.
        status: u16,
        /// The body's `code`.
        code: Option<String>,
        /// The body's `retry`.
        retry: Option<Retry>,
    },
    /// A text frame arrived on `conn`.
    Frame(u64, String),
    /// A WebSocket ping or pong arrived on `conn`: the server is alive.
    Heard(u64),
    /// A timer fired.
    Timer(TimerKind),
    /// The token callback `id` finished.
    Token(u64, Result<String, String>),
    /// An application command.
    Command(Command),
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open socket `conn`, with `Authorization: Bearer <bearer>` when given.
    Open {
        /// The socket's number; later inputs name it.
        conn: u64,
        /// The header token.
        bearer: Option<String>,
    },
    /// Send a text frame on the current socket.
    Send(String),
    /// Close the current socket with this code (a close frame; then forget it).
    Close(u16),
    /// Drop the current socket without a close handshake (it is dead).
    Drop,
    /// Set (or move) a timer to fire at this Unix time in ms.
    SetTimer(TimerKind, u64),
    /// Cancel a timer.
    CancelTimer(TimerKind),
    /// Call the token callback; answer with [`Input::Token`] and this id.
    RequestToken(u64),
    /// Give an event to the application.
    Emit(Event),
    /// A request succeeded.
    Complete(ReqId, Value),
    /// A request failed.
    Fail(ReqId, RpcError),
}

/// The connection's state, as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Getting a token or opening a socket.
    Connecting,
    /// The socket is open; authenticating or resuming.
    Authenticating,
    /// Authenticated: requests flow.
    Live,
    /// Waiting before the next attempt.
    Reconnecting,
    /// After `disconnect()`: no socket, the session kept for a later resume.
    Offline,
    /// Stopped for good.
    Closed,
}

/// How a session began or continued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// The first session of this client.
    Authenticated,
    /// The session continued on a new connection.
    Resumed,
    /// A new session after the previous one was lost.
    Reauthenticated,
}

/// Why messages may be missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapReason {
    /// `resumed` said `gap: true`.
    Resume,
    /// The session was lost and a new one began: what was sent meanwhile is gone.
    NewSession,
}

/// A channel message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The channel.
    pub channel: String,
    /// The per-session sequence number.
    pub seq: u64,
    /// The publisher's `sub`; `None` when the application sent it.
    pub from: Option<String>,
    /// The data.
    pub data: Value,
}

/// An `error` frame from the server, or a failure of the token callback
/// (code `TOKEN_UNAVAILABLE`, not fatal).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerError {
    /// The code (see `wsauth_core::ErrorCode`).
    pub code: String,
    /// For people.
    pub message: String,
    /// Whether a close follows.
    pub fatal: bool,
    /// The retry hint of a fatal error.
    pub retry: Option<Retry>,
}

/// What the application hears.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The connection's state changed.
    State(State),
    /// A session began or continued.
    Session {
        /// How.
        kind: SessionKind,
        /// The session's id.
        session_id: String,
        /// The token's expiry, Unix ms.
        expires_at: u64,
    },
    /// A channel message, each `seq` once and in order.
    Message(Message),
    /// Messages may be missing.
    Gap(GapReason),
    /// The token is about to expire (a refresh follows on its own).
    Expiring {
        /// The token's `exp` in ms.
        expires_at: u64,
        /// Time left.
        in_ms: u64,
    },
    /// A refresh succeeded.
    Refreshed {
        /// The new expiry.
        expires_at: u64,
    },
    /// The server left a channel on its own (the token no longer allows it).
    Left {
        /// The channel.
        channel: String,
        /// Why (`FORBIDDEN`).
        reason: Option<String>,
    },
    /// An error.
    Error(ServerError),
    /// The final stop: no reconnection follows.
    Closed {
        /// The close code, when there was one.
        code: Option<u16>,
        /// The retry hint that stopped the client (`None` after `logout` or `close`).
        retry: Option<Retry>,
    },
}

/// The code of a failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No handler for the method.
    MethodNotFound,
    /// The application refused the call.
    AppError,
    /// The application did not answer in time or is unreachable.
    Unavailable,
    /// Too many calls in flight.
    Busy,
    /// No answer within the call's timeout.
    Timeout,
    /// Not live, or the connection dropped before the answer: not resent.
    Disconnected,
    /// Another error code from the server (`FORBIDDEN`, `INTERNAL`…).
    Server(String),
}

impl ErrorKind {
    fn from_code(code: &str) -> ErrorKind {
        match code {
            "METHOD_NOT_FOUND" => ErrorKind::MethodNotFound,
            "APP_ERROR" => ErrorKind::AppError,
            "UNAVAILABLE" => ErrorKind::Unavailable,
            "BUSY" => ErrorKind::Busy,
            other => ErrorKind::Server(other.to_owned()),
        }
    }
}

/// Why a request (rpc, join, leave, publish, logout) failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RpcError {
    /// What went wrong.
    pub code: ErrorKind,
    /// For people.
    pub message: String,
    /// The application's details of an `APP_ERROR`.
    pub details: Option<Value>,
}

impl RpcError {
    /// A [`ErrorKind::Disconnected`] error.
    pub fn disconnected() -> RpcError {
        RpcError {
            code: ErrorKind::Disconnected,
            message: "not connected".into(),
            details: None,
        }
    }
}

#[derive(Debug)]
enum Phase {
    Idle,
    WaitToken,
    Opening,
    Authenticating,
    Live,
    Backoff,
    LoggingOut,
    Offline,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Connect,
    Refresh,
}

#[derive(Debug)]
enum Pending {
    Join(String, Vec<ReqId>),
    Leave(Option<ReqId>),
    Publish(ReqId),
    Rpc(ReqId),
    Refresh,
    Auth,
}

#[derive(Debug)]
struct Session {
    id: String,
    resume_token: String,
    expires_at: u64,
}

/// The client's state machine.
pub struct Machine {
    settings: Settings,
    rng: Box<dyn Rng>,
    phase: Phase,
    conn: u64,
    socket: bool,
    session: Option<Session>,
    had_session: bool,
    last_seq: u64,
    heartbeat_ms: u64,
    attempt: u32,
    short_first_wait: bool,
    reauthing: bool,
    connect_token: Option<String>,
    token_req: Option<(u64, Purpose)>,
    next_token_id: u64,
    refresh_due: bool,
    refresh_attempt: u32,
    resume_sent: bool,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    wanted: BTreeSet<String>,
    join_waiters: BTreeMap<String, Vec<ReqId>>,
    rpc_wire: HashMap<ReqId, u64>,
    ping: Option<u64>,
    fatal: Option<(String, Option<Retry>)>,
    logout: Vec<ReqId>,
    timers: BTreeMap<TimerKind, u64>,
    out: VecDeque<Action>,
}

impl Machine {
    /// A machine that has not started; feed [`Input::Start`].
    pub fn new(settings: Settings, rng: Box<dyn Rng>) -> Machine {
        Machine {
            settings,
            rng,
            phase: Phase::Idle,
            conn: 0,
            socket: false,
            session: None,
            had_session: false,
            last_seq: 0,
            heartbeat_ms: 25_000,
            attempt: 0,
            short_first_wait: false,
            reauthing: false,
            connect_token: None,
            token_req: None,
            next_token_id: 0,
            refresh_due: false,
            refresh_attempt: 0,
            resume_sent: false,
            pending: HashMap::new(),
            next_id: 0,
            wanted: BTreeSet::new(),
            join_waiters: BTreeMap::new(),
            rpc_wire: HashMap::new(),
            ping: None,
            fatal: None,
            logout: Vec::new(),
            timers: BTreeMap::new(),
            out: VecDeque::new(),
        }
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// The timers set now, with their deadlines.
    pub fn timers(&self) -> &BTreeMap<TimerKind, u64> {
        &self.timers
    }

    /// Whether the machine stopped for good.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether a refresh (token request or `refresh` frame) is under way.
    pub fn refresh_in_flight(&self) -> usize {
        let token = usize::from(matches!(self.token_req, Some((_, Purpose::Refresh))));
        let sent = self
            .pending
            .values()
            .filter(|p| matches!(p, Pending::Refresh))
            .count();
        token + sent
    }

    /// The channels the application wants joined.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.wanted.iter().map(String::as_str)
    }

    /// Feeds one input at `now` (Unix ms).
    pub fn handle(&mut self, now: u64, input: Input) {
        if matches!(self.phase, Phase::Closed) {
            // After the stop only requests get an answer: they fail.
            if let Input::Command(cmd) = input {
                match cmd {
                    Command::Join(r, _)
                    | Command::Leave(r, _)
                    | Command::Publish(r, _, _)
                    | Command::Rpc(r, _, _, _) => self.fail(r, RpcError::disconnected()),
                    Command::Logout(r) => self.out.push_back(Action::Complete(r, Value::Null)),
                    _ => {}
                }
            }
            return;
        }
        match input {
            Input::Start => {
                if matches!(self.phase, Phase::Idle) {
                    self.begin_attempt(now);
                }
            }
            Input::Opened(c) if c == self.conn && matches!(self.phase, Phase::Opening) => {
                self.on_opened(now)
            }
            Input::Closed(c, code) if c == self.conn && self.socket => {
                self.socket = false;
                self.on_conn_end(now, code);
            }
            Input::Refused {
                conn,
                status,
                code,
                retry,
            } if conn == self.conn && self.socket => {
                self.socket = false;
                let retry = retry.or(match status {
                    401 => Some(Retry::Reauth),
                    403 => Some(Retry::None),
                    _ => Some(Retry::Reconnect),
                });
                let code = code.unwrap_or_else(|| format!("HTTP_{status}"));
                self.emit(Event::Error(ServerError {
                    code: code.clone(),
                    message: format!("upgrade refused with HTTP {status}"),
                    fatal: true,
                    retry,
                }));
                self.fatal = Some((code, retry));
                self.on_conn_end(now, None);
            }
            Input::Frame(c, text) if c == self.conn && self.socket => {
                self.heard(now);
                self.on_frame(now, &text);
            }
            Input::Heard(c) if c == self.conn && self.socket => self.heard(now),
            Input::Timer(kind) if self.timers.get(&kind).is_some_and(|at| *at <= now) => {
                self.timers.remove(&kind);
                self.on_timer(now, kind);
            }
            Input::Token(id, result) => match self.token_req {
                Some((want, purpose)) if want == id => {
                    self.token_req = None;
                    self.cancel(TimerKind::TokenDeadline);
                    self.on_token(now, purpose, result);
                }
                _ => {}
            },
            Input::Command(cmd) => self.on_command(now, cmd),
            _ => {} // stale: an input about an older socket
        }
    }

    // ---- helpers ----

    fn emit(&mut self, event: Event) {
        self.out.push_back(Action::Emit(event));
    }

    fn state(&mut self, state: State) {
        self.emit(Event::State(state));
    }

    fn send(&mut self, frame: Value) {
        self.out.push_back(Action::Send(frame.to_string()));
    }

    fn wire_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn set(&mut self, kind: TimerKind, at: u64) {
        self.timers.insert(kind, at);
        self.out.push_back(Action::SetTimer(kind, at));
    }

    fn cancel(&mut self, kind: TimerKind) {
        if self.timers.remove(&kind).is_some() {
            self.out.push_back(Action::CancelTimer(kind));
        }
    }

    fn fail(&mut self, req: ReqId, error: RpcError) {
        self.out.push_back(Action::Fail(req, error));
    }

    fn complete(&mut self, req: ReqId, value: Value) {
        self.out.push_back(Action::Complete(req, value));
    }

    fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live)
    }

    /// Uniform in [0, min(cap, base·2^attempt)].
    fn jitter(&mut self, attempt: u32) -> u64 {
        let ceiling = self
            .settings
            .backoff_base_ms
            .saturating_mul(1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX))
            .min(self.settings.backoff_cap_ms);
        self.uniform(ceiling)
    }

    /// Uniform in [0, max] (the high bits of a 64×64-bit product: no modulo bias).
    fn uniform(&mut self, max: u64) -> u64 {
        let span = u128::from(max) + 1;
        u64::try_from((u128::from(self.rng.next_u64()) * span) >> 64).unwrap_or(max)
    }

    fn request_token(&mut self, now: u64, purpose: Purpose) {
        self.next_token_id += 1;
        let id = self.next_token_id;
        self.token_req = Some((id, purpose));
        self.out.push_back(Action::RequestToken(id));
        self.set(
            TimerKind::TokenDeadline,
            now + self.settings.token_timeout_ms,
        );
    }

    // ---- connecting ----

    fn begin_attempt(&mut self, now: u64) {
        self.fatal = None;
        self.resume_sent = false;
        self.state(State::Connecting);
        if self.session.is_some() {
            self.open(now, None);
        } else {
            self.phase = Phase::WaitToken;
            if !matches!(self.token_req, Some((_, Purpose::Connect))) {
                // A refresh token under way is not for this: a fresh one.
                self.token_req = None;
                self.request_token(now, Purpose::Connect);
            }
        }
    }

    fn open(&mut self, _now: u64, token: Option<String>) {
        self.phase = Phase::Opening;
        self.conn += 1;
        self.socket = true;
        let bearer = match self.settings.auth {
            AuthMode::Header => token,
            AuthMode::Message => {
                self.connect_token = token;
                None
            }
        };
        self.out.push_back(Action::Open {
            conn: self.conn,
            bearer,
        });
    }

    fn on_opened(&mut self, now: u64) {
        self.phase = Phase::Authenticating;
        self.state(State::Authenticating);
        self.set(TimerKind::AuthDeadline, now + self.settings.auth_timeout_ms);
        let id = self.next_id + 1;
        if let Some(s) = &self.session {
            self.next_id = id;
            let frame = json!({"type": "resume", "id": id, "session_id": s.id,
                "resume_token": s.resume_token, "last_seq": self.last_seq});
            self.pending.insert(id, Pending::Auth);
            self.resume_sent = true;
            self.send(frame);
        } else if let Some(token) = self.connect_token.take() {
            let id = self.wire_id();
            self.pending.insert(id, Pending::Auth);
            self.send(json!({"type": "auth", "id": id, "token": token}));
        }
        // Header authentication: `authenticated` comes on its own.
    }

    fn schedule_reconnect(&mut self, now: u64) {
        self.phase = Phase::Backoff;
        let wait = if self.short_first_wait {
            self.short_first_wait = false;
            let max = self.settings.server_restart_wait_ms;
            self.uniform(max)
        } else {
            self.jitter(self.attempt)
        };
        self.attempt = self.attempt.saturating_add(1);
        self.state(State::Reconnecting);
        self.set(TimerKind::Reconnect, now + wait);
    }

    fn on_token(&mut self, now: u64, purpose: Purpose, result: Result<String, String>) {
        match (purpose, result) {
            (Purpose::Connect, Ok(token)) => {
                if matches!(self.phase, Phase::WaitToken) {
                    self.open(now, Some(token));
                }
            }
            (Purpose::Connect, Err(message)) => {
                self.token_error(message);
                if matches!(self.phase, Phase::WaitToken) {
                    self.schedule_reconnect(now);
                }
            }
            (Purpose::Refresh, Ok(token)) => {
                if self.is_live() {
                    let id = self.wire_id();
                    self.pending.insert(id, Pending::Refresh);
                    self.send(json!({"type": "refresh", "id": id, "token": token}));
                } else {
                    self.refresh_due = true;
                }
            }
            (Purpose::Refresh, Err(message)) => {
                self.token_error(message);
                self.schedule_refresh_retry(now);
            }
        }
    }

    fn token_error(&mut self, message: String) {
        self.emit(Event::Error(ServerError {
            code: "TOKEN_UNAVAILABLE".into(),
            message,
            fatal: false,
            retry: None,
        }));
    }

    // ---- refresh ----

    fn start_refresh(&mut self, now: u64) {
        if !self.is_live() {
            self.refresh_due = true;
            return;
        }
        if self.token_req.is_some() || self.refresh_in_flight() > 0 {
            return; // single flight
        }
        self.refresh_due = false;
        self.cancel(TimerKind::RefreshRetry);
        self.request_token(now, Purpose::Refresh);
    }

    fn schedule_refresh_retry(&mut self, now: u64) {
        let Some(expires_at) = self.session.as_ref().map(|s| s.expires_at) else {
            return;
        };
        if now >= expires_at {
            return; // too late: the server ends the session; then re-authenticate
        }
        let wait = self.jitter(self.refresh_attempt);
        self.refresh_attempt = self.refresh_attempt.saturating_add(1);
        self.set(TimerKind::RefreshRetry, (now + wait).min(expires_at));
    }

    // ---- frames ----

    fn heard(&mut self, now: u64) {
        if matches!(self.phase, Phase::Live | Phase::LoggingOut) {
            self.set(TimerKind::Silence, now + self.heartbeat_ms);
        }
    }

    fn on_frame(&mut self, now: u64, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let id = v.get("id").and_then(Value::as_u64);
        let str_of = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "authenticated" => {
                if let Some(i) = id {
                    self.pending.remove(&i);
                }
                let session_id = str_of("session_id").unwrap_or_default();
                let expires_at = v["expires_at"].as_u64().unwrap_or(0);
                self.heartbeat_ms = self
                    .settings
                    .silence_ms
                    .or(v["heartbeat_ms"].as_u64())
                    .unwrap_or(25_000)
                    .max(1);
                self.session = Some(Session {
                    id: session_id.clone(),
                    resume_token: str_of("resume_token").unwrap_or_default(),
                    expires_at,
                });
                self.last_seq = 0;
                let kind = if self.had_session {
                    SessionKind::Reauthenticated
                } else {
                    SessionKind::Authenticated
                };
                self.had_session = true;
                self.refresh_due = false;
                self.refresh_attempt = 0;
                self.cancel(TimerKind::RefreshRetry);
                self.go_live(now);
                self.emit(Event::Session {
                    kind,
                    session_id,
                    expires_at,
                });
                if kind == SessionKind::Reauthenticated {
                    self.emit(Event::Gap(GapReason::NewSession));
                }
                let channels: Vec<String> = self.wanted.iter().cloned().collect();
                for channel in channels {
                    self.send_join(channel);
                }
            }
            "resumed" => {
                if let Some(i) = id {
                    self.pending.remove(&i);
                }
                self.resume_sent = false;
                let expires_at = v["expires_at"].as_u64().unwrap_or(0);
                let mut session_id = String::new();
                if let Some(s) = &mut self.session {
                    s.resume_token = str_of("resume_token").unwrap_or_default();
                    s.expires_at = expires_at;
                    session_id = s.id.clone();
                }
                self.go_live(now);
                self.emit(Event::Session {
                    kind: SessionKind::Resumed,
                    session_id,
                    expires_at,
                });
                if v["gap"].as_bool() == Some(true) {
                    self.emit(Event::Gap(GapReason::Resume));
                }
                let held: BTreeSet<String> = v["channels"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let wanted: Vec<String> = self.wanted.iter().cloned().collect();
                for channel in wanted {
                    if held.contains(&channel) {
                        for r in self.join_waiters.remove(&channel).unwrap_or_default() {
                            self.complete(r, Value::Null);
                        }
                    } else {
                        self.send_join(channel);
                    }
                }
                for channel in held.difference(&self.wanted.clone()) {
                    let id = self.wire_id();
                    self.pending.insert(id, Pending::Leave(None));
                    self.send(json!({"type": "leave", "id": id, "channel": channel}));
                }
                if self.refresh_due {
                    self.start_refresh(now);
                }
            }
            "expiring" => {
                self.emit(Event::Expiring {
                    expires_at: v["expires_at"].as_u64().unwrap_or(0),
                    in_ms: v["in_ms"].as_u64().unwrap_or(0),
                });
                self.start_refresh(now);
            }
            "refreshed" => {
                if let Some(Pending::Refresh) = id.and_then(|i| self.pending.remove(&i)) {
                    let expires_at = v["expires_at"].as_u64().unwrap_or(0);
                    if let Some(s) = &mut self.session {
                        s.expires_at = expires_at;
                    }
                    self.refresh_attempt = 0;
                    self.cancel(TimerKind::RefreshRetry);
                    self.emit(Event::Refreshed { expires_at });
                }
            }
            "joined" => {
                if let Some(Pending::Join(_, waiters)) = id.and_then(|i| self.pending.remove(&i)) {
                    for r in waiters {
                        self.complete(r, Value::Null);
                    }
                }
            }
            "left" => match id.and_then(|i| self.pending.remove(&i)) {
                Some(Pending::Leave(Some(r))) => self.complete(r, Value::Null),
                Some(_) => {}
                None => {
                    let channel = str_of("channel").unwrap_or_default();
                    self.wanted.remove(&channel);
                    self.emit(Event::Left {
                        channel,
                        reason: str_of("reason"),
                    });
                }
            },
            "published" => {
                if let Some(Pending::Publish(r)) = id.and_then(|i| self.pending.remove(&i)) {
                    self.complete(r, Value::Null);
                }
            }
            "rpc_result" => {
                if let Some(Pending::Rpc(r)) = id.and_then(|i| self.pending.remove(&i)) {
                    self.rpc_wire.remove(&r);
                    self.cancel(TimerKind::Rpc(r));
                    self.complete(r, v.get("data").cloned().unwrap_or(Value::Null));
                }
            }
            "pong" if id.is_some() && id == self.ping => {
                self.ping = None;
                self.cancel(TimerKind::PongDeadline);
            }
            "message" => {
                let seq = v["seq"].as_u64().unwrap_or(0);
                if seq <= self.last_seq {
                    return; // a duplicate (replay overlapping live delivery)
                }
                self.last_seq = seq;
                self.emit(Event::Message(Message {
                    channel: str_of("channel").unwrap_or_default(),
                    seq,
                    from: str_of("from"),
                    data: v.get("data").cloned().unwrap_or(Value::Null),
                }));
            }
            "error" => self.on_error(now, id, &v),
            _ => {}
        }
    }

    fn on_error(&mut self, now: u64, id: Option<u64>, v: &Value) {
        let code = v["code"].as_str().unwrap_or("").to_owned();
        let message = v["message"].as_str().unwrap_or("").to_owned();
        let fatal = v["fatal"].as_bool().unwrap_or(false);
        let retry = match v["retry"].as_str() {
            Some("reconnect") => Some(Retry::Reconnect),
            Some("reauth") => Some(Retry::Reauth),
            Some("none") => Some(Retry::None),
            _ => None,
        };
        self.emit(Event::Error(ServerError {
            code: code.clone(),
            message: message.clone(),
            fatal,
            retry,
        }));
        if fatal {
            self.fatal = Some((code.clone(), retry));
        }
        let error = RpcError {
            code: ErrorKind::from_code(&code),
            message,
            details: v.get("details").cloned(),
        };
        match id.and_then(|i| self.pending.remove(&i)) {
            Some(Pending::Refresh) => {
                if !fatal {
                    self.schedule_refresh_retry(now);
                }
            }
            Some(Pending::Join(channel, waiters)) => {
                if !fatal {
                    // Refused (FORBIDDEN, too many channels): no longer wanted.
                    self.wanted.remove(&channel);
                    for r in waiters {
                        self.fail(r, error.clone());
                    }
                } else {
                    self.join_waiters
                        .entry(channel)
                        .or_default()
                        .extend(waiters);
                }
            }
            Some(Pending::Leave(Some(r)) | Pending::Publish(r)) => self.fail(r, error),
            Some(Pending::Rpc(r)) => {
                self.rpc_wire.remove(&r);
                self.cancel(TimerKind::Rpc(r));
                self.fail(r, error);
            }
            Some(Pending::Leave(None) | Pending::Auth) | None => {}
        }
    }

    fn go_live(&mut self, now: u64) {
        self.phase = Phase::Live;
        self.attempt = 0;
        self.short_first_wait = false;
        self.reauthing = false;
        self.cancel(TimerKind::AuthDeadline);
        self.state(State::Live);
        self.set(TimerKind::Silence, now + self.heartbeat_ms);
    }

    fn send_join(&mut self, channel: String) {
        let id = self.wire_id();
        let waiters = self.join_waiters.remove(&channel).unwrap_or_default();
        self.send(json!({"type": "join", "id": id, "channel": channel}));
        self.pending.insert(id, Pending::Join(channel, waiters));
    }

    // ---- timers ----

    fn on_timer(&mut self, now: u64, kind: TimerKind) {
        match kind {
            TimerKind::Reconnect => {
                if matches!(self.phase, Phase::Backoff) {
                    self.begin_attempt(now);
                }
            }
            TimerKind::TokenDeadline => {
                if let Some((_, purpose)) = self.token_req.take() {
                    let bound = self.settings.token_timeout_ms;
                    self.on_token(
                        now,
                        purpose,
                        Err(format!("the token callback took more than {bound} ms")),
                    );
                }
            }
            TimerKind::RefreshRetry => self.start_refresh(now),
            TimerKind::Silence => {
                if self.socket && self.ping.is_none() {
                    let id = self.wire_id();
                    self.ping = Some(id);
                    self.send(json!({"type": "ping", "id": id}));
                    self.set(TimerKind::PongDeadline, now + self.settings.pong_timeout_ms);
                }
            }
            TimerKind::PongDeadline | TimerKind::AuthDeadline => {
                if self.socket {
                    self.socket = false;
                    self.out.push_back(Action::Drop);
                    self.on_conn_end(now, None);
                }
            }
            TimerKind::CloseDeadline => {
                if self.socket {
                    self.socket = false;
                    self.out.push_back(Action::Close(1000));
                }
                self.finish(Some(1000), None);
            }
            TimerKind::Rpc(r) => {
                if let Some(wire) = self.rpc_wire.remove(&r) {
                    self.pending.remove(&wire);
                    self.fail(
                        r,
                        RpcError {
                            code: ErrorKind::Timeout,
                            message: "no result in time".into(),
                            details: None,
                        },
                    );
                }
            }
        }
    }

    // ---- the end of a connection ----

    /// What a close code alone says to do (protocol §6, close codes).
    pub fn hint_of_close(code: Option<u16>) -> Retry {
        match code {
            Some(1000 | 1007 | 4400 | 4403 | 4409) => Retry::None,
            Some(4401) => Retry::Reauth,
            _ => Retry::Reconnect,
        }
    }

    /// Settles what was under way on the socket that just ended: publishes and calls
    /// fail (never resent), joins wait for the next connection, a refresh is due again.
    fn settle_socket(&mut self) {
        for kind in [
            TimerKind::Silence,
            TimerKind::PongDeadline,
            TimerKind::AuthDeadline,
        ] {
            self.cancel(kind);
        }
        self.ping = None;
        self.connect_token = None;
        let mut pending: Vec<(u64, Pending)> = self.pending.drain().collect();
        pending.sort_by_key(|(id, _)| *id);
        for (_, p) in pending {
            match p {
                Pending::Join(channel, waiters) => {
                    self.join_waiters
                        .entry(channel)
                        .or_default()
                        .extend(waiters);
                }
                Pending::Leave(Some(r)) => self.complete(r, Value::Null),
                Pending::Publish(r) => self.fail(r, RpcError::disconnected()),
                Pending::Rpc(r) => {
                    self.rpc_wire.remove(&r);
                    self.cancel(TimerKind::Rpc(r));
                    self.fail(r, RpcError::disconnected());
                }
                Pending::Refresh => self.refresh_due = true,
                Pending::Leave(None) | Pending::Auth => {}
            }
        }
    }

    fn on_conn_end(&mut self, now: u64, code: Option<u16>) {
        self.settle_socket();
        if matches!(self.phase, Phase::LoggingOut) {
            self.finish(code.or(Some(1000)), None);
            return;
        }
        // A resume sent but not answered: assume its token spent (protocol §4).
        let spent = std::mem::take(&mut self.resume_sent);
        if spent {
            self.session = None;
        }
        let (fatal_code, fatal_retry) = self.fatal.take().unzip();
        let hint = fatal_retry
            .flatten()
            .unwrap_or_else(|| Self::hint_of_close(code));
        if fatal_code.as_deref() == Some("SESSION_NOT_FOUND") {
            self.session = None;
        }
        match hint {
            Retry::None => self.finish(code, Some(Retry::None)),
            // A fresh token and a new session, once; a second failure stops.
            Retry::Reauth if self.reauthing => self.finish(code, Some(Retry::Reauth)),
            Retry::Reauth => {
                self.session = None;
                self.reauthing = true;
                self.schedule_reconnect(now);
            }
            Retry::Reconnect => {
                if spent {
                    self.reauthing = true;
                }
                self.short_first_wait = matches!(code, Some(1001 | 1011 | 1013));
                self.schedule_reconnect(now);
            }
        }
    }

    fn finish(&mut self, code: Option<u16>, retry: Option<Retry>) {
        self.phase = Phase::Closed;
        self.session = None;
        self.token_req = None;
        let kinds: Vec<TimerKind> = self.timers.keys().copied().collect();
        for kind in kinds {
            self.cancel(kind);
        }
        let mut pending: Vec<(u64, Pending)> = self.pending.drain().collect();
        pending.sort_by_key(|(id, _)| *id);
        for (_, p) in pending {
            match p {
                Pending::Join(_, waiters) => {
                    for r in waiters {
                        self.fail(r, RpcError::disconnected());
                    }
                }
                Pending::Leave(Some(r)) | Pending::Publish(r) | Pending::Rpc(r) => {
                    self.fail(r, RpcError::disconnected())
                }
                _ => {}
            }
        }
        self.rpc_wire.clear();
        let waiting: Vec<ReqId> = std::mem::take(&mut self.join_waiters)
            .into_values()
            .flatten()
            .collect();
        for r in waiting {
            self.fail(r, RpcError::disconnected());
        }
        for r in std::mem::take(&mut self.logout) {
            self.complete(r, Value::Null);
        }
        self.state(State::Closed);
        self.emit(Event::Closed { code, retry });
    }

    // ---- commands ----

    fn on_command(&mut self, now: u64, cmd: Command) {
        match cmd {
            Command::Join(r, channel) => {
                self.wanted.insert(channel.clone());
                if self.is_live() {
                    let id = self.wire_id();
                    self.send(json!({"type": "join", "id": id, "channel": channel}));
                    self.pending.insert(id, Pending::Join(channel, vec![r]));
                } else {
                    self.join_waiters.entry(channel).or_default().push(r);
                }
            }
            Command::Leave(r, channel) => {
                self.wanted.remove(&channel);
                for w in self.join_waiters.remove(&channel).unwrap_or_default() {
                    self.fail(w, RpcError::disconnected());
                }
                if self.is_live() {
                    let id = self.wire_id();
                    self.send(json!({"type": "leave", "id": id, "channel": channel}));
                    self.pending.insert(id, Pending::Leave(Some(r)));
                } else {
                    self.complete(r, Value::Null);
                }
            }
            Command::Publish(r, channel, data) => {
                if self.is_live() {
                    let id = self.wire_id();
                    self.send(
                        json!({"type": "publish", "id": id, "channel": channel, "data": data}),
                    );
                    self.pending.insert(id, Pending::Publish(r));
                } else {
                    self.fail(r, RpcError::disconnected());
                }
            }
            Command::Rpc(r, method, data, timeout_ms) => {
                if self.is_live() {
                    let id = self.wire_id();
                    self.send(json!({"type": "rpc", "id": id, "method": method, "data": data}));
                    self.pending.insert(id, Pending::Rpc(r));
                    self.rpc_wire.insert(r, id);
                    self.set(TimerKind::Rpc(r), now + timeout_ms);
                } else {
                    self.fail(r, RpcError::disconnected());
                }
            }
            Command::Logout(r) => {
                self.logout.push(r);
                if self.is_live() {
                    self.send(json!({"type": "logout"}));
                    self.phase = Phase::LoggingOut;
                    self.set(
                        TimerKind::CloseDeadline,
                        now + self.settings.close_timeout_ms,
                    );
                } else if !matches!(self.phase, Phase::LoggingOut) {
                    if self.socket {
                        self.socket = false;
                        self.out.push_back(Action::Close(1000));
                    }
                    self.finish(Some(1000), None);
                }
            }
            Command::Disconnect => {
                if matches!(self.phase, Phase::Offline | Phase::LoggingOut) {
                    return;
                }
                if self.socket {
                    self.socket = false;
                    self.out.push_back(Action::Close(4000));
                    self.settle_socket();
                    if std::mem::take(&mut self.resume_sent) {
                        self.session = None;
                    }
                }
                self.token_req = None;
                let kinds: Vec<TimerKind> = self.timers.keys().copied().collect();
                for kind in kinds {
                    if !matches!(kind, TimerKind::Rpc(_)) {
                        self.cancel(kind);
                    }
                }
                self.phase = Phase::Offline;
                self.attempt = 0;
                self.state(State::Offline);
            }
            Command::Reconnect => {
                if matches!(self.phase, Phase::Offline | Phase::Idle) {
                    self.begin_attempt(now);
                }
            }
            Command::Close => {
                if self.socket {
                    self.socket = false;
                    self.out.push_back(Action::Close(1000));
                }
                self.finish(Some(1000), None);
            }
        }
    }
}

#[cfg(test)]
mod tests;
