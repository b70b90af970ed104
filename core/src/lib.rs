#![doc = include_str!("../README.md")]
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
