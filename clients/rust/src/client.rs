//! The tokio + tokio-tungstenite driver: one task owns the socket, the timers and the
//! [`Machine`]; the cloneable [`Client`] handle sends it commands over a channel.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::machine::{
    Action, AuthMode, Command, Event, Input, Machine, ReqId, Retry, RpcError, Settings, SplitMix64,
    State, TimerKind,
};

/// The error type a token callback may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type TokenFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;
type TokenFn = Arc<dyn Fn() -> TokenFuture + Send + Sync>;
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply = oneshot::Sender<Result<Value, RpcError>>;

/// How to reach the server and how to behave.
#[derive(Clone)]
pub struct Config {
    url: String,
    get_token: TokenFn,
    /// The machine's settings (backoff, bounds, auth mode).
    pub settings: Settings,
    /// The default per-call timeout of [`Client::rpc`] [10 s].
    pub rpc_timeout: Duration,
    /// The bound on opening a socket (TCP, TLS and the upgrade) [10 s].
    pub connect_timeout: Duration,
    /// The jitter's seed; `None` seeds from the clock.
    pub seed: Option<u64>,
}

impl Config {
    /// `url` (`ws://host:port/ws`) and the callback that gets a token (a JWT).
    pub fn new<F, Fut, E>(url: impl Into<String>, get_token: F) -> Config
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let get_token: TokenFn = Arc::new(move || {
            let fut = get_token();
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        Config {
            url: url.into(),
            get_token,
            settings: Settings::default(),
            rpc_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            seed: None,
        }
    }

    /// Presents the token by header (the default) or by an `auth` message.
    pub fn auth(mut self, mode: AuthMode) -> Config {
        self.settings.auth = mode;
        self
    }

    /// The reconnection backoff: attempt n waits uniform in [0, min(cap, base·2^n)].
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Config {
        self.settings.backoff_base_ms = millis(base);
        self.settings.backoff_cap_ms = millis(cap);
        self
    }

    /// The bound on the token callback [10 s].
    pub fn token_timeout(mut self, bound: Duration) -> Config {
        self.settings.token_timeout_ms = millis(bound);
        self
    }

    /// The bound on a `pong` [10 s].
    pub fn pong_timeout(mut self, bound: Duration) -> Config {
        self.settings.pong_timeout_ms = millis(bound);
        self
    }

    /// Send a `ping` after this much silence, instead of the server's `heartbeat_ms`.
    pub fn silence(mut self, bound: Duration) -> Config {
        self.settings.silence_ms = Some(millis(bound));
        self
    }

    /// The default rpc timeout [10 s].
    pub fn rpc_timeout(mut self, bound: Duration) -> Config {
        self.rpc_timeout = bound;
        self
    }

    /// A fixed jitter seed.
    pub fn seed(mut self, seed: u64) -> Config {
        self.seed = Some(seed);
        self
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// [`Client::connect`] failed: the client stopped before it was ever live.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the client stopped before it was live (close {code:?}, retry {retry:?})")]
pub struct ConnectError {
    /// The close code.
    pub code: Option<u16>,
    /// The retry hint that stopped it.
    pub retry: Option<Retry>,
}

enum Cmd {
    Machine(Command, Option<Reply>),
    Subscribe(mpsc::UnboundedSender<Event>),
}

struct Inner {
    cmd: mpsc::UnboundedSender<Cmd>,
    next_req: AtomicU64,
    first_events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    rpc_timeout: Duration,
}

/// A handle on a connection; clones share it. When the last clone is dropped the
/// client closes (1000) and its task ends.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Starts the client and waits until it is live (authenticated). It keeps retrying
    /// with backoff meanwhile; it fails only if the client stops (`retry` `none`, or a
    /// re-authentication that failed twice).
    pub async fn connect(config: Config) -> Result<Client, ConnectError> {
        let (client, ready) = Client::start(config);
        match ready.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError {
                code: None,
                retry: None,
            }),
        }
    }

