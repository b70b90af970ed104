//! Starting and stopping the server: listeners, TLS, the shared state every
//! connection task uses, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wsauth_core::SessionConfig;
use wsauth_core::jwt::{KeySet, Verifier, VerifierConfig};
use wsauth_core::upgrade::AcceptRefusal;
use wsauth_core::upgrade::UpgradePolicy;
use wsauth_store::hub::Hub;
use wsauth_store::{MemoryStore, Notify, Store, StoreSettings};
use wsauth_store_redis::{RedisConfig, RedisStore};

use crate::app::App;
use crate::config::{Config, Limits, StoreKind};
use crate::limits::IpLimiter;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::state::{HOUSEKEEPING_EVERY, Shared};
use crate::verify::KeySource;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A key could not be loaded or the verifier refused its settings.
    #[error("jwt: {0}")]
    Keys(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("tls: {0}")]
    Tls(String),
    /// The store could not be set up.
    #[error("store: {0}")]
    Store(String),
    /// The application's calls could not be set up (`[app]`).
    #[error("app: {0}")]
    App(String),
}

/// A running server.
pub struct ServerHandle {
    /// Where the WebSocket listener is.
    pub ws_addr: SocketAddr,
    /// Where the admin listener is.
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    /// The counters, for tests and the admin API.
    pub metrics: Arc<Metrics>,
    api: crate::api::Api,
    reloader: Reloader,
}

impl ServerHandle {
    /// Stops accepting, closes every connection with 1001 (sessions stay
    /// resumable), and waits for the drain (at most `shutdown_drain_ms`).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.admin_task.abort();
    }

    /// The server API (PROTOCOL §9): publish to channels and send to users, on
    /// every node sharing the store, from the application's own code.
    pub fn api(&self) -> crate::api::Api {
        self.api.clone()
    }

    /// What reloads the key and certificate files, as SIGHUP and
    /// `POST /admin/reload` do.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Waits until the server stops on its own (it does not, unless it fails).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A sender that triggers the shutdown (for signal handlers).
    pub fn shutdown_trigger(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// The timings the verifier, the core and the store must agree on (a token the
/// verifier accepts is one the store keeps alive), derived here and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// Clock leeway, in whole seconds as `jwt.leeway_s` sets it.
    pub leeway_s: u64,
    /// How long a dropped session stays resumable (0 with `features.resume` off).
    pub resume_grace_ms: u64,
    /// How long a revocation entry lasts at most.
    pub max_token_lifetime_ms: u64,
}

impl Timings {
    /// The timings `config` sets.
    pub fn of(config: &Config) -> Timings {
        let s = &config.session;
        Timings {
            leeway_s: config.jwt.leeway_s,
            resume_grace_ms: if config.features.resume {
                s.resume_grace_ms
            } else {
                0
            },
            max_token_lifetime_ms: s.max_token_lifetime_s.saturating_mul(1000),
        }
    }

    /// The leeway in ms, as the verifier applies it.
    pub fn leeway_ms(&self) -> u64 {
        self.leeway_s.saturating_mul(1000)
    }
}

/// Builds the verifier from the `jwt` section's fixed keys (and a development
/// secret, if any); `jwt.jwks_url` is [`KeySource::from_config`]'s business.
pub fn build_verifier(config: &Config, dev_secret: Option<&[u8]>) -> Result<Verifier, StartError> {
    let (keys, verifier_config) = configured_keys(config, dev_secret)?;
    Verifier::new(keys, verifier_config).map_err(|e| StartError::Keys(e.to_string()))
}

/// The fixed keys of the `jwt` section (secret, PEM files, JWKS file, and a
/// development secret, if any) and the verifier's settings. The key set may be
/// empty.
pub fn configured_keys(
    config: &Config,
    dev_secret: Option<&[u8]>,
) -> Result<(KeySet, VerifierConfig), StartError> {
    jwt_keys(&config.jwt, config.session.max_token_lifetime_s, dev_secret)
}

