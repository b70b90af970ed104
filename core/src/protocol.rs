//! The wire protocol's messages (PROTOCOL §2–§6): a strict decoder for what clients
//! send and an encoder for what the server sends.
//!
//! Decoding never echoes client input in its errors: serde's own messages can quote
//! the offending value (a token, say), so every failure is reported with a fixed
//! reason that names at most a field.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ErrorCode, Retry};

/// The subprotocol name, and the `protocol` field of `authenticated`.
pub const PROTOCOL_VERSION: &str = "wsauth.v1";

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 256;
/// Longest `session_id` or `resume_token` accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest `user_id` accepted, in bytes.
pub const MAX_USER_ID_BYTES: usize = 1024;
/// Longest `rpc` method name accepted, in bytes (PROTOCOL §8).
pub const MAX_METHOD_BYTES: usize = 128;
/// Largest `details` of an `APP_ERROR` passed on to the client, in bytes of JSON.
pub const MAX_DETAILS_BYTES: usize = 4096;
/// The longest `message` of an `APP_ERROR` passed to the client, in bytes; a
/// longer one is cut at a character boundary and ends with `…`.
pub const MAX_APP_MESSAGE_BYTES: usize = 1024;

/// A value that must never be printed: a token or a resume token.
///
/// `Debug` prints a placeholder; the only way to the text is [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret text, for the one place that must use it (a verifier, a hash, the wire).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Application data carried by `publish` and `message`: any JSON value, kept as its
/// raw text so that relaying it costs no parse and no re-encode, and shared so that a
/// fan-out to many sessions copies no bytes.
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// Makes a payload from JSON text, checking that it is one JSON value.
    pub fn from_json(json: &str) -> Result<Payload, serde_json::Error> {
        RawValue::from_string(json.to_owned()).map(|raw| Payload(Arc::from(raw)))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// JSON `null`.
    pub fn null() -> Payload {
        Payload(Arc::from(RawValue::NULL.to_owned()))
    }

    fn from_raw(raw: &RawValue) -> Payload {
        Payload(Arc::from(raw.to_owned()))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// A message a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// `auth`: first-message authentication.
    Auth {
        /// Request id to echo.
        id: Option<u64>,
        /// The JWT.
        token: Secret,
        /// Optional `user_id` (alias `userId`) that must equal the token's `sub`.
        user_id: Option<String>,
    },
    /// `resume`: take a detached session over.
    Resume {
        /// Request id to echo.
        id: Option<u64>,
        /// The session to resume.
        session_id: String,
        /// Its single-use resume token.
        resume_token: Secret,
        /// The last `seq` the client received (0 when absent).
        last_seq: u64,
    },
    /// `refresh`: replace the session's token.
    Refresh {
        /// Request id to echo.
        id: Option<u64>,
        /// The new JWT.
        token: Secret,
    },
    /// `logout`: end the session for good.
    Logout {
        /// Request id (never answered: logout's only reply is the close).
        id: Option<u64>,
    },
    /// `join`: subscribe to a channel.
    Join {
        /// Request id to echo.
        id: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// `leave`: unsubscribe from a channel.
    Leave {
        /// Request id to echo.
        id: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// `publish`: send data to a channel's subscribers.
    Publish {
        /// Request id to echo.
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// The data, any JSON value.
        data: Payload,
    },
    /// `ping`: an application-level keepalive (browsers cannot see WebSocket
    /// pings); answered `pong` at once.
    Ping {
        /// Request id to echo.
        id: Option<u64>,
    },
    /// `rpc`: call an application method (PROTOCOL §8).
    Rpc {
        /// Request id to echo (required: results may come in any order).
        id: u64,
        /// The method: 1–128 of `A-Z a-z 0-9 . _ : / -`.
        method: String,
        /// The argument, any JSON value (`null` when absent).
        data: Payload,
    },
}

impl ClientMessage {
    /// The request id, if the client gave one.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientMessage::Auth { id, .. }
            | ClientMessage::Resume { id, .. }
            | ClientMessage::Refresh { id, .. }
            | ClientMessage::Logout { id }
            | ClientMessage::Join { id, .. }
            | ClientMessage::Leave { id, .. }
            | ClientMessage::Publish { id, .. }
            | ClientMessage::Ping { id } => *id,
            ClientMessage::Rpc { id, .. } => Some(*id),
        }
    }

    /// The wire name of the message type.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Auth { .. } => "auth",
            ClientMessage::Resume { .. } => "resume",
            ClientMessage::Refresh { .. } => "refresh",
            ClientMessage::Logout { .. } => "logout",
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Rpc { .. } => "rpc",
        }
    }

    /// Encodes the message as a client would send it (clients, tests, fuzz round trips).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            user_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            session_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            resume_token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            last_seq: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            method: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a RawValue>,
        }
        let mut out = Out {
            kind: self.type_name(),
            id: self.id(),
            token: None,
            user_id: None,
            session_id: None,
            resume_token: None,
            last_seq: None,
            channel: None,
            method: None,
            data: None,
        };
        match self {
            ClientMessage::Auth { token, user_id, .. } => {
                out.token = Some(token.expose());
                out.user_id = user_id.as_deref();
            }
            ClientMessage::Resume {
                session_id,
                resume_token,
                last_seq,
                ..
            } => {
                out.session_id = Some(session_id);
                out.resume_token = Some(resume_token.expose());
                out.last_seq = Some(*last_seq);
            }
            ClientMessage::Refresh { token, .. } => out.token = Some(token.expose()),
            ClientMessage::Logout { .. } | ClientMessage::Ping { .. } => {}
            ClientMessage::Join { channel, .. } | ClientMessage::Leave { channel, .. } => {
                out.channel = Some(channel);
            }
            ClientMessage::Publish { channel, data, .. } => {
                out.channel = Some(channel);
                out.data = Some(&data.0);
            }
            ClientMessage::Rpc { method, data, .. } => {
                out.method = Some(method);
                out.data = Some(&data.0);
            }
        }
        serde_json::to_string(&out).unwrap_or_default()
    }
}

