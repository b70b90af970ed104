//! `wsauth`: WebSocket authentication and sessions.
//!
//! This facade re-exports [`wsauth_core`], the I/O-free session state machine,
//! protocol types and JWT verifier. The server lives under `adapters/`.

pub use wsauth_core as core;
pub use wsauth_core::*;
