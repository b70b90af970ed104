//! `wsauth-client`: a Rust client for the wsauth protocol (`docs/protocol.md`).
//!
//! It gets a token from an async callback before each new session, authenticates
//! (header or message), refreshes on `expiring` (single flight, with backoff), resumes
//! after a drop with the latest resume token and `last_seq`, reconnects with
//! exponential backoff and full jitter, follows the server's `retry` hints, keeps the
//! joined channels, delivers each `seq` once and in order, and detects half-open
//! connections with `ping`/`pong`.
//!
//! Inside, a sans-IO [`machine::Machine`] makes every decision; [`Client`] drives it
//! with tokio and tokio-tungstenite.
#![doc = include_str!("../README.md")]

pub mod client;
pub mod machine;

pub use client::{BoxError, Client, Config, ConnectError};
pub use machine::{
    AuthMode, ErrorKind, Event, GapReason, Message, Retry, RpcError, ServerError, SessionKind,
    State,
};
