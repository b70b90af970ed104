//! What can happen to a connection: the one way in.

use super::requests::{CallResult, Delivery, Reply, RequestId, Revocation};
#[cfg(doc)]
use super::{Connection, Output, StoreRequest};

/// Where a connection's token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// `Authorization: Bearer` on the upgrade request.
    Header,
    /// `?access_token=` on the upgrade request (when enabled).
    Query,
    /// The first message, `auth`.
    Message,
    /// A `resume` of an earlier session.
    Resume,
}

/// Why a connection's socket is gone, as the driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PeerClose {
    /// The client sent a close frame with this code (`None`: no code).
    Closed(Option<u16>),
    /// The TCP connection was lost without a close frame.
    Lost,
}

/// A data frame as the driver received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text frame (already checked to be UTF-8).
    Text(&'a str),
    /// A text frame whose payload is not UTF-8.
    InvalidUtf8,
    /// A binary frame of this many bytes.
    Binary(usize),
    /// A message the transport refused for its size, of at least this many bytes.
    TooLarge(usize),
    /// A frame that breaks RFC 6455 framing (unmasked, reserved bits without
    /// an extension, an unknown opcode, a control frame over 125 bytes or
    /// fragmented, a continuation out of place): closed with 1002.
    ProtocolViolation,
}

/// Everything that can happen to a connection, as one value: the only way in
/// ([`Connection::handle`]). No input carries an error code: the machine picks
/// every code itself from what happened.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Input<'a> {
    /// A data frame arrived.
    Frame(Frame<'a>),
    /// A control frame (ping or pong) arrived: activity, counted against the
    /// frame budget, not the message rate.
    Control,
    /// This many continuation frames arrived (the driver's count of frames
    /// that carry no message of their own): counted against the frame budget.
    Continuations(u32),
    /// The answer to an [`Output::Verify`] or a [`StoreRequest`]. Answers that match
    /// no pending request (late ones, after a close) are ignored.
    Reply(RequestId, Reply),
    /// The application's answer to an [`Output::Call`]. Answers to unknown calls,
    /// to calls already answered `UNAVAILABLE` at their deadline, or after the
    /// close, are ignored.
    CallResult(RequestId, CallResult),
    /// A channel message for this session (a store notice). Delivered when the
    /// channel is joined, or is the session's own `user:<sub>` (where the server's
    /// `send` delivers), and its `seq` is newer than the last one sent.
    Deliver(Delivery),
    /// An operator revocation reached this node (a store notice).
    Revoked {
        /// What was revoked.
        revocation: Revocation,
        /// When it was issued, in ms (for the propagation time).
        issued_at_ms: u64,
    },
    /// The session was taken over (resume elsewhere) or evicted by the per-user
    /// limit (a store notice).
    Replaced,
    /// The store may have lost notices meant for this node: a revocation may have
    /// been missed.
    NoticesLost,
    /// The outbound queue is full, or deliveries were dropped for it: the client
    /// does not read.
    OutboundFull,
    /// The server is shutting down.
    Shutdown,
    /// The socket is gone.
    PeerClosed(PeerClose),
    /// Time passed; run due timers.
    Tick,
}
