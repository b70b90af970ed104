//! The real server over real sockets: every flow of the protocol and every row of
//! its error table, with the close code checked on the wire. Sessions live in the
//! in-memory store; `server_redis.rs` runs the same suite on Redis.

#[macro_use]
mod common;

use common::start_with_store;
use wsauth_server::ServerHandle;
use wsauth_server::config::Config;

/// A server for the suite, on the in-memory store.
async fn server(config: Config) -> ServerHandle {
    common::server(config).await
}

/// A server for the suite whose calls `app` answers, on the same store.
async fn server_with_app(config: Config, app: wsauth_server::App) -> ServerHandle {
    common::started_with_app(config, app).await
}

#[path = "suite/server.rs"]
mod suite;
