//! Decisions on the HTTP upgrade request (PROTOCOL §1–§2): the `Origin`
//! allow-list, the `wsauth.v1` subprotocol, the bearer token and the optional
//! `?access_token=` query parameter. Pure functions over the request's parts, so a
//! transport feeds whatever its HTTP library parsed.

use crate::error::ErrorCode;
use crate::machine::AuthMethod;
use crate::protocol::{ErrorBody, PROTOCOL_VERSION, Secret};

/// The upgrade policy of a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradePolicy {
    /// Origins allowed to connect (exact `scheme://host[:port]`, compared ASCII
    /// case-insensitively). Empty: every origin. A request without `Origin` (not a
    /// browser) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Accept `?access_token=` (off by default: URLs end up in logs).
    pub allow_query_token: bool,
}

/// What to do with an upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeDecision {
    /// Refuse with this status and body; no WebSocket.
    Refuse {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: ErrorBody,
    },
    /// Proceed. With a token, the upgrade waits for its verification
    /// ([`crate::Connection::with_upgrade_token`]); without one, the client must send
    /// `auth` or `resume` first ([`crate::Connection::new`]).
    Proceed {
        /// The subprotocol to select, when the client offered `wsauth.v1`.
        subprotocol: Option<&'static str>,
        /// The token and where it came from.
        token: Option<(AuthMethod, Secret)>,
    },
}

/// Why a connection is refused before its upgrade request is even inspected: the
/// transport sees the condition, the core names the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptRefusal {
    /// The client address already holds its cap of unauthenticated connections.
    TooManyUnauthenticated,
    /// The node holds `max_connections` already.
    ServerFull,
    /// The request head is not a WebSocket upgrade, or is too large (`status`:
    /// 400 or 431).
    MalformedRequest {
        /// The HTTP status the transport's parser chose.
        status: u16,
    },
    /// The request head did not arrive within the handshake timeout: no answer,
    /// the connection is dropped.
    HeadTimeout,
}

impl AcceptRefusal {
    /// The error code it is counted and answered under.
    pub fn code(self) -> ErrorCode {
        match self {
            AcceptRefusal::TooManyUnauthenticated => ErrorCode::RateLimited,
            AcceptRefusal::ServerFull => ErrorCode::Internal,
            AcceptRefusal::MalformedRequest { .. } => ErrorCode::BadRequest,
            AcceptRefusal::HeadTimeout => ErrorCode::AuthTimeout,
        }
    }

    /// The HTTP answer, when one is still given.
    pub fn response(self) -> Option<(u16, ErrorBody)> {
        let status = match self {
            AcceptRefusal::TooManyUnauthenticated => self.code().http_status(),
            // Not the store's fault but the node's: a load balancer retries elsewhere.
            AcceptRefusal::ServerFull => 503,
            AcceptRefusal::MalformedRequest { status } => status,
            AcceptRefusal::HeadTimeout => return None,
        };
        Some((status, ErrorBody::new(self.code())))
    }
}

fn refuse(code: ErrorCode) -> UpgradeDecision {
    UpgradeDecision::Refuse {
        status: code.http_status(),
        body: ErrorBody::new(code),
    }
}

/// Inspects an upgrade request. `headers` are name/value pairs as received (names
/// in any case); `query` is the part of the target after `?`, if any. A repeated
/// `Origin`, `Authorization` or `Sec-WebSocket-Key`, or a `Sec-WebSocket-Key`
/// that is not the base64 of 16 bytes, is refused 400 `BAD_REQUEST` (a missing
/// key is the transport's to refuse, as it is for the other upgrade headers).
pub fn inspect_upgrade<'a, I>(
    headers: I,
    query: Option<&str>,
    policy: &UpgradePolicy,
) -> UpgradeDecision
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut authorization: Option<&[u8]> = None;
    let mut origin: Option<&[u8]> = None;
    let mut key: Option<&[u8]> = None;
    let mut offers_subprotocol = false;
    for (name, value) in headers {
        // A header that must appear once, appearing twice: ambiguous (which one
        // counts depends on who reads the request), never guessed.
        let once = |seen: &mut Option<&'a [u8]>| match seen.replace(value) {
            Some(_) => Err(refuse(ErrorCode::BadRequest)),
            None => Ok(()),
        };
        let repeated = if name.eq_ignore_ascii_case("authorization") {
            once(&mut authorization)
        } else if name.eq_ignore_ascii_case("origin") {
            once(&mut origin)
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            once(&mut key)
        } else {
            if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                offers_subprotocol |= std::str::from_utf8(value).is_ok_and(|v| {
                    v.split(',')
                        .any(|p| p.trim().eq_ignore_ascii_case(PROTOCOL_VERSION))
                });
            }
            Ok(())
        };
        if let Err(refusal) = repeated {
            return refusal;
        }
    }
    if key.is_some_and(|k| !is_websocket_key(k)) {
        return refuse(ErrorCode::BadRequest);
    }

    if let Some(origin) = origin
        && !policy.allowed_origins.is_empty()
        && !origin_allowed(origin, &policy.allowed_origins)
    {
        return refuse(ErrorCode::OriginNotAllowed);
    }

    let token = match authorization {
        None => None,
        Some(value) => match bearer_token(value) {
            Some(token) => Some((AuthMethod::Header, Secret::new(token))),
            None => return refuse(ErrorCode::InvalidToken),
        },
    };
    let token = match token {
        Some(t) => Some(t),
        None if policy.allow_query_token => match query.map(query_token) {
            Some(Ok(Some(t))) => Some((AuthMethod::Query, Secret::new(t))),
            Some(Err(())) => return refuse(ErrorCode::InvalidToken),
            _ => None,
        },
        None => None,
    };
    UpgradeDecision::Proceed {
        subprotocol: offers_subprotocol.then_some(PROTOCOL_VERSION),
        token,
    }
}

