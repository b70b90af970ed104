//! `wsauth-axum`: wsauth on a route of your own [`axum::Router`], beside your
//! own routes, with the same core, stores and connection driver as
//! `wsauth-server` (`wsauth_server::driver`). Only the HTTP side differs: axum
//! reads the upgrade request and answers `101`; the origin, subprotocol and
//! header or query token are inspected, and a token verified and its session
//! created, before that answer, as the tokio-tungstenite server does.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{Router, routing::get};
//! use wsauth_axum::WsAuth;
//!
//! # async fn run(config: wsauth_server::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! let wsauth = WsAuth::from_config(config).await?;
//! let app = Router::new()
//!     .route("/", get(|| async { "the application's own route" }))
//!     .route("/ws", wsauth.route());
//! let listener = wsauth_axum::listener("127.0.0.1:3000".parse()?, 1024)?;
//! // The peer address feeds the per-IP cap of unauthenticated connections.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};
use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{info, warn};
use wsauth_core::jwt::Verifier;
use wsauth_core::upgrade::{AcceptRefusal, UpgradeDecision, inspect_upgrade};
use wsauth_core::{ErrorBody, Frame, Input, PeerClose};
use wsauth_server::config::Config;
use wsauth_server::driver::{Driver, Transport};
use wsauth_server::metrics::Metrics;
use wsauth_server::server::{OnStore, with_configured_store};
use wsauth_server::state::{HOUSEKEEPING_EVERY, Shared};
use wsauth_server::{Api, App, KeySource, StartError};
use wsauth_store::Store;
use wsauth_store::hub::Hub;

/// wsauth for an axum application: the route to mount, the admin routes, the
/// counters, and the graceful shutdown of its connections.
pub struct WsAuth {
    route: MethodRouter,
    admin: Router,
    path: String,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    connections: TaskTracker,
    drain: Duration,
    housekeeping: JoinHandle<()>,
    api: Api,
}

impl WsAuth {
    /// wsauth with `config` (already validated) on the store it chooses: in
    /// memory, or Redis at `store.url`. `listen`, `admin_listen`, `tls` and the
    /// listener's limits are the application's, not used here.
    pub async fn from_config(config: Config) -> Result<WsAuth, StartError> {
        WsAuth::from_config_with_app(config, App::new()).await
    }

    /// [`from_config`](Self::from_config) with the application's call handlers
    /// and session hooks.
    pub async fn from_config_with_app(config: Config, app: App) -> Result<WsAuth, StartError> {
        with_configured_store(config, None, Build(app)).await?
    }

    /// wsauth with `config` (already validated) on a given store, its notices
    /// routed by `hub`, calls answered by `app`. Needs a tokio runtime (it spawns
    /// the store's upkeep).
    pub fn with_store<S: Store>(
        config: Config,
        verifier: Verifier,
        hub: Arc<Hub>,
        store: Arc<S>,
        app: App,
    ) -> Result<WsAuth, StartError> {
        let verifier = KeySource::fixed(verifier, config.jwt.verify_cache_entries);
        WsAuth::with_keys(config, verifier, hub, store, app)
    }

    /// [`with_store`](Self::with_store) with a [`KeySource`] (fixed keys, or a
    /// JWKS URL's, fetched in the background).
    pub fn with_keys<S: Store>(
        config: Config,
        verifier: KeySource,
        hub: Arc<Hub>,
        store: Arc<S>,
        app: App,
    ) -> Result<WsAuth, StartError> {
        let (shutdown, stopped) = watch::channel(false);
        let path = config.path.clone();
        let drain = Duration::from_millis(config.shutdown_drain_ms);
        let shared = Arc::new(Shared::new(
            Arc::new(config),
            verifier,
            hub,
            store,
            stopped,
            app,
        )?);
        let upkeep = shared.clone();
        let housekeeping = tokio::spawn(async move {
            let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
            loop {
                every.tick().await;
                upkeep.housekeeping().await;
            }
        });
        let connections = TaskTracker::new();
        let route = any(upgrade::<S>).with_state(Upgrades {
            shared: shared.clone(),
            connections: connections.clone(),
        });
        Ok(WsAuth {
            api: Api::new(shared.clone()),
            route,
            admin: wsauth_server::admin::router(shared.clone()),
            path,
            metrics: shared.metrics.clone(),
            shutdown,
            connections,
            drain,
            housekeeping,
        })
    }

    /// The WebSocket endpoint, to mount at a path of the application's router
    /// (`Router::route("/ws", wsauth.route())`). Served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`: without the peer
    /// address it answers 500.
    pub fn route(&self) -> MethodRouter {
        self.route.clone()
    }