    /// Starts the client without waiting; the receiver says when it is first live.
    pub fn start(config: Config) -> (Client, oneshot::Receiver<Result<(), ConnectError>>) {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (token_tx, token_rx) = mpsc::unbounded_channel();
        let seed = config.seed.unwrap_or_else(|| {
            now_ms() ^ u64::from(std::process::id()).rotate_left(32) ^ {
                static N: AtomicU64 = AtomicU64::new(0);
                N.fetch_add(0x5851_F42D_4C95_7F2D, Ordering::Relaxed)
            }
        });
        let driver = Driver {
            machine: Machine::new(config.settings.clone(), Box::new(SplitMix64(seed))),
            url: config.url.clone(),
            get_token: config.get_token.clone(),
            connect_timeout: config.connect_timeout,
            cmd_rx,
            token_tx,
            token_rx,
            token_task: None,
            connecting: None,
            ws: None,
            timers: HashMap::new(),
            requests: HashMap::new(),
            subscribers: vec![ev_tx],
            ready: Some(ready_tx),
        };
        let task = tokio::spawn(driver.run());
        let client = Client {
            inner: Arc::new(Inner {
                cmd: cmd_tx,
                next_req: AtomicU64::new(1),
                first_events: Mutex::new(Some(ev_rx)),
                task: Mutex::new(Some(task)),
                rpc_timeout: config.rpc_timeout,
            }),
        };
        (client, ready_rx)
    }