/// Whether `key` is a valid `Sec-WebSocket-Key` (RFC 6455 §4.1): the base64
/// of exactly 16 bytes, in its canonical form (24 characters, the last two
/// `==`, no stray bits).
pub fn is_websocket_key(key: &[u8]) -> bool {
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    match key {
        [data @ .., last, b'=', b'='] if data.len() == 21 => {
            // The 22nd character carries 2 bits of the 16th byte and 4 zero bits.
            data.iter().all(alphabet) && matches!(last, b'A' | b'Q' | b'g' | b'w')
        }
        _ => false,
    }
}

fn origin_allowed(origin: &[u8], allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
}

/// The token of an `Authorization: Bearer <token>` value; `None` when the value is
/// not a bearer credential.
pub fn bearer_token(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    Some(token.to_owned())
}

/// The `access_token` parameter of a query string, percent-decoded. `Err` when it
/// appears more than once or does not decode to UTF-8.
fn query_token(query: &str) -> Result<Option<String>, ()> {
    let mut found = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "access_token" {
            continue;
        }
        if found.is_some() {
            return Err(());
        }
        let decoded = percent_decode(value).ok_or(())?;
        if decoded.is_empty() {
            return Err(());
        }
        found = Some(decoded);
    }
    Ok(found)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_before_the_upgrade_are_named_by_the_core() {
        let answer = |r: AcceptRefusal| r.response().map(|(status, body)| (status, body.code));
        assert_eq!(
            answer(AcceptRefusal::TooManyUnauthenticated),
            Some((429, ErrorCode::RateLimited))
        );
        assert_eq!(
            answer(AcceptRefusal::ServerFull),
            Some((503, ErrorCode::Internal))
        );
        assert_eq!(
            answer(AcceptRefusal::MalformedRequest { status: 431 }),
            Some((431, ErrorCode::BadRequest))
        );
        assert_eq!(answer(AcceptRefusal::HeadTimeout), None);
        assert_eq!(AcceptRefusal::HeadTimeout.code(), ErrorCode::AuthTimeout);
    }

    fn decide(
        headers: &[(&'static str, &'static str)],
        query: Option<&str>,
        policy: &UpgradePolicy,
    ) -> UpgradeDecision {
        inspect_upgrade(
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            query,
            policy,
        )
    }

    fn refused_with(d: &UpgradeDecision) -> Option<(u16, ErrorCode)> {
        match d {
            UpgradeDecision::Refuse { status, body } => Some((*status, body.code)),
            UpgradeDecision::Proceed { .. } => None,
        }
    }

    #[test]
    fn bearer_header_is_extracted_case_insensitively() {
        let d = decide(
            &[("authorization", "bearer abc.def.ghi")],
            None,
            &UpgradePolicy::default(),
        );
        match d {
            UpgradeDecision::Proceed {
                token: Some((AuthMethod::Header, t)),
                subprotocol: None,
            } => {
                assert_eq!(t.expose(), "abc.def.ghi");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn non_bearer_or_repeated_authorization_is_refused_401() {
        let p = UpgradePolicy::default();
        assert_eq!(
            refused_with(&decide(
                &[("Authorization", "Basic Zm9vOmJhcg==")],
                None,
                &p
            )),
            Some((401, ErrorCode::InvalidToken))
        );
        assert_eq!(
            refused_with(&decide(&[("Authorization", "Bearer ")], None, &p)),
            Some((401, ErrorCode::InvalidToken))
        );
        assert_eq!(
            refused_with(&decide(
                &[("Authorization", "Bearer a"), ("authorization", "Bearer b")],
                None,
                &p
            )),
            Some((400, ErrorCode::BadRequest))
        );
    }

    #[test]
    fn repeated_single_headers_and_malformed_keys_are_refused_400() {
        let p = UpgradePolicy {
            allowed_origins: vec!["https://chat.example".into()],
            allow_query_token: false,
        };
        let bad = Some((400, ErrorCode::BadRequest));
        const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
        for headers in [
            &[
                ("Origin", "https://evil.example"),
                ("origin", "https://chat.example"),
            ][..],
            &[
                ("Origin", "https://chat.example"),
                ("Origin", "https://chat.example"),
            ],
            &[("Sec-WebSocket-Key", KEY), ("sec-websocket-key", KEY)],
            &[
                ("Authorization", "Bearer a.b.c"),
                ("Authorization", "Bearer a.b.c"),
            ],
        ] {
            assert_eq!(refused_with(&decide(headers, None, &p)), bad, "{headers:?}");
        }
        for key in [
            "x",
            "",
            "dGhlIHNhbXBsZSBub25j",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25jZQ==AAAA",
            "dGhlIHNhbXBsZSBub25jZ-==",
            " dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            assert_eq!(
                refused_with(&decide(&[("Sec-WebSocket-Key", key)], None, &p)),
                bad,
                "{key:?}"
            );
        }
        for key in [KEY, "AAAAAAAAAAAAAAAAAAAAAA==", "/+/+/+/+/+/+/+/+/+/+/w=="] {
            assert!(is_websocket_key(key.as_bytes()), "{key}");
            assert_eq!(
                refused_with(&decide(&[("Sec-WebSocket-Key", key)], None, &p)),
                None
            );
        }
    }

    #[test]
    fn origin_allow_list() {
        let p = UpgradePolicy {
            allowed_origins: vec!["https://chat.example".into()],
            allow_query_token: false,
        };
        assert_eq!(
            refused_with(&decide(&[("Origin", "https://evil.example")], None, &p)),
            Some((403, ErrorCode::OriginNotAllowed))
        );
        assert_eq!(
            refused_with(&decide(&[("Origin", "HTTPS://CHAT.EXAMPLE")], None, &p)),
            None
        );
        assert_eq!(
            refused_with(&decide(&[], None, &p)),
            None,
            "no Origin: not a browser"
        );
        assert_eq!(
            refused_with(&decide(
                &[("Origin", "https://evil.example")],
                None,
                &UpgradePolicy::default()
            )),
            None
        );
    }

    #[test]
    fn subprotocol_is_selected_only_when_offered() {
        let p = UpgradePolicy::default();
        let d = decide(&[("Sec-WebSocket-Protocol", "chat, wsauth.v1")], None, &p);
        assert!(matches!(
            d,
            UpgradeDecision::Proceed {
                subprotocol: Some("wsauth.v1"),
                ..
            }
        ));
        let d = decide(&[("Sec-WebSocket-Protocol", "chat")], None, &p);
        assert!(matches!(
            d,
            UpgradeDecision::Proceed {
                subprotocol: None,
                ..
            }
        ));
    }

    #[test]
    fn query_token_only_when_enabled() {
        let off = UpgradePolicy::default();
        let on = UpgradePolicy {
            allow_query_token: true,
            ..UpgradePolicy::default()
        };
        assert!(matches!(
            decide(&[], Some("access_token=a.b.c"), &off),
            UpgradeDecision::Proceed { token: None, .. }
        ));
        match decide(&[], Some("x=1&access_token=a%2Eb.c"), &on) {
            UpgradeDecision::Proceed {
                token: Some((AuthMethod::Query, t)),
                ..
            } => assert_eq!(t.expose(), "a.b.c"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            refused_with(&decide(&[], Some("access_token=a&access_token=b"), &on)),
            Some((401, ErrorCode::InvalidToken))
        );
        assert_eq!(
            refused_with(&decide(&[], Some("access_token=%zz"), &on)),
            Some((401, ErrorCode::InvalidToken))
        );
        // The header wins over the query.
        match decide(
            &[("Authorization", "Bearer h.h.h")],
            Some("access_token=q.q.q"),
            &on,
        ) {
            UpgradeDecision::Proceed {
                token: Some((AuthMethod::Header, t)),
                ..
            } => assert_eq!(t.expose(), "h.h.h"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
