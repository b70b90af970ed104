//! What every connection task, the admin listener and the accept loop share: the
//! [`Shared`] state, the clock read, and the periodic store check. Both transports
//! (this crate's listener and `wsauth-axum`'s route) build on it; `server` derives
//! it from the configuration ([`Shared::new`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wsauth_core::SessionConfig;
use wsauth_core::upgrade::UpgradePolicy;
use wsauth_store::Store;
use wsauth_store::hub::Hub;

use crate::app::App;
use crate::config::Config;
use crate::limits::IpLimiter;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::tls::TlsSlot;
use crate::verify::KeySource;

/// The current time in Unix milliseconds: the one clock read the core never does.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What every connection task shares.
pub struct Shared<S: Store> {
    /// The configuration.
    pub config: Arc<Config>,
    /// The core's settings, derived from the configuration.
    pub session_config: Arc<SessionConfig>,
    /// The token verifier's keys, with the cache of tokens verified with
    /// asymmetric keys.
    pub verifier: KeySource,
    /// The session store.
    pub store: Arc<S>,
    /// Live sessions on this node.
    pub hub: Arc<Hub>,
    /// Origin, subprotocol and query-token policy.
    pub upgrade_policy: UpgradePolicy,
    /// Unauthenticated connections per IP.
    pub ip_limiter: Arc<IpLimiter>,
    /// Open connections, at most `limits.max_connections`.
    pub connection_slots: Arc<Semaphore>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Flips to `true` at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// tungstenite's limits.
    pub ws_config: WebSocketConfig,
    /// Longest wait on one store call.
    pub store_timeout: Duration,
    /// The application's call handlers and session hooks (the standalone
    /// backend included, when `app.rpc_url` is set).
    pub app: App,
    /// This node's id, as the application's calls see it.
    pub node: Arc<str>,
    /// The TLS acceptor new connections use, when this crate's listener serves
    /// `wss://` (empty otherwise).
    pub tls: TlsSlot,
}

impl<S: Store> Shared<S> {
    /// What reloads the key and certificate files (SIGHUP, `POST /admin/reload`).
    pub fn reloader(&self) -> Reloader {
        Reloader::new(
            self.verifier.clone(),
            self.tls.clone(),
            self.config.tls.clone(),
            self.metrics.clone(),
        )
    }

    /// Pings the store, timed and counted like every store call, and records the
    /// answer in `wsauth_store_up`.
    pub async fn check_store(&self) -> bool {
        let started = std::time::Instant::now();
        let ok = tokio::time::timeout(self.store_timeout, self.store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        self.metrics.store_call("ping", started.elapsed(), ok);
        self.metrics.set_store_up(ok);
        ok
    }

    /// The periodic chores: purge what expired, then check the store (behind
    /// `wsauth_store_up`).
    pub async fn housekeeping(&self) {
        let _ = self.store.purge_expired(now_ms()).await;
        self.check_store().await;
    }
}

/// How often the transports run [`Shared::housekeeping`].
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);