/// [`configured_keys`] of a `[jwt]`-shaped section (also an entry of
/// `[[jwt.issuers]]`, as [`crate::verify`] presents it). Tokens living longer
/// than `max_token_lifetime_s` (`session.max_token_lifetime_s`, how long a
/// revocation lasts) are refused, so that none outlives its revocation.
pub fn jwt_keys(
    jwt: &crate::config::JwtConfig,
    max_token_lifetime_s: u64,
    dev_secret: Option<&[u8]>,
) -> Result<(KeySet, VerifierConfig), StartError> {
    let mut keys = KeySet::new();
    let err = |e: &dyn std::fmt::Display| StartError::Keys(e.to_string());
    // The secret, or the file holding it (read the way validation read it).
    if let Some(secret) = jwt
        .hs256_secret_bytes()
        .map_err(|e| StartError::Keys(e.to_string()))?
    {
        keys.add_hmac_secret(None, &secret).map_err(|e| {
            match (&jwt.hs256_secret, &jwt.hs256_secret_file) {
                (None, Some(path)) => {
                    StartError::Keys(format!("jwt.hs256_secret_file {}: {e}", path.display()))
                }
                _ => err(&e),
            }
        })?;
    }
    for path in &jwt.public_key_files {
        let pem = std::fs::read(path).map_err(|e| {
            StartError::Keys(format!("jwt.public_key_files {}: {e}", path.display()))
        })?;
        let kid = path.file_stem().and_then(|s| s.to_str());
        keys.add_public_key_pem(kid, &pem).map_err(|e| {
            StartError::Keys(format!("jwt.public_key_files {}: {e}", path.display()))
        })?;
    }
    if let Some(path) = &jwt.jwks_file {
        let json = std::fs::read_to_string(path)
            .map_err(|e| StartError::Keys(format!("jwt.jwks_file {}: {e}", path.display())))?;
        keys.add_jwks_json(&json)
            .map_err(|e| StartError::Keys(format!("jwt.jwks_file {}: {e}", path.display())))?;
    }
    if let Some(secret) = dev_secret {
        keys.add_hmac_secret(None, secret).map_err(|e| err(&e))?;
    }
    let algorithms = if jwt.algorithms.is_empty() {
        None
    } else {
        let mut algs = Vec::new();
        for name in &jwt.algorithms {
            let alg: jsonwebtoken::Algorithm = name.parse().map_err(|_| {
                StartError::Keys(format!("jwt.algorithms: unknown algorithm {name}"))
            })?;
            algs.push(alg);
        }
        Some(algs)
    };
    let verifier_config = VerifierConfig {
        issuer: jwt.issuer.clone(),
        audience: jwt.audience.clone(),
        leeway_s: jwt.leeway_s,
        max_token_bytes: jwt.max_token_bytes,
        algorithms,
        max_lifetime_s: Some(max_token_lifetime_s),
        required_typ: jwt.required_typ.clone(),
    };
    Ok((keys, verifier_config))
}

/// The WebSocket codec's settings from the limits: the message and frame caps,
/// a small read buffer, and writes flushed at once.
pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_frame_bytes))
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_message_bytes * 2 + 64 * 1024)
}

/// The core's settings from the configuration.
pub fn session_config(config: &Config) -> SessionConfig {
    let s = &config.session;
    let l = &config.limits;
    SessionConfig {
        auth_timeout_ms: s.auth_timeout_ms,
        heartbeat_ms: s.heartbeat_ms,
        idle_timeout_ms: s.idle_timeout_ms,
        refresh_notice_ms: s.refresh_notice_ms,
        leeway_ms: Timings::of(config).leeway_ms(),
        max_message_bytes: l.max_message_bytes,
        max_json_depth: l.max_json_depth,
        rate_per_sec: l.messages_per_second,
        rate_burst: l.message_burst,
        frame_rate_per_sec: l.frames_per_second,
        frame_burst: l.frame_burst,
        max_queued_requests: s.max_queued_requests,
        max_channels: s.max_channels,
        max_rpc_in_flight: config.app.max_rpc_in_flight,
        rpc_timeout_ms: config.app.rpc_timeout_ms,
    }
}

