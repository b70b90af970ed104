//! The real server over real sockets: every flow of the protocol and every row of
//! its error table, with the close code checked on the wire. Sessions live in the
//! in-memory store; `server_redis.rs` runs the same suite on Redis.

mod common;

use std::sync::Arc;

use wsauth_server::ServerHandle;
use wsauth_server::config::Config;
use wsauth_store::Store;

/// A server for the suite, on the in-memory store.
async fn server(config: Config) -> ServerHandle {
    common::server(config).await
}

/// A server on a given store.
async fn start_with_store<S: Store>(
    config: Config,
    verifier: wsauth_core::jwt::Verifier,
    hub: Arc<wsauth_store::hub::Hub>,
    store: Arc<S>,
) -> ServerHandle {
    wsauth_server::server::start_with_store(config, verifier, hub, store)
        .await
        .expect("server starts")
}

/// The suite's cases about the listener: this server owns its listener, so
/// they all run.
macro_rules! listener_case {
    (why = $why:literal; $(#[$attr:meta])* async fn $name:ident() $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $name() $body
    };
}

#[path = "suite/server.rs"]
mod suite;
