//! The suite's harness for the axum adapter: an axum application serving wsauth
//! at `/ws` beside a route of its own, the admin routes on a listener of their own.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::task::JoinHandle;
use wsauth_axum::WsAuth;
use wsauth_core::jwt::Verifier;
use wsauth_server::App;
use wsauth_server::config::Config;
use wsauth_server::metrics::Metrics;
use wsauth_server::server::listen;
use wsauth_store::Store;
use wsauth_store::hub::Hub;

/// What the application's own route answers.
pub const APP_ROUTE_BODY: &str = "the application's own route\n";

/// A running application.
pub struct Handle {
    /// Where the application listens (wsauth at `/ws`, its own route at `/`).
    pub ws_addr: SocketAddr,
    /// Where the admin routes are served.
    pub admin_addr: SocketAddr,
    /// wsauth's counters.
    pub metrics: Arc<Metrics>,
    wsauth: WsAuth,
    tasks: Vec<JoinHandle<()>>,
}

impl Handle {
    /// wsauth's server API.
    pub fn api(&self) -> wsauth_server::Api {
        self.wsauth.api()
    }

    /// Closes wsauth's connections with 1001, then stops the listeners.
    pub async fn shutdown(self) {
        self.wsauth.shutdown().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// The application with wsauth built from `config` (the store it chooses).
pub async fn app(config: Config) -> Handle {
    config.validate(false).expect("valid test config");
    let backlog = config.limits.listen_backlog;
    serve(WsAuth::from_config(config).await.expect("wsauth"), backlog).await
}

/// The application with wsauth on a given store.
pub async fn app_with_store<S: Store>(
    config: Config,
    verifier: Verifier,
    hub: Arc<Hub>,
    store: Arc<S>,
) -> Handle {
    let backlog = config.limits.listen_backlog;
    let wsauth = WsAuth::with_store(config, verifier, hub, store, App::new()).expect("wsauth");
    serve(wsauth, backlog).await
}

/// The application with wsauth built from `config`, its calls answered by `app`.
pub async fn app_with_app(config: Config, app: App) -> Handle {
    config.validate(false).expect("valid test config");
    let backlog = config.limits.listen_backlog;
    let wsauth = WsAuth::from_config_with_app(config, app)
        .await
        .expect("wsauth");
    serve(wsauth, backlog).await
}

async fn serve(wsauth: WsAuth, backlog: u32) -> Handle {
    let app = Router::new()
        .route("/", get(|| async { APP_ROUTE_BODY }))
        .route("/ws", wsauth.route());
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let listener = wsauth_axum::listener(loopback, backlog).expect("listen");
    let admin_listener = listen(loopback, 1024).expect("listen");
    let ws_addr = axum::serve::Listener::local_addr(&listener).expect("addr");
    let admin_addr = admin_listener.local_addr().expect("addr");
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let admin = wsauth.admin_router();
    let tasks = vec![
        tokio::spawn(async move {
            let _ = axum::serve(listener, service).await;
        }),
        tokio::spawn(async move {
            let _ = axum::serve(admin_listener, admin).await;
        }),
    ];
    Handle {
        ws_addr,
        admin_addr,
        metrics: wsauth.metrics().clone(),
        wsauth,
        tasks,
    }
}

/// The suite's cases about the listener itself (the upgrade head's deadline, TLS)
/// do not exist here: in front of an axum route the application owns the
/// listener, its timeouts and its TLS. Each case's reason is written beside it in
/// the suite (`why = …`) and kept here as a constant; its body is not compiled.
macro_rules! listener_case {
    (why = $why:literal; $(#[$attr:meta])* async fn $name:ident() $body:block) => {
        #[allow(dead_code, non_upper_case_globals)]
        const $name: &str = $why;
    };
}
