//! `wsauth`: WebSocket authentication and sessions, the one crate an application
//! depends on.
//!
//! | feature | what it brings | where |
//! |---|---|---|
//! | (always) | the sans-IO core: the session state machine, the protocol, the JWT verifier, the upgrade decisions | [`core`], and at the crate root |
//! | `server` (default) | the tokio-tungstenite server library (its configuration, the shared connection driver, the admin routes), the store trait and the in-memory store | `server`, `store` |
//! | `redis` | the Redis store | `store_redis` |
//! | `axum` | wsauth on a route of an application's own `axum::Router` | `axum` |
//!
//! ```toml
//! [dependencies]
//! wsauth = { version = "0.1", features = ["axum", "redis"] }
//! ```

pub use wsauth_core as core;
pub use wsauth_core::*;

#[cfg(feature = "axum")]
pub use wsauth_axum as axum;
#[cfg(feature = "server")]
pub use wsauth_server as server;
#[cfg(feature = "server")]
pub use wsauth_store as store;
#[cfg(feature = "redis")]
pub use wsauth_store_redis as store_redis;

/// How wsauth is built: the core, the adapters, where each rule lives
/// (`docs/architecture.md`).
#[doc = include_str!("../docs/architecture.md")]
pub mod architecture {}

/// How an application plugs in: handlers for its users' calls, session hooks, the
/// HTTP backend and the server API (`docs/app-integration.md`, whose Rust examples
/// are compiled here).
#[cfg(feature = "server")]
#[doc = include_str!("../docs/app-integration.md")]
pub mod app_integration {}

/// Identity providers: JWKS URLs, discovery, several issuers, introspection and
/// your own verifier (`docs/identity-providers.md`, whose Rust example is
/// compiled here).
#[cfg(feature = "server")]
#[doc = include_str!("../docs/identity-providers.md")]
pub mod identity_providers {}
