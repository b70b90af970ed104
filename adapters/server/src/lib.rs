//! `wsauth-server`: the tokio-tungstenite adapter that runs the wsauth protocol
//! from real sockets. It holds no protocol decision of its own: it moves bytes,
//! owns timers and sockets, and answers the core's requests (verifier, store).

#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod conn;
pub mod dev;
pub mod driver;
pub mod fdlimit;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod handshake;
pub mod introspect;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod meter;
pub mod metrics;
pub mod outbound;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod state;
pub mod tls;
pub mod verify;

pub use api::{Api, ApiError};
pub use app::App;
pub use server::{ServerHandle, StartError, start, start_with_app};
pub use verify::{KeySource, TokenVerifier, VerifyFuture};