/// Why a frame could not be decoded: a typed protocol error, the request id when it
/// could be read, and a fixed reason that never quotes the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct DecodeError {
    /// `BAD_REQUEST` or `MESSAGE_TOO_LARGE`.
    pub code: ErrorCode,
    /// The request's `id`, when the frame was an object with a valid one.
    pub id: Option<u64>,
    /// What was wrong, for people.
    pub reason: Cow<'static, str>,
}

impl DecodeError {
    fn bad(id: Option<u64>, reason: impl Into<Cow<'static, str>>) -> Self {
        DecodeError {
            code: ErrorCode::BadRequest,
            id,
            reason: reason.into(),
        }
    }
}

/// The first pass of decoding: every known field kept as raw JSON, so that each can
/// be type-checked on its own and reported without quoting it.
#[derive(Deserialize)]
struct RawFields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "userId", borrow, default)]
    user_id_alias: Option<&'a RawValue>,
    #[serde(borrow, default)]
    session_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resume_token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    last_seq: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// What a channel name must be, in the words errors use.
pub const CHANNEL_NAME_RULE: &str = "`channel` must be a non-empty name without control characters";

/// Whether `name` can name a channel (§6): not empty, no control characters (its
/// length is bounded apart, by [`MAX_CHANNEL_BYTES`]).
pub fn is_channel_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}

/// Deepest nesting of arrays and objects accepted in `data` by default
/// (`limits.max_json_depth`).
pub const MAX_JSON_DEPTH: usize = 64;

/// Decodes one text frame into a client message, with `data` nested at most
/// [`MAX_JSON_DEPTH`] deep ([`decode_client_message_limited`]).
///
/// `max_bytes` is the message size limit; a longer text is `MESSAGE_TOO_LARGE` without
/// being parsed. Unknown extra fields are ignored; duplicate known fields, unknown
/// types, missing or wrongly typed fields are `BAD_REQUEST`.
pub fn decode_client_message(text: &str, max_bytes: usize) -> Result<ClientMessage, DecodeError> {
    decode_client_message_limited(text, max_bytes, MAX_JSON_DEPTH)
}

