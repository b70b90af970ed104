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

#[path = "suite/server.rs"]
mod suite;
