//! Error codes of the wire protocol: one table that is the single source of
//! each code's name, fatality, retry hint, close code and HTTP status.

use std::fmt;

/// What a client should do after a fatal error (PROTOCOL §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Connect again with backoff and jitter, resuming the session if it can.
    Reconnect,
    /// Get a fresh token first, then connect.
    Reauth,
    /// Do not retry automatically.
    None,
}

impl Retry {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::Reconnect => "reconnect",
            Retry::Reauth => "reauth",
            Retry::None => "none",
        }
    }
}

/// A WebSocket close code (RFC 6455 §7.4 and the 4xxx range of PROTOCOL §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// Normal closure: logout, or the client closed with 1000.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// Going away: server shutdown; the session stays resumable.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// Protocol error: a frame that breaks RFC 6455 framing.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// A text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// Message over the size limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1008: the client broke a policy before authenticating (too many frames).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// Server fault.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// Try again later: the client did not read fast enough.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// A client bug.
    pub const CLIENT_BUG: CloseCode = CloseCode(4400);
    /// An authentication problem.
    pub const UNAUTHENTICATED: CloseCode = CloseCode(4401);
    /// Revoked: stop.
    pub const REVOKED: CloseCode = CloseCode(4403);
    /// A timeout: reconnect.
    pub const TIMEOUT: CloseCode = CloseCode(4408);
    /// Replaced by another connection: stop.
    pub const REPLACED: CloseCode = CloseCode(4409);
    /// A limit was hit.
    pub const LIMIT: CloseCode = CloseCode(4429);
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One row of the error table (PROTOCOL §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorSpec {
    /// The code as it appears on the wire.
    pub name: &'static str,
    /// When the error is raised, for people (used in the generated docs).
    pub when: &'static str,
    /// Whether the error ends the connection in its default context.
    pub fatal: bool,
    /// Whether the error is non-fatal when it answers a `refresh`.
    pub non_fatal_on_refresh: bool,
    /// The retry hint carried by the fatal error.
    pub retry: Option<Retry>,
    /// The close code that follows the fatal error; `None` for errors that are never
    /// followed by a close (non-fatal ones, and refusals that happen before the upgrade).
    pub close: Option<CloseCode>,
    /// HTTP status when the error refuses an upgrade (PROTOCOL §2).
    pub http_status: u16,
    /// The default human-readable message. Never contains client input.
    pub message: &'static str,
}

macro_rules! error_codes {
    ($(
        $(#[$doc:meta])*
        $variant:ident => {
            name: $name:literal,
            when: $when:literal,
            fatal: $fatal:literal,
            non_fatal_on_refresh: $refresh:literal,
            retry: $retry:expr,
            close: $close:expr,
            http: $http:literal,
            message: $message:literal $(,)?
        }
    ),* $(,)?) => {
        /// Every error code of the wire protocol (PROTOCOL §5).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the protocol's table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// This code's row of the table.
            pub const fn spec(self) -> &'static ErrorSpec {
                match self {
                    $(ErrorCode::$variant => &ErrorSpec {
                        name: $name,
                        when: $when,
                        fatal: $fatal,
                        non_fatal_on_refresh: $refresh,
                        retry: $retry,
                        close: $close,
                        http_status: $http,
                        message: $message,
                    },)*
                }
            }
        }
    };
}