    /// A router with [`route`](Self::route) at the configuration's `path`, to
    /// merge into the application's.
    pub fn router(&self) -> Router {
        Router::new().route(&self.path, self.route())
    }

    /// The operator routes (`/healthz`, `/readyz`, `/metrics`, `/admin/…`), for a
    /// listener of the application's choosing (better not the public one).
    pub fn admin_router(&self) -> Router {
        self.admin.clone()
    }

    /// The server API (PROTOCOL §9): publish to channels and send to users, on
    /// every node sharing the store.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Refuses new connections (503), closes every open one with 1001 (sessions
    /// stay resumable) and waits for them, at most `shutdown_drain_ms`.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.connections.close();
        info!(
            open = self.connections.len(),
            "shutting down: closing connections with 1001"
        );
        if tokio::time::timeout(self.drain, self.connections.wait())
            .await
            .is_err()
        {
            warn!(
                left = self.connections.len(),
                "drain time over; dropping the remaining connections"
            );
        }
        self.housekeeping.abort();
    }
}

/// What [`listener`] returns: a TCP listener that sets `TCP_NODELAY`.
pub type NoDelayListener = TapIo<TcpListener, fn(&mut TcpStream)>;

/// A TCP listener on `addr` with an accept queue of `backlog` and `TCP_NODELAY`
/// on every connection, as the tokio-tungstenite server's. An application may
/// use its own, but without `TCP_NODELAY` the close frame that follows an error
/// frame may wait behind it and be lost when the socket closes.
pub fn listener(addr: SocketAddr, backlog: u32) -> std::io::Result<NoDelayListener> {
    Ok(wsauth_server::server::listen(addr, backlog)?.tap_io(nodelay as fn(&mut TcpStream)))
}

fn nodelay(tcp: &mut TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// [`WsAuth::with_store`] as an [`OnStore`], with the application.
struct Build(App);

impl OnStore for Build {
    type Output = Result<WsAuth, StartError>;

    fn on<S: Store>(
        self,
        config: Config,
        verifier: KeySource,
        hub: Arc<Hub>,
        store: Arc<S>,
    ) -> Self::Output {
        WsAuth::with_keys(config, verifier, hub, store, self.0)
    }
}

/// The [`Transport`] of axum's [`WebSocket`].
pub struct Axum;

impl Transport for Axum {
    type Socket = WebSocket;
    type Message = Message;
    type ReadError = axum::Error;

    fn text(json: String) -> Message {
        Message::Text(json.into())
    }

    fn ping() -> Message {
        Message::Ping(Bytes::new())
    }

    fn close(code: u16, reason: &'static str) -> Message {
        Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))
    }

    fn input(frame: &Result<Message, axum::Error>) -> Result<Input<'_>, &axum::Error> {
        use tungstenite::error::{CapacityError, Error as WsError};
        Ok(match frame {
            Ok(Message::Text(text)) => Input::Frame(Frame::Text(text.as_str())),
            Ok(Message::Binary(b)) => Input::Frame(Frame::Binary(b.len())),
            Ok(Message::Ping(_) | Message::Pong(_)) => Input::Control,
            Ok(Message::Close(frame)) => {
                Input::PeerClosed(PeerClose::Closed(frame.as_ref().map(|f| f.code)))
            }
            // axum wraps tungstenite's error: what the message was, when not a
            // socket failure.
            Err(e) => {
                match std::error::Error::source(e).and_then(|s| s.downcast_ref::<WsError>()) {
                    Some(WsError::Utf8(_)) => Input::Frame(Frame::InvalidUtf8),
                    Some(WsError::Capacity(CapacityError::MessageTooLong { size, .. })) => {
                        Input::Frame(Frame::TooLarge(*size))
                    }
                    Some(WsError::Protocol(p)) if is_violation(p) => {
                        Input::Frame(Frame::ProtocolViolation)
                    }
                    _ => return Err(e),
                }
            }
        })
    }
}

/// Whether the client's frame broke RFC 6455 (answered 1002, as by the
/// tokio-tungstenite server); the same list as the server's, for axum's own
/// tungstenite version.
fn is_violation(e: &tungstenite::error::ProtocolError) -> bool {
    use tungstenite::error::ProtocolError as P;
    matches!(
        e,
        P::NonZeroReservedBits
            | P::UnmaskedFrameFromClient
            | P::FragmentedControlFrame
            | P::ControlFrameTooBig
            | P::UnknownControlFrameType(_)
            | P::UnknownDataFrameType(_)
            | P::UnexpectedContinueFrame
            | P::ExpectedFragment(_)
            | P::InvalidOpcode(_)
            | P::InvalidCloseSequence
    )
}

/// The state of the route.
struct Upgrades<S: Store> {
    shared: Arc<Shared<S>>,
    connections: TaskTracker,
}

