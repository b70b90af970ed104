//! The server suite again against the axum route, every server on the Redis
//! store (one throwaway `redis-server`, a key prefix per server).

/// A server for the suite whose calls `app` answers, on the same store.
async fn server_with_app(config: Config, app: wsauth_server::App) -> Handle {
    app::app_with_app(common::on_redis(config), app).await
}

#[path = "../../../tests/common/mod.rs"]
mod common;
#[macro_use]
mod app;

use app::Handle;
use wsauth_server::config::Config;

/// The application for the suite, on Redis.
async fn server(config: Config) -> Handle {
    app::app(common::on_redis(config)).await
}

use app::app_with_store as start_with_store;

#[path = "../../../tests/suite/server.rs"]
mod suite;
