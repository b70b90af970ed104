//! The server suite of `server.rs` again, every server on the Redis store (one
//! throwaway `redis-server`, a key prefix per server): the protocol behaves the same
//! whichever store holds the sessions.

#[macro_use]
mod common;

use common::start_with_store;
use wsauth_server::ServerHandle;
use wsauth_server::config::Config;

/// A server for the suite, on Redis.
async fn server(config: Config) -> ServerHandle {
    common::server_on_redis(config).await
}

/// A server for the suite whose calls `app` answers, on the same store.
async fn server_with_app(config: Config, app: wsauth_server::App) -> ServerHandle {
    common::started_with_app(common::on_redis(config), app).await
}

#[path = "suite/server.rs"]
mod suite;