impl<S: Store> Clone for Upgrades<S> {
    fn clone(&self) -> Self {
        Upgrades {
            shared: self.shared.clone(),
            connections: self.connections.clone(),
        }
    }
}

/// A connection accepted before its upgrade completes: its driver and what it
/// holds for its whole life.
struct Accepted<S: Store> {
    driver: Driver<S, Axum>,
    _slot: OwnedSemaphorePermit,
    _tracked: TaskTrackerToken,
}

/// The upgrade request: the same checks, in the same order, as the
/// tokio-tungstenite server's, then the shared driver.
async fn upgrade<S: Store>(State(upgrades): State<Upgrades<S>>, request: Request) -> Response {
    let Upgrades {
        shared,
        connections,
    } = upgrades;
    let started = Instant::now();
    let (mut parts, _body) = request.into_parts();
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "wsauth needs the peer address: serve the application with into_make_service_with_connect_info::<SocketAddr>()\n",
        )
            .into_response();
    };
    if *shared.shutdown.borrow() {
        return respond(AcceptRefusal::ServerFull.response());
    }
    let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
        return respond(AcceptRefusal::ServerFull.response());
    };
    let tracked = connections.token();
    let _open = shared.metrics.connection_opened();
    // Counted from here until authentication; over the cap, refused at once.
    let Some(unauthenticated) = shared.ip_limiter.try_acquire(peer.ip()) else {
        return refuse(&shared, AcceptRefusal::TooManyUnauthenticated, peer);
    };
    let Ok(ws) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
        return refuse(
            &shared,
            AcceptRefusal::MalformedRequest { status: 400 },
            peer,
        );
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    let (subprotocol, token) =
        match inspect_upgrade(headers, parts.uri.query(), &shared.upgrade_policy) {
            UpgradeDecision::Refuse { status, body } => {
                info!(%peer, code = %body.code, "upgrade refused");
                shared.metrics.upgrade_refused(body.code);
                return respond(Some((status, body)));
            }
            UpgradeDecision::Proceed { subprotocol, token } => (subprotocol, token),
        };
    let mut driver = Driver::<S, Axum>::new(shared.clone(), peer, started, unauthenticated, token);
    if let Err(refusal) = driver.authenticate_before_upgrade().await {
        // Without an answer, the tokio-tungstenite server drops the socket.
        return respond(refusal.or(AcceptRefusal::ServerFull.response()));
    }
    let limits = &shared.ws_config;
    let mut ws = ws
        .read_buffer_size(limits.read_buffer_size)
        .write_buffer_size(limits.write_buffer_size)
        .max_write_buffer_size(limits.max_write_buffer_size)
        .max_message_size(limits.max_message_size.unwrap_or(usize::MAX))
        .max_frame_size(limits.max_frame_size.unwrap_or(usize::MAX));
    // inspect_upgrade found it among the client's offers (in any case).
    if let Some(protocol) = subprotocol {
        ws.set_selected_protocol(HeaderValue::from_static(protocol));
    }
    // The driver goes to whichever callback axum calls: the socket's, or the
    // failure's (which still owes the store what a created session needs).
    let accepted = Arc::new(Mutex::new(Some(Accepted {
        driver,
        _slot: slot,
        _tracked: tracked,
    })));
    let failed = accepted.clone();
    let metrics = shared.metrics.clone();
    ws.on_failed_upgrade(move |_| {
        if let Some(accepted) = take(&failed) {
            tokio::spawn(async move {
                let Accepted {
                    driver,
                    _slot,
                    _tracked,
                } = accepted;
                driver.socket_lost().await;
            });
        }
    })
    .on_upgrade(move |socket| async move {
        if let Some(Accepted {
            driver,
            _slot,
            _tracked,
        }) = take(&accepted)
        {
            let _open = metrics.connection_opened();
            driver.run(socket).await;
        }
    })
}

fn take<S: Store>(accepted: &Mutex<Option<Accepted<S>>>) -> Option<Accepted<S>> {
    accepted.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Refuses before the upgrade is inspected, counted and logged as the
/// tokio-tungstenite server does.
fn refuse<S: Store>(shared: &Shared<S>, refusal: AcceptRefusal, peer: SocketAddr) -> Response {
    shared.metrics.upgrade_refused(refusal.code());
    let response = refusal.response();
    if let Some((_, body)) = &response {
        info!(%peer, code = %body.code, "upgrade refused");
    }
    respond(response)
}

/// The refusal as an HTTP answer: its status and JSON body (PROTOCOL §2).
fn respond(refusal: Option<(u16, ErrorBody)>) -> Response {
    let Some((status, body)) = refusal else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_json(),
    )
        .into_response()
}