/// The store's settings from the configuration.
pub fn store_settings(config: &Config) -> StoreSettings {
    let s = &config.session;
    let timings = Timings::of(config);
    StoreSettings {
        resume_grace_ms: timings.resume_grace_ms,
        resume_buffer: s.resume_buffer,
        resume_buffer_bytes: s.resume_buffer_bytes,
        replay_budget_bytes: s.replay_budget_bytes,
        max_sessions_per_user: s
            .max_sessions_per_user
            .filter(|_| config.features.session_limits),
        limit_policy: match s.limit_policy {
            crate::config::LimitPolicy::EvictOldest => wsauth_store::LimitPolicy::EvictOldest,
            crate::config::LimitPolicy::RejectNew => wsauth_store::LimitPolicy::RejectNew,
        },
        max_token_lifetime_ms: timings.max_token_lifetime_ms,
        leeway_ms: timings.leeway_ms(),
    }
}

impl<S: Store> Shared<S> {
    /// The state for `config` (already validated) on `store`, with `hub` routing
    /// its notices and `app` answering calls; connections close when `shutdown`
    /// flips to `true`.
    pub fn new(
        config: Arc<Config>,
        verifier: KeySource,
        hub: Arc<Hub>,
        store: Arc<S>,
        shutdown: watch::Receiver<bool>,
        app: App,
    ) -> Result<Shared<S>, StartError> {
        if config.allowed_origins.is_empty() {
            warn!("allowed_origins is empty: browsers from any origin may connect");
        }
        let limits = &config.limits;
        let ws_config = ws_config(limits);
        let node: Arc<str> = config.effective_node_id().into();
        let app = crate::app::configured(app, &config, &node).map_err(StartError::App)?;
        Ok(Shared {
            app,
            node,
            session_config: Arc::new(session_config(&config)),
            metrics: Arc::new(Metrics::with_jwks(verifier.jwks_metrics())),
            verifier,
            store,
            hub,
            upgrade_policy: UpgradePolicy {
                allowed_origins: config.allowed_origins.clone(),
                allow_query_token: config.allow_query_token,
            },
            ip_limiter: IpLimiter::new(
                limits.max_unauthenticated_per_ip,
                limits.max_unauthenticated,
            ),
            connection_slots: Arc::new(Semaphore::new(limits.max_connections)),
            shutdown,
            ws_config,
            store_timeout: Duration::from_millis(config.store.call_timeout_ms),
            config,
            tls: Default::default(),
        })
    }
}

/// What to build on the store the configuration chose: its type depends on
/// `store.kind`, so the caller says once, for any store, what to do with it.
pub trait OnStore {
    /// What it builds.
    type Output;
    /// Builds it on `store`, with the node's `hub` routing the store's notices.
    fn on<S: Store>(
        self,
        config: Config,
        verifier: KeySource,
        hub: Arc<Hub>,
        store: Arc<S>,
    ) -> Self::Output;
}

/// Builds the verifier, the hub and the store `config` (already validated) chooses
/// (in memory, or Redis at `store.url`), and hands them to `then`. `dev_secret` is
/// the generated development key, when in development mode.
pub async fn with_configured_store<T: OnStore>(
    config: Config,
    dev_secret: Option<&[u8]>,
    then: T,
) -> Result<T::Output, StartError> {
    let verifier = KeySource::from_config(&config, dev_secret).await?;
    let hub = Hub::new(config.limits.outbound_queue);
    match config.store.kind {
        StoreKind::Memory => {
            let store = Arc::new(MemoryStore::new(
                store_settings(&config),
                hub.clone() as Arc<dyn Notify>,
            ));
            Ok(then.on(config, verifier, hub, store))
        }
        StoreKind::Redis => {
            let url = config.store.url.clone().ok_or_else(|| {
                StartError::Store("store.url is required when store.kind is redis".into())
            })?;
            let mut redis_config =
                RedisConfig::new(url, &config.store.key_prefix, config.effective_node_id());
            redis_config.max_notice_lag = Duration::from_millis(config.store.max_notice_lag_ms);
            let store = RedisStore::connect(
                redis_config,
                store_settings(&config),
                hub.clone() as Arc<dyn Notify>,
            )
            .await
            .map_err(|e| StartError::Store(format!("cannot use Redis at store.url: {e}")))?;
            info!(prefix = %config.store.key_prefix, "sessions are kept in Redis");
            Ok(then.on(config, verifier, hub, Arc::new(store)))
        }
    }
}