/// [`decode_client_message`] with `data` nested at most `max_depth` arrays and
/// objects deep (`[1]` is 1 deep); deeper is `BAD_REQUEST`, so that no receiver
/// of the relayed `data` has to parse an unbounded nesting. The depth is counted
/// by one scan of the raw text, without recursion.
pub fn decode_client_message_limited(
    text: &str,
    max_bytes: usize,
    max_depth: usize,
) -> Result<ClientMessage, DecodeError> {
    if text.len() > max_bytes {
        return Err(DecodeError {
            code: ErrorCode::MessageTooLarge,
            id: None,
            reason: Cow::Borrowed("message is larger than the size limit"),
        });
    }
    let raw = parse_fields(text)?;
    let id = match raw.id {
        None => None,
        Some(v) => Some(
            serde_json::from_str::<u64>(v.get())
                .map_err(|_| DecodeError::bad(None, "`id` must be an unsigned integer"))?,
        ),
    };
    let kind = raw
        .kind
        .ok_or_else(|| DecodeError::bad(id, "missing field `type`"))?;
    let kind: Cow<'_, str> = serde_json::from_str(kind.get())
        .map_err(|_| DecodeError::bad(id, "`type` must be a string"))?;
    Fields { raw, id, max_depth }.message(&kind)
}

/// Whether the JSON text `json` (already known to be valid) nests arrays and
/// objects deeper than `max`. One pass over the bytes, skipping strings.
fn nested_deeper_than(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The first pass: a JSON object, its known fields kept raw.
fn parse_fields(text: &str) -> Result<RawFields<'_>, DecodeError> {
    // A derived struct would also accept a JSON array, taking fields by position.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        let reason = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => "a message must be a JSON object",
            Err(_) => "not valid JSON",
        };
        return Err(DecodeError::bad(None, reason));
    }
    serde_json::from_str(text).map_err(|e| {
        let reason: Cow<'static, str> = match e.classify() {
            serde_json::error::Category::Data => {
                let text = e.to_string();
                // serde's duplicate-field message names only our own field name.
                match text.strip_prefix("duplicate field `") {
                    Some(rest) => {
                        let field = rest.split('`').next().unwrap_or("");
                        Cow::Owned(format!("duplicate field `{}`", field_name(field)))
                    }
                    None => Cow::Borrowed("a message must be a JSON object"),
                }
            }
            _ => Cow::Borrowed("not valid JSON"),
        };
        DecodeError::bad(None, reason)
    })
}

/// The second pass: a message's fields checked one by one, in a fixed order, so
/// the first wrong one is the one reported.
struct Fields<'a> {
    raw: RawFields<'a>,
    id: Option<u64>,
    max_depth: usize,
}

