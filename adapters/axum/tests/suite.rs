//! The server suite of the tokio-tungstenite server (`tests/suite/server.rs`),
//! run against wsauth on a route of an axum application, sessions in the
//! in-memory store; `suite_redis.rs` runs it on Redis.

/// A server for the suite whose calls `app` answers, on the same store.
async fn server_with_app(config: Config, app: wsauth_server::App) -> Handle {
    app::app_with_app(config, app).await
}

#[path = "../../../tests/common/mod.rs"]
mod common;
#[macro_use]
mod app;

use app::Handle;
use wsauth_server::config::Config;

/// The application for the suite, on the in-memory store.
async fn server(config: Config) -> Handle {
    app::app(config).await
}

use app::app_with_store as start_with_store;

#[path = "../../../tests/suite/server.rs"]
mod suite;
