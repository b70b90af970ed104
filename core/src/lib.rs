//! # wsauth-core
//!
//! The I/O-free heart of wsauth: the per-connection session state machine, the wire
//! protocol's types and error codes, and the JWT verifier.
//!
//! What it is not: it opens no socket, reads no clock, spawns no thread, runs no async
//! code and draws no randomness. Time comes in as an argument (Unix milliseconds),
//! decisions go out as values. The same inputs always give the same outputs, which is
//! what lets the tests print every flow as a transcript and explore it exhaustively.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod jwt;
#[cfg(feature = "arbitrary")]
mod plausible;

pub use error::{CloseCode, ErrorCode, ErrorSpec, Retry};
pub mod channels;
pub mod machine;
pub mod protocol;
pub mod rate;
pub mod rules;

pub use machine::{
    Attachment, AuthMethod, CallContext, CallOutcome, CallResult, Connection, Delivery, Event,
    Frame, Input, Output, PeerClose, Reply, RequestId, ResumedSession, Revocation, SessionConfig,
    SessionFate, StoreRequest, VerifyPurpose,
};
pub use protocol::{
    ClientMessage, DecodeError, ErrorBody, MAX_JSON_DEPTH, PROTOCOL_VERSION, Payload, Secret,
    ServerMessage, decode_client_message, decode_client_message_limited,
};
pub mod upgrade;

#[doc = include_str!("../../docs/architecture.md")]
pub mod architecture {}