impl Fields<'_> {
    fn message(&self, kind: &str) -> Result<ClientMessage, DecodeError> {
        let id = self.id;
        let raw = &self.raw;
        match kind {
            "auth" => Ok(ClientMessage::Auth {
                id,
                token: Secret(self.string(raw.token, "token", usize::MAX)?),
                user_id: self.user_id()?,
            }),
            "resume" => Ok(ClientMessage::Resume {
                id,
                session_id: self.string(raw.session_id, "session_id", MAX_ID_BYTES)?,
                resume_token: Secret(self.string(
                    raw.resume_token,
                    "resume_token",
                    MAX_ID_BYTES,
                )?),
                last_seq: self.last_seq()?,
            }),
            "refresh" => Ok(ClientMessage::Refresh {
                id,
                token: Secret(self.string(raw.token, "token", usize::MAX)?),
            }),
            "logout" => Ok(ClientMessage::Logout { id }),
            "ping" => Ok(ClientMessage::Ping { id }),
            "join" => Ok(ClientMessage::Join {
                id,
                channel: self.channel()?,
            }),
            "leave" => Ok(ClientMessage::Leave {
                id,
                channel: self.channel()?,
            }),
            "publish" => Ok(ClientMessage::Publish {
                id,
                channel: self.channel()?,
                data: self.data()?,
            }),
            "rpc" => Ok(ClientMessage::Rpc {
                id: id.ok_or_else(|| DecodeError::bad(None, "missing field `id`"))?,
                method: self.method()?,
                data: match self.raw.data {
                    None => Payload::null(),
                    Some(_) => self.data()?,
                },
            }),
            _ => Err(DecodeError::bad(id, "unknown message type")),
        }
    }

    fn string(
        &self,
        field: Option<&RawValue>,
        name: &'static str,
        max: usize,
    ) -> Result<String, DecodeError> {
        let id = self.id;
        let v = field.ok_or_else(|| DecodeError::bad(id, format!("missing field `{name}`")))?;
        let s: String = serde_json::from_str(v.get())
            .map_err(|_| DecodeError::bad(id, format!("`{name}` must be a string")))?;
        if s.len() > max {
            return Err(DecodeError::bad(id, format!("`{name}` is too long")));
        }
        Ok(s)
    }

    fn channel(&self) -> Result<String, DecodeError> {
        let c = self.string(self.raw.channel, "channel", MAX_CHANNEL_BYTES)?;
        if !is_channel_name(&c) {
            return Err(DecodeError::bad(self.id, CHANNEL_NAME_RULE));
        }
        Ok(c)
    }

    /// `user_id`, or its alias `userId`; both must then agree.
    fn user_id(&self) -> Result<Option<String>, DecodeError> {
        match (self.raw.user_id, self.raw.user_id_alias) {
            (None, None) => Ok(None),
            (Some(a), None) | (None, Some(a)) => {
                Ok(Some(self.string(Some(a), "user_id", MAX_USER_ID_BYTES)?))
            }
            (Some(a), Some(b)) => {
                let a = self.string(Some(a), "user_id", MAX_USER_ID_BYTES)?;
                let b = self.string(Some(b), "userId", MAX_USER_ID_BYTES)?;
                if a != b {
                    return Err(DecodeError::bad(self.id, "`user_id` and `userId` differ"));
                }
                Ok(Some(a))
            }
        }
    }

    fn last_seq(&self) -> Result<u64, DecodeError> {
        let Some(v) = self.raw.last_seq else {
            return Ok(0);
        };
        serde_json::from_str::<u64>(v.get())
            .map_err(|_| DecodeError::bad(self.id, "`last_seq` must be an unsigned integer"))
    }

    fn data(&self) -> Result<Payload, DecodeError> {
        let data = self
            .raw
            .data
            .ok_or_else(|| DecodeError::bad(self.id, "missing field `data`"))?;
        if nested_deeper_than(data.get(), self.max_depth) {
            return Err(DecodeError::bad(
                self.id,
                format!("`data` is nested deeper than {}", self.max_depth),
            ));
        }
        Ok(Payload::from_raw(data))
    }

    fn method(&self) -> Result<String, DecodeError> {
        let m = self.string(self.raw.method, "method", MAX_METHOD_BYTES)?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".:_/-".contains(c);
        if m.is_empty() || !m.chars().all(allowed) {
            return Err(DecodeError::bad(
                self.id,
                "`method` must be 1 to 128 of `A-Z a-z 0-9 . _ : / -`",
            ));
        }
        Ok(m)
    }
}

/// Maps serde's field name back to the wire name, so a reason never carries text
/// the client chose.
fn field_name(serde_name: &str) -> &'static str {
    const FIELDS: [&str; 11] = [
        "type",
        "id",
        "token",
        "user_id",
        "userId",
        "session_id",
        "resume_token",
        "last_seq",
        "channel",
        "method",
        "data",
    ];
    FIELDS
        .iter()
        .find(|f| **f == serde_name)
        .copied()
        .unwrap_or("?")
}

