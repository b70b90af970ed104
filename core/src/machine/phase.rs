//! The phases of a connection, each a type owning exactly the state valid in it.
//! A transition consumes the old phase (`enter_live` in `awaiting.rs`, `close` in
//! `ending.rs`), so nothing outlives its phase and nothing is reset by hand.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::timers::{Timer, TimerTable};
use super::{Attachment, AuthMethod, RequestId, SessionConfig};
use crate::jwt::Claims;
use crate::protocol::{ClientMessage, DecodeError};
use crate::rate::TokenBucket;

/// A message as decoded, waiting behind the request being answered.
pub(super) type Queued = Result<ClientMessage, DecodeError>;

#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "every connection starts awaiting auth: boxing it would cost each one an allocation"
)]
pub(super) enum Phase {
    /// Waiting for `auth` or `resume` (or for a header token's outcome).
    AwaitingAuth(AwaitingAuth),
    /// A session is attached.
    Live(Box<Live>),
    /// Over: holds nothing, emits nothing.
    Closed,
}

impl Phase {
    /// What every open phase has; `None` once closed.
    pub(super) fn open(&self) -> Option<&Open> {
        match self {
            Phase::AwaitingAuth(awaiting) => Some(&awaiting.open),
            Phase::Live(live) => Some(&live.open),
            Phase::Closed => None,
        }
    }

    pub(super) fn open_mut(&mut self) -> Option<&mut Open> {
        match self {
            Phase::AwaitingAuth(awaiting) => Some(&mut awaiting.open),
            Phase::Live(live) => Some(&mut live.open),
            Phase::Closed => None,
        }
    }

    pub(super) fn live(&self) -> Option<&Live> {
        match self {
            Phase::Live(live) => Some(live),
            _ => None,
        }
    }

    /// Whether a request is waiting for its reply.
    pub(super) fn is_busy(&self) -> bool {
        match self {
            Phase::AwaitingAuth(awaiting) => awaiting.pending.is_some(),
            Phase::Live(live) => live.pending.is_some(),
            Phase::Closed => false,
        }
    }

    /// The upgrade held open for a header or query token, while there is one.
    pub(super) fn upgrade(&self) -> Option<AuthMethod> {
        match self {
            Phase::AwaitingAuth(awaiting) => awaiting.upgrade,
            _ => None,
        }
    }
}

/// What an open connection has in every phase: its timers, its message rate and
/// the messages waiting behind the request being answered.
#[derive(Clone, Debug)]
pub(super) struct Open {
    pub(super) timers: TimerTable,
    pub(super) rate: TokenBucket,
    /// Frames of every kind, data, control and continuation.
    pub(super) frames: TokenBucket,
    pub(super) queue: VecDeque<Queued>,
}

impl Open {
    /// A connection accepted at `now`: only the authentication deadline runs.
    pub(super) fn new(config: &SessionConfig, now: u64) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Auth, now.saturating_add(config.auth_timeout_ms));
        Open {
            timers,
            rate: TokenBucket::new(config.rate_per_sec, config.rate_burst, now),
            frames: TokenBucket::new(config.frame_rate_per_sec, config.frame_burst, now),
            queue: VecDeque::new(),
        }
    }

    /// The WebSocket is open: the idle and heartbeat timers start.
    pub(super) fn open_websocket(&mut self, config: &SessionConfig, now: u64) {
        let idle_at = now.saturating_add(config.idle_timeout_ms);
        self.timers.set(Timer::Idle, idle_at);
        let ping_at = now.saturating_add(config.heartbeat_ms);
        self.timers.set(Timer::Heartbeat, ping_at);
    }

    /// Something arrived: the idle deadline moves, once the WebSocket is open.
    pub(super) fn note_activity(&mut self, config: &SessionConfig, now: u64) {
        if self.timers.get(Timer::Idle).is_some() {
            let idle_at = now.saturating_add(config.idle_timeout_ms);
            self.timers.set(Timer::Idle, idle_at);
        }
    }
}

/// Before a session is attached.
#[derive(Clone, Debug)]
pub(super) struct AwaitingAuth {
    pub(super) open: Open,
    /// The upgrade is held open until a header or query token's outcome is known.
    pub(super) upgrade: Option<AuthMethod>,
    pub(super) pending: Option<(RequestId, AuthStep)>,
}

/// The authentication request being answered; later messages wait in the queue.
#[derive(Clone, Debug)]
pub(super) enum AuthStep {
    Verify {
        id: Option<u64>,
        user_id: Option<String>,
    },
    Create {
        id: Option<u64>,
        claims: Arc<Claims>,
    },
    Resume {
        id: Option<u64>,
        last_seq: u64,
    },
}

/// A live session's state.
#[derive(Clone, Debug)]
pub(super) struct Live {
    pub(super) open: Open,
    pub(super) attachment: Attachment,
    pub(super) claims: Arc<Claims>,
    pub(super) authorized_at_ms: u64,
    /// `exp` of the token the `expiring` notice was last sent for.
    pub(super) expiring_sent_for: Option<u64>,
    pub(super) joined: BTreeSet<String>,
    /// The highest `seq` sent to the client.
    pub(super) last_seq: u64,
    pub(super) pending: Option<(RequestId, LiveStep)>,
    /// Application calls in flight, outside `pending`: they do not wait for each other.
    pub(super) calls: BTreeMap<RequestId, PendingCall>,
}

/// An application call waiting for its result.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingCall {
    /// The client's `id`.
    pub(super) id: u64,
    /// When it is answered `UNAVAILABLE` unless its result came.
    pub(super) deadline: u64,
}

impl Live {
    /// A session just attached, with nothing joined or sent yet.
    pub(super) fn new(
        open: Open,
        attachment: Attachment,
        claims: Arc<Claims>,
        authorized_at_ms: u64,
    ) -> Self {
        Live {
            open,
            attachment,
            claims,
            authorized_at_ms,
            expiring_sent_for: None,
            joined: BTreeSet::new(),
            last_seq: 0,
            pending: None,
            calls: BTreeMap::new(),
        }
    }
}

/// The live session's request being answered; later messages wait in the queue.
#[derive(Clone, Debug)]
pub(super) enum LiveStep {
    RefreshVerify {
        id: Option<u64>,
    },
    RefreshStore {
        id: Option<u64>,
        claims: Arc<Claims>,
    },
    Join {
        id: Option<u64>,
        channel: String,
    },
    Publish {
        id: Option<u64>,
    },
}