/// [`start_with_store`] as an [`OnStore`], with the application.
struct Start(App);

impl OnStore for Start {
    type Output = Pin<Box<dyn Future<Output = Result<ServerHandle, StartError>> + Send>>;

    fn on<S: Store>(
        self,
        config: Config,
        verifier: KeySource,
        hub: Arc<Hub>,
        store: Arc<S>,
    ) -> Self::Output {
        Box::pin(start_with_keys(config, verifier, hub, store, self.0))
    }
}

/// Starts the server with `config` (already validated). `dev_secret` is the
/// generated development key, when in development mode. Calls go to the
/// standalone backend (`app.rpc_url`) if one is set, else are `METHOD_NOT_FOUND`.
pub async fn start(
    config: Config,
    dev_secret: Option<Vec<u8>>,
) -> Result<ServerHandle, StartError> {
    start_with_app(config, dev_secret, App::new()).await
}

/// [`start`] with the application's call handlers and session hooks.
pub async fn start_with_app(
    config: Config,
    dev_secret: Option<Vec<u8>>,
    app: App,
) -> Result<ServerHandle, StartError> {
    with_configured_store(config, dev_secret.as_deref(), Start(app))
        .await?
        .await
}

/// A listening socket with an accept queue of `backlog` (tokio's `bind` uses 128,
/// which a burst of connects overflows: their SYNs are dropped and retried a
/// second later).
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted server can bind while old
    // connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Starts the server on a given store, with the application `app`.
pub async fn start_with_store<S: Store>(
    config: Config,
    verifier: Verifier,
    hub: Arc<Hub>,
    store: Arc<S>,
    app: App,
) -> Result<ServerHandle, StartError> {
    let keys = KeySource::fixed(verifier, config.jwt.verify_cache_entries);
    start_with_keys(config, keys, hub, store, app).await
}

/// [`start_with_store`] with a [`KeySource`] (fixed keys, or a JWKS URL's).
pub async fn start_with_keys<S: Store>(
    config: Config,
    verifier: KeySource,
    hub: Arc<Hub>,
    store: Arc<S>,
    app: App,
) -> Result<ServerHandle, StartError> {
    let config = Arc::new(config);
    let listener =
        listen(config.listen, config.limits.listen_backlog).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let admin_listener = listen(config.admin_listen, 1024).map_err(|source| StartError::Bind {
        addr: config.admin_listen,
        source,
    })?;
    let ws_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            source,
        })?;
    let tls = match &config.tls {
        Some(tls) => Some(crate::tls::acceptor(&tls.cert_file, &tls.key_file)?),
        None => None,
    };
    // The admin listener never has TLS of its own: off loopback, its keys and
    // answers cross the network in cleartext unless something in front encrypts.
    if !admin_addr.ip().is_loopback() {
        warn!(
            admin = %admin_addr,
            "admin_listen is not a loopback address and the admin listener has no TLS: \
             the admin and API keys travel in cleartext; put it behind a TLS proxy or a private network"
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(
        config.clone(),
        verifier,
        hub,
        store,
        shutdown_rx.clone(),
        app,
    )?);
    if let Some(tls) = tls {
        shared.tls.set(tls);
    }
    let metrics = shared.metrics.clone();
    let reloader = shared.reloader();
    let api = crate::api::Api::new(shared.clone());
    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, shared.clone()));
    let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
    info!(ws = %ws_addr, admin = %admin_addr, path = %config.path, "listening");
    Ok(ServerHandle {
        ws_addr,
        admin_addr,
        shutdown: shutdown_tx,
        task,
        admin_task,
        metrics,
        api,
        reloader,
    })
}