/// A message the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Authentication succeeded.
    Authenticated {
        /// The `auth` request's id (absent for header authentication).
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The new session.
        session_id: String,
        /// The single-use token that resumes it.
        resume_token: Secret,
        /// The token's `sub`.
        user_id: String,
        /// The token's `exp`, in ms.
        expires_at: u64,
        /// Interval of the server's pings.
        heartbeat_ms: u64,
        /// Always [`PROTOCOL_VERSION`].
        protocol: &'static str,
    },
    /// A refresh succeeded.
    Refreshed {
        /// The `refresh` request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The new token's `exp`, in ms.
        expires_at: u64,
    },
    /// The token is about to expire: refresh now.
    Expiring {
        /// The token's `exp`, in ms.
        expires_at: u64,
        /// Milliseconds left until `expires_at`.
        in_ms: u64,
    },
    /// A resume succeeded; the missed messages follow.
    Resumed {
        /// The `resume` request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The resumed session.
        session_id: String,
        /// The rotated resume token.
        resume_token: Secret,
        /// The token's `exp`, in ms.
        expires_at: u64,
        /// Channels still joined.
        channels: Vec<String>,
        /// How many messages follow.
        replayed: u64,
        /// Whether some missed messages were no longer buffered.
        gap: bool,
    },
    /// A join succeeded.
    Joined {
        /// The `join` request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// A channel was left, on request or because a refreshed token no longer allows it.
    Left {
        /// The `leave` request's id (absent when the server left on its own).
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// Why the server left on its own (`FORBIDDEN`).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<ErrorCode>,
    },
    /// A publish was accepted for delivery.
    Published {
        /// The `publish` request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A message delivered from a channel.
    Message {
        /// The channel.
        channel: std::sync::Arc<str>,
        /// The publisher's `sub`; absent when the server published (PROTOCOL §9).
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<std::sync::Arc<str>>,
        /// Per-session sequence number.
        seq: u64,
        /// The published data.
        data: Payload,
    },
    /// The answer to a `ping`.
    Pong {
        /// The `ping` request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// The result of an `rpc` (PROTOCOL §8).
    RpcResult {
        /// The `rpc` request's id.
        id: u64,
        /// The handler's answer, any JSON value.
        data: Payload,
    },
    /// An error; fatal ones are followed by a close.
    Error {
        /// The id of the request that caused it.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The code, for programs.
        code: ErrorCode,
        /// A message, for people. Never quotes a token.
        message: Cow<'static, str>,
        /// Whether a close follows.
        fatal: bool,
        /// What to do next (fatal errors only).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry: Option<Retry>,
        /// The application's details of an `APP_ERROR` (a JSON object, at most
        /// [`MAX_DETAILS_BYTES`]); absent otherwise.
        #[serde(skip_serializing_if = "Option::is_none")]
        details: Option<Payload>,
    },
}

impl ServerMessage {
    /// An error message for `code`, fatal or not as the caller decided.
    pub fn error(code: ErrorCode, id: Option<u64>, fatal: bool) -> Self {
        ServerMessage::Error {
            id,
            code,
            message: Cow::Borrowed(code.spec().message),
            fatal,
            retry: if fatal { code.retry() } else { None },
            details: None,
        }
    }

    /// Encodes the message as one JSON text frame.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no
        // floats, and payloads are already valid JSON.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The request id this message answers, if any.
    pub fn id(&self) -> Option<u64> {
        match self {
            ServerMessage::Authenticated { id, .. }
            | ServerMessage::Refreshed { id, .. }
            | ServerMessage::Resumed { id, .. }
            | ServerMessage::Joined { id, .. }
            | ServerMessage::Left { id, .. }
            | ServerMessage::Published { id }
            | ServerMessage::Pong { id }
            | ServerMessage::Error { id, .. } => *id,
            ServerMessage::RpcResult { id, .. } => Some(*id),
            ServerMessage::Expiring { .. } | ServerMessage::Message { .. } => None,
        }
    }
}

/// The JSON body of a refused upgrade (PROTOCOL §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// The error code.
    pub code: ErrorCode,
    /// For people.
    pub message: &'static str,
    /// What to do next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

impl ErrorBody {
    /// The body for `code`.
    pub fn new(code: ErrorCode) -> Self {
        ErrorBody {
            code,
            message: code.spec().message,
            retry: code.retry(),
        }
    }

    /// Encodes the body as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(fields: &str) -> Result<ClientMessage, DecodeError> {
        decode_client_message(&format!(r#"{{"type":"rpc"{fields}}}"#), 64 * 1024)
    }

    #[test]
    fn rpc_needs_an_id_and_a_method_and_defaults_data_to_null() {
        let Ok(ClientMessage::Rpc { id, method, data }) = rpc(r#","id":5,"method":"chat.send""#)
        else {
            panic!("a well-formed rpc decodes");
        };
        assert_eq!((id, method.as_str(), data.get()), (5, "chat.send", "null"));

        let no_id = rpc(r#","method":"chat.send","data":1"#).expect_err("id is required");
        assert_eq!((no_id.code, no_id.id), (ErrorCode::BadRequest, None));
        assert_eq!(no_id.reason, "missing field `id`");
        let no_method = rpc(r#","id":5"#).expect_err("method is required");
        assert_eq!(no_method.id, Some(5));
        assert_eq!(no_method.reason, "missing field `method`");
        let not_a_string = rpc(r#","id":5,"method":7"#).expect_err("method is a string");
        assert_eq!(not_a_string.reason, "`method` must be a string");
    }

    #[test]
    fn rpc_method_is_1_to_128_of_the_protocol_charset_and_never_quoted() {
        let ok = "Aa0._:/-".repeat(16);
        assert_eq!(ok.len(), MAX_METHOD_BYTES);
        assert!(rpc(&format!(r#","id":1,"method":"{ok}""#)).is_ok());
        for bad in ["", "chat send", "chat.sénd", "a\\u0000b", "x;y"] {
            let e = rpc(&format!(r#","id":1,"method":"{bad}""#)).expect_err(bad);
            assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(1)), "{bad}");
            if !bad.is_empty() {
                assert!(!e.reason.contains(bad), "the reason quotes {bad}");
            }
        }
        let long = format!("{ok}x");
        let e = rpc(&format!(r#","id":1,"method":"{long}""#)).expect_err("129 bytes");
        assert_eq!(e.reason, "`method` is too long");
    }

    #[test]
    fn details_appear_only_when_present() {
        let plain = ServerMessage::error(ErrorCode::AppError, Some(5), false);
        assert_eq!(
            plain.to_json(),
            r#"{"type":"error","id":5,"code":"APP_ERROR","message":"the application refused the call","fatal":false}"#
        );
        let with = ServerMessage::Error {
            id: Some(5),
            code: ErrorCode::AppError,
            message: "no".into(),
            fatal: false,
            retry: None,
            details: Some(Payload::from_json(r#"{"a":1}"#).expect("json")),
        };
        assert!(
            with.to_json()
                .ends_with(r#","fatal":false,"details":{"a":1}}"#)
        );
    }

    #[test]
    fn a_message_names_from_only_when_a_user_published_it() {
        let message = |from: Option<&str>| ServerMessage::Message {
            channel: "team:42".into(),
            from: from.map(Into::into),
            seq: 7,
            data: Payload::from_json(r#"{"a":1}"#).expect("json"),
        };
        assert_eq!(
            message(Some("alice")).to_json(),
            r#"{"type":"message","channel":"team:42","from":"alice","seq":7,"data":{"a":1}}"#
        );
        assert_eq!(
            message(None).to_json(),
            r#"{"type":"message","channel":"team:42","seq":7,"data":{"a":1}}"#,
            "the server's message has no from"
        );
    }
}