    /// The client's events. The first call gets every event since the start; later
    /// calls get the events from then on.
    pub fn events(&self) -> mpsc::UnboundedReceiver<Event> {
        let first = self
            .inner
            .first_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        first.unwrap_or_else(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = self.inner.cmd.send(Cmd::Subscribe(tx));
            rx
        })
    }

    async fn request(&self, make: impl FnOnce(ReqId) -> Command) -> Result<Value, RpcError> {
        let id = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Cmd::Machine(make(id), Some(tx)))
            .map_err(|_| RpcError::disconnected())?;
        rx.await.unwrap_or_else(|_| Err(RpcError::disconnected()))
    }

    /// Joins `channel`; resolves on `joined`. While not live, the channel is joined on
    /// the next connection and this resolves then. The channel stays joined across
    /// resumes and re-authentications.
    pub async fn join(&self, channel: impl Into<String>) -> Result<(), RpcError> {
        let channel = channel.into();
        self.request(|r| Command::Join(r, channel)).await.map(drop)
    }

    /// Leaves `channel`; resolves on `left` (at once while not live).
    pub async fn leave(&self, channel: impl Into<String>) -> Result<(), RpcError> {
        let channel = channel.into();
        self.request(|r| Command::Leave(r, channel)).await.map(drop)
    }

    /// Publishes `data` to `channel`; resolves on `published`. Sent at most once:
    /// `Disconnected` when not live or when the connection drops first.
    pub async fn publish(&self, channel: impl Into<String>, data: Value) -> Result<(), RpcError> {
        let channel = channel.into();
        self.request(|r| Command::Publish(r, channel, data))
            .await
            .map(drop)
    }

    /// Calls `method` of the application with the default timeout.
    pub async fn rpc(&self, method: impl Into<String>, data: Value) -> Result<Value, RpcError> {
        let timeout = self.inner.rpc_timeout;
        self.rpc_with_timeout(method, data, timeout).await
    }

    /// Calls `method` with its own timeout. Sent at most once.
    pub async fn rpc_with_timeout(
        &self,
        method: impl Into<String>,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let method = method.into();
        self.request(|r| Command::Rpc(r, method, data, millis(timeout)))
            .await
    }

    /// Ends the session for good; the client stops and never reconnects.
    pub async fn logout(&self) -> Result<(), RpcError> {
        self.request(Command::Logout).await.map(drop)?;
        self.join_task().await;
        Ok(())
    }

    /// Goes offline: closes with 4000, the session stays resumable; see
    /// [`Client::reconnect`].
    pub async fn disconnect(&self) {
        let _ = self.inner.cmd.send(Cmd::Machine(Command::Disconnect, None));
    }

    /// Comes back after [`Client::disconnect`]: resumes the session.
    pub async fn reconnect(&self) {
        let _ = self.inner.cmd.send(Cmd::Machine(Command::Reconnect, None));
    }

    /// Closes with 1000 (the session ends) and stops every timer and task.
    pub async fn close(&self) {
        let _ = self.inner.cmd.send(Cmd::Machine(Command::Close, None));
        self.join_task().await;
    }

    async fn join_task(&self) {
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

enum Outcome {
    Open(Box<Ws>),
    Refused {
        status: u16,
        code: Option<String>,
        retry: Option<Retry>,
    },
    Failed,
}

enum Wake {
    Cmd(Option<Cmd>),
    Token(u64, Result<String, String>),
    Connected(u64, Outcome),
    Read(Option<Result<WsMessage, WsError>>),
    Timer(TimerKind, u64),
}

struct Driver {
    machine: Machine,
    url: String,
    get_token: TokenFn,
    connect_timeout: Duration,
    cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    token_tx: mpsc::UnboundedSender<(u64, Result<String, String>)>,
    token_rx: mpsc::UnboundedReceiver<(u64, Result<String, String>)>,
    token_task: Option<JoinHandle<()>>,
    connecting: Option<(u64, JoinHandle<Outcome>)>,
    ws: Option<(u64, Box<Ws>)>,
    timers: HashMap<TimerKind, (Instant, u64)>,
    requests: HashMap<ReqId, Reply>,
    subscribers: Vec<mpsc::UnboundedSender<Event>>,
    ready: Option<oneshot::Sender<Result<(), ConnectError>>>,
}

impl Driver {
    async fn run(mut self) {
        self.machine.handle(now_ms(), Input::Start);
        loop {
            self.pump().await;
            if self.machine.is_closed() {
                break;
            }
            let wake = self.wait().await;
            match wake {
                Wake::Cmd(None) => self
                    .machine
                    .handle(now_ms(), Input::Command(Command::Close)),
                Wake::Cmd(Some(Cmd::Subscribe(tx))) => self.subscribers.push(tx),
                Wake::Cmd(Some(Cmd::Machine(cmd, reply))) => {
                    if let (Some(reply), Some(id)) = (reply, req_id(&cmd)) {
                        self.requests.insert(id, reply);
                    }
                    self.machine.handle(now_ms(), Input::Command(cmd));
                }
                Wake::Token(id, result) => self.machine.handle(now_ms(), Input::Token(id, result)),
                Wake::Connected(conn, outcome) => {
                    self.connecting = None;
                    let input = match outcome {
                        Outcome::Open(ws) => {
                            self.ws = Some((conn, ws));
                            Input::Opened(conn)
                        }
                        Outcome::Refused {
                            status,
                            code,
                            retry,
                        } => Input::Refused {
                            conn,
                            status,
                            code,
                            retry,
                        },
                        Outcome::Failed => Input::Closed(conn, None),
                    };
                    self.machine.handle(now_ms(), input);
                }
                Wake::Read(read) => {
                    let Some(conn) = self.ws.as_ref().map(|(c, _)| *c) else {
                        continue;
                    };
                    let input = match read {
                        Some(Ok(WsMessage::Text(text))) => Input::Frame(conn, text.to_string()),
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => Input::Heard(conn),
                        Some(Ok(WsMessage::Close(frame))) => {
                            self.ws = None;
                            Input::Closed(conn, Some(frame.map_or(1005, |f| u16::from(f.code))))
                        }
                        Some(Ok(_)) => Input::Heard(conn),
                        Some(Err(_)) | None => {
                            self.ws = None;
                            Input::Closed(conn, None)
                        }
                    };
                    self.machine.handle(now_ms(), input);
                }
                Wake::Timer(kind, at) => {
                    self.timers.remove(&kind);
                    self.machine.handle(now_ms().max(at), Input::Timer(kind));
                }
            }
        }
        // Stopped: nothing outlives the client.
        if let Some(t) = self.token_task.take() {
            t.abort();
        }
        if let Some((_, t)) = self.connecting.take() {
            t.abort();
        }
        self.timers.clear();
        for (_, reply) in self.requests.drain() {
            let _ = reply.send(Err(RpcError::disconnected()));
        }
    }

    async fn wait(&mut self) -> Wake {
        let next = self
            .timers
            .iter()
            .min_by_key(|(_, (at, _))| *at)
            .map(|(k, v)| (*k, *v));
        let cmd_rx = &mut self.cmd_rx;
        let token_rx = &mut self.token_rx;
        let connecting = &mut self.connecting;
        let ws = &mut self.ws;
        tokio::select! {
            cmd = cmd_rx.recv() => Wake::Cmd(cmd),
            Some((id, r)) = token_rx.recv() => Wake::Token(id, r),
            (conn, joined) = async {
                let (conn, task) = connecting.as_mut().expect("guarded");
                (*conn, task.await)
            }, if connecting.is_some() => {
                Wake::Connected(conn, joined.unwrap_or(Outcome::Failed))
            }
            read = async { ws.as_mut().expect("guarded").1.next().await }, if ws.is_some() => Wake::Read(read),
            () = async {
                match next {
                    Some((_, (at, _))) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let (kind, (_, at_ms)) = next.expect("a timer");
                Wake::Timer(kind, at_ms)
            }
        }
    }

    async fn pump(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Open { conn, bearer } => {
                    self.ws = None;
                    if let Some((_, t)) = self.connecting.take() {
                        t.abort();
                    }
                    let url = self.url.clone();
                    let bound = self.connect_timeout;
                    let task =
                        tokio::spawn(async move { open(&url, bearer.as_deref(), bound).await });
                    self.connecting = Some((conn, task));
                }
                Action::Send(text) => {
                    let Some((conn, ws)) = self.ws.as_mut() else {
                        continue;
                    };
                    let conn = *conn;
                    let sent = tokio::time::timeout(
                        Duration::from_secs(5),
                        ws.send(WsMessage::text(text)),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        self.ws = None;
                        self.machine.handle(now_ms(), Input::Closed(conn, None));
                    }
                }
                Action::Close(code) => {
                    if let Some((_, t)) = self.connecting.take() {
                        t.abort();
                    }
                    if let Some((_, mut ws)) = self.ws.take() {
                        let frame = CloseFrame {
                            code: code.into(),
                            reason: "".into(),
                        };
                        let bound = Duration::from_secs(1);
                        let _ = tokio::time::timeout(bound, Ws::close(&mut ws, Some(frame))).await;
                        let _ = tokio::time::timeout(bound, async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                    }
                }
                Action::Drop => {
                    self.ws = None;
                    if let Some((_, t)) = self.connecting.take() {
                        t.abort();
                    }
                }
                Action::SetTimer(kind, at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    self.timers.insert(kind, (Instant::now() + wait, at));
                }
                Action::CancelTimer(kind) => {
                    self.timers.remove(&kind);
                }
                Action::RequestToken(id) => {
                    if let Some(t) = self.token_task.take() {
                        t.abort();
                    }
                    let get_token = self.get_token.clone();
                    let tx = self.token_tx.clone();
                    self.token_task = Some(tokio::spawn(async move {
                        let result = get_token().await.map_err(|e| e.to_string());
                        let _ = tx.send((id, result));
                    }));
                }
                Action::Emit(event) => {
                    match &event {
                        Event::State(State::Live) => {
                            if let Some(ready) = self.ready.take() {
                                let _ = ready.send(Ok(()));
                            }
                        }
                        Event::Closed { code, retry } => {
                            if let Some(ready) = self.ready.take() {
                                let _ = ready.send(Err(ConnectError {
                                    code: *code,
                                    retry: *retry,
                                }));
                            }
                        }
                        _ => {}
                    }
                    self.subscribers.retain(|s| s.send(event.clone()).is_ok());
                }
                Action::Complete(r, value) => {
                    if let Some(reply) = self.requests.remove(&r) {
                        let _ = reply.send(Ok(value));
                    }
                }
                Action::Fail(r, error) => {
                    if let Some(reply) = self.requests.remove(&r) {
                        let _ = reply.send(Err(error));
                    }
                }
            }
        }
    }
}

fn req_id(cmd: &Command) -> Option<ReqId> {
    match cmd {
        Command::Join(r, _)
        | Command::Leave(r, _)
        | Command::Publish(r, _, _)
        | Command::Rpc(r, _, _, _)
        | Command::Logout(r) => Some(*r),
        Command::Disconnect | Command::Reconnect | Command::Close => None,
    }
}

async fn open(url: &str, bearer: Option<&str>, bound: Duration) -> Outcome {
    let Ok(mut request) = url.into_client_request() else {
        return Outcome::Refused {
            status: 0,
            code: Some("BAD_URL".into()),
            retry: Some(Retry::None),
        };
    };
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(wsauth_core::PROTOCOL_VERSION),
    );
    if let Some(token) = bearer {
        match HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(v) => {
                headers.insert("Authorization", v);
            }
            Err(_) => return Outcome::Failed,
        }
    }
    match tokio::time::timeout(bound, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((ws, _))) => Outcome::Open(Box::new(ws)),
        Ok(Err(WsError::Http(response))) => {
            let status = response.status().as_u16();
            let body: Value = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let retry = match body["retry"].as_str() {
                Some("reconnect") => Some(Retry::Reconnect),
                Some("reauth") => Some(Retry::Reauth),
                Some("none") => Some(Retry::None),
                _ => None,
            };
            Outcome::Refused {
                status,
                code: body["code"].as_str().map(str::to_owned),
                retry,
            }
        }
        _ => Outcome::Failed,
    }
}