async fn accept_loop<S: Store>(
    listener: TcpListener,
    shared: Arc<Shared<S>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tracker = TaskTracker::new();
    let mut purge = tokio::time::interval(HOUSEKEEPING_EVERY);
    shared.check_store().await;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
                    tracker.spawn(async move {
                        let mut tcp = tcp;
                        if let Some((status, body)) = AcceptRefusal::ServerFull.response() {
                            let _ = crate::handshake::write_refusal(&mut tcp, status, &body).await;
                        }
                    });
                    continue;
                };
                let shared = shared.clone();
                // The acceptor in use now: a reload changes the next connections'.
                let tls = shared.tls.get();
                let accepted = std::time::Instant::now();
                // Counted from accept until authentication, TLS handshake included;
                // over the cap, refused at once: 429 in cleartext, and with TLS
                // closed before any handshake work.
                let Some(unauthenticated) = shared.ip_limiter.try_acquire(peer.ip()) else {
                    let refusal = AcceptRefusal::TooManyUnauthenticated;
                    shared.metrics.upgrade_refused(refusal.code());
                    info!(%peer, code = %refusal.code(), "upgrade refused");
                    if tls.is_none() {
                        tracker.spawn(async move {
                            let mut tcp = tcp;
                            if let Some((status, body)) = refusal.response() {
                                let _ = crate::handshake::write_refusal(&mut tcp, status, &body).await;
                            }
                            drop(slot);
                        });
                    }
                    continue;
                };
                tracker.spawn(async move {
                    let _slot = slot;
                    match tls {
                        None => crate::conn::serve(shared, tcp, peer, accepted, unauthenticated).await,
                        // Boxed: a TLS connection's state is several times a plain
                        // one's, and unboxed every plain connection's task would be
                        // as large.
                        Some(acceptor) => Box::pin(async move {
                            let limit = Duration::from_millis(shared.config.limits.handshake_timeout_ms);
                            match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => {
                                    crate::conn::serve(shared, stream, peer, accepted, unauthenticated).await
                                }
                                _ => tracing::debug!(%peer, "TLS handshake failed or timed out"),
                            }
                        })
                        .await,
                    }
                });
            }
            _ = purge.tick() => {
                // The purge doubles as the periodic store check behind wsauth_store_up.
                shared.housekeeping().await;
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tracker.close();
    let drain = Duration::from_millis(shared.config.shutdown_drain_ms);
    info!(
        open = tracker.len(),
        "shutting down: closing connections with 1001"
    );
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        warn!(
            left = tracker.len(),
            "drain time over; dropping the remaining connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_accept_queue_holds_the_configured_backlog() {
        // 200 connects that nobody accepts: with the 128 of `TcpListener::bind`,
        // the ones past the queue would have their SYN dropped and wait a second.
        let listener = listen("127.0.0.1:0".parse().expect("addr"), 256).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut held = Vec::new();
        for i in 0..200 {
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_millis(500), connect).await {
                Ok(Ok(stream)) => held.push(stream),
                Ok(Err(e)) => panic!("connect {i} failed: {e}"),
                Err(_) => panic!("connect {i} waited: the accept queue is smaller than 200"),
            }
        }
        assert_eq!(held.len(), 200);
        drop(listener);
    }

    #[test]
    fn the_verifier_the_core_and_the_store_share_one_leeway_and_grace() {
        let mut config = Config::default();
        config.jwt.leeway_s = 7;
        config.jwt.hs256_secret = Some("k".repeat(32));
        config.session.resume_grace_ms = 1_234;
        let verifier = build_verifier(&config, None).expect("verifier");
        let (core, store) = (session_config(&config), store_settings(&config));
        assert_eq!(verifier.config().leeway_s, 7);
        assert_eq!((core.leeway_ms, store.leeway_ms), (7_000, 7_000));
        assert_eq!(store.resume_grace_ms, 1_234);
        config.features.resume = false;
        assert_eq!(store_settings(&config).resume_grace_ms, 0);
    }
}