error_codes! {
    /// Malformed frame, unknown type, bad field.
    BadRequest => { name: "BAD_REQUEST", when: "malformed frame, unknown type, bad field",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::None),
        close: Some(CloseCode::CLIENT_BUG), http: 400, message: "malformed request" },
    /// Signature, algorithm, unknown `kid`, no matching key, issuer, audience, `user_id` mismatch.
    AuthFailed => { name: "AUTH_FAILED",
        when: "signature, algorithm, unknown `kid`, no matching key, issuer, audience, `user_id` mismatch",
        fatal: true, non_fatal_on_refresh: true, retry: Some(Retry::Reauth),
        close: Some(CloseCode::UNAUTHENTICATED), http: 401, message: "authentication failed" },
    /// Not a JWT, bad encoding, too large, a required claim missing or mistyped, `crit`, bad `typ`, JWE, duplicate claims.
    InvalidToken => { name: "INVALID_TOKEN",
        when: "not a JWT, bad encoding, too large, a required claim missing or of the wrong type, `crit`, a `typ` other than `JWT`/`at+jwt`, JWE or nested token, duplicate claim names",
        fatal: true, non_fatal_on_refresh: true, retry: Some(Retry::Reauth),
        close: Some(CloseCode::UNAUTHENTICATED), http: 401, message: "invalid token" },
    /// Token past `exp` when presented.
    TokenExpired => { name: "TOKEN_EXPIRED", when: "token past `exp` when presented",
        fatal: true, non_fatal_on_refresh: true, retry: Some(Retry::Reauth),
        close: Some(CloseCode::UNAUTHENTICATED), http: 401, message: "token expired" },
    /// `nbf` or `iat` in the future beyond the leeway.
    TokenNotYetValid => { name: "TOKEN_NOT_YET_VALID", when: "`nbf` or `iat` in the future beyond the leeway",
        fatal: true, non_fatal_on_refresh: true, retry: Some(Retry::Reauth),
        close: Some(CloseCode::UNAUTHENTICATED), http: 401, message: "token not yet valid" },
    /// `jti` or `sub` revoked.
    TokenRevoked => { name: "TOKEN_REVOKED", when: "`jti` or `sub` revoked",
        fatal: true, non_fatal_on_refresh: true, retry: Some(Retry::None),
        close: Some(CloseCode::REVOKED), http: 401, message: "token revoked" },
    /// Refresh token for another `sub`.
    SubjectMismatch => { name: "SUBJECT_MISMATCH", when: "refresh token for another `sub`",
        fatal: false, non_fatal_on_refresh: true, retry: None,
        close: None, http: 401, message: "refresh token is for another subject" },
    /// Session reached expiry without refresh.
    SessionExpired => { name: "SESSION_EXPIRED", when: "session reached expiry without refresh",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::Reauth),
        close: Some(CloseCode::UNAUTHENTICATED), http: 401, message: "session expired" },
    /// Operator revoked the session.
    SessionRevoked => { name: "SESSION_REVOKED", when: "operator revoked the session",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::None),
        close: Some(CloseCode::REVOKED), http: 401, message: "session revoked" },
    /// Resume failed (unknown, wrong token, grace over, reused).
    SessionNotFound => { name: "SESSION_NOT_FOUND", when: "resume failed (unknown, wrong token, grace over, reused)",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::Reauth),
        close: Some(CloseCode::UNAUTHENTICATED), http: 401, message: "session not found" },
    /// Evicted by a newer session of the same user, or taken over by a resume.
    SessionReplaced => { name: "SESSION_REPLACED", when: "evicted by a newer session of the same user, or taken over by a resume",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::None),
        close: Some(CloseCode::REPLACED), http: 409, message: "session replaced by another connection" },
    /// Per-user limit, policy `reject_new`.
    TooManySessions => { name: "TOO_MANY_SESSIONS", when: "per-user limit, policy `reject_new`",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::None),
        close: Some(CloseCode::LIMIT), http: 429, message: "too many sessions for this user" },
    /// Request other than auth/resume before authentication.
    NotAuthenticated => { name: "NOT_AUTHENTICATED", when: "request other than auth/resume before authentication",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::None),
        close: Some(CloseCode::UNAUTHENTICATED), http: 401, message: "authenticate first" },
    /// Second `auth` or `resume`.
    AlreadyAuthenticated => { name: "ALREADY_AUTHENTICATED", when: "second `auth` or `resume`",
        fatal: false, non_fatal_on_refresh: false, retry: None,
        close: None, http: 400, message: "already authenticated" },
    /// No auth within `auth_timeout_ms`.
    AuthTimeout => { name: "AUTH_TIMEOUT", when: "no auth within `auth_timeout_ms`",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::Reconnect),
        close: Some(CloseCode::TIMEOUT), http: 401, message: "authentication timed out" },
    /// Nothing received for `idle_timeout_ms`.
    IdleTimeout => { name: "IDLE_TIMEOUT", when: "nothing received for `idle_timeout_ms`",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::Reconnect),
        close: Some(CloseCode::TIMEOUT), http: 408, message: "idle timeout" },
    /// Channel not allowed by the token's claims.
    Forbidden => { name: "FORBIDDEN", when: "channel not allowed by the token's claims",
        fatal: false, non_fatal_on_refresh: false, retry: None,
        close: None, http: 403, message: "channel not allowed" },
    /// Message rate exceeded; unauthenticated connections per IP over the limit.
    RateLimited => { name: "RATE_LIMITED",
        when: "message rate exceeded (close 4429); unauthenticated connections per IP over the limit (HTTP 429 at upgrade)",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::Reconnect),
        close: Some(CloseCode::LIMIT), http: 429, message: "rate limit exceeded" },
    /// `Origin` not in the allow-list (HTTP 403 at upgrade, never a close).
    OriginNotAllowed => { name: "ORIGIN_NOT_ALLOWED", when: "`Origin` not in the allow-list (HTTP 403 at upgrade, never a close)",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::None),
        close: None, http: 403, message: "origin not allowed" },
    /// Over the size limit.
    MessageTooLarge => { name: "MESSAGE_TOO_LARGE", when: "over the size limit (a frame far over it may get the close alone)",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::Reconnect),
        close: Some(CloseCode::MESSAGE_TOO_BIG), http: 413, message: "message too large" },
    /// The client does not read and its outbound queue is full.
    SlowConsumer => { name: "SLOW_CONSUMER", when: "the client does not read and its outbound queue is full",
        fatal: true, non_fatal_on_refresh: false, retry: Some(Retry::Reconnect),
        close: Some(CloseCode::TRY_AGAIN_LATER), http: 503, message: "client too slow to read" },
    /// Server fault (store unreachable …).
    Internal => { name: "INTERNAL", when: "server fault (store unreachable …)",
        fatal: true, non_fatal_on_refresh: true, retry: Some(Retry::Reconnect),
        close: Some(CloseCode::INTERNAL_ERROR), http: 503, message: "internal server error" },
    /// `rpc` for a method with no handler, or not in `app.rpc_methods`.
    MethodNotFound => { name: "METHOD_NOT_FOUND", when: "`rpc` for a method with no handler, or not in `app.rpc_methods`",
        fatal: false, non_fatal_on_refresh: false, retry: None,
        close: None, http: 404, message: "method not found" },
    /// The application's handler refused the call.
    AppError => { name: "APP_ERROR", when: "the application's handler refused the call (its `message`, optional `details` ≤ 4 KiB)",
        fatal: false, non_fatal_on_refresh: false, retry: None,
        close: None, http: 422, message: "the application refused the call" },
    /// The handler did not answer within `app.rpc_timeout_ms`, or its backend is unreachable.
    Unavailable => { name: "UNAVAILABLE", when: "the handler did not answer within `app.rpc_timeout_ms`, or its backend is unreachable",
        fatal: false, non_fatal_on_refresh: false, retry: None,
        close: None, http: 503, message: "the application is unavailable" },
    /// More than `app.max_rpc_in_flight` calls in flight.
    Busy => { name: "BUSY", when: "more than `app.max_rpc_in_flight` calls in flight",
        fatal: false, non_fatal_on_refresh: false, retry: None,
        close: None, http: 429, message: "too many calls in flight" },
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `"TOKEN_EXPIRED"`.
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// Looks a code up by its wire name.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == name)
    }

    /// Whether this error ends the connection in its default context.
    pub fn is_fatal(self) -> bool {
        self.spec().fatal
    }

    /// The retry hint carried when the error is fatal.
    pub fn retry(self) -> Option<Retry> {
        self.spec().retry
    }

    /// The close code that follows the error when fatal.
    pub fn close_code(self) -> Option<CloseCode> {
        self.spec().close
    }

    /// The HTTP status used when the error refuses an upgrade.
    pub fn http_status(self) -> u16 {
        self.spec().http_status
    }

    /// Whether a session stays resumable after this fatal error: errors that tell the
    /// client to `reconnect` keep it (PROTOCOL §5: "resuming the session if it can");
    /// all others end it for good.
    pub fn keeps_session_resumable(self) -> bool {
        self.retry() == Some(Retry::Reconnect)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Renders the error table as Markdown; `docs/error-codes.md` is checked against it.
pub fn error_table_markdown() -> String {
    let mut out = String::from(
        "| code | when | fatal | retry | close | HTTP (at upgrade) | message |\n|---|---|---|---|---|---|---|\n",
    );
    for code in ErrorCode::ALL {
        let s = code.spec();
        let fatal = match (s.fatal, s.non_fatal_on_refresh) {
            (true, true) => "yes (no for refresh)",
            (true, false) => "yes",
            (false, _) => "no",
        };
        let retry = s.retry.map_or("–", Retry::as_str);
        let close = s.close.map_or_else(|| "–".to_string(), |c| c.to_string());
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            s.name, s.when, fatal, retry, close, s.http_status, s.message
        ));
    }
    out
}
