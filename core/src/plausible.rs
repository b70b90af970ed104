//! `arbitrary::Arbitrary` for the machine's [`Input`] and the types it holds, drawn
//! from small sets of plausible values: a few users, channels, sessions and token
//! ids, times near [`BASE_MS`]. Raw arbitrary values (a random `sub`, a random
//! session id, a random JSON text) would almost never meet each other, so a fuzzer
//! would seldom get past authentication.
//!
//! [`Input`]: crate::Input

use std::sync::Arc;

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::jwt::{Claims, TokenError};
use crate::machine::{Attachment, Delivery, Frame, RequestId, ResumedSession, Revocation};
use crate::protocol::{Payload, Secret};

/// 2026-01-01T00:00:00Z, in Unix ms: the time plausible values are near.
const BASE_MS: u64 = 1_767_225_600_000;

const SUBS: [&str; 3] = ["alice", "bob", "carol"];
const JTIS: [&str; 3] = ["j1", "j2", "j3"];
const SESSIONS: [&str; 4] = ["s_1", "s_2", "s_3", "s_4"];
const RESUME_TOKENS: [&str; 3] = ["r_1", "r_2", "r_3"];
const CHANNEL_PATTERNS: [&str; 4] = ["general", "team:*", "user:{sub}", "secret"];
const CHANNELS: [&str; 5] = ["general", "team:red", "user:alice", "user:bob", "secret"];
const PAYLOADS: [&str; 5] = ["1", "\"hi\"", "{\"n\":1}", "[1,2]", "null"];

/// One of each kind of client message, well formed.
const MESSAGES: [&str; 11] = [
    r#"{"type":"auth","id":1,"token":"t"}"#,
    r#"{"type":"auth","id":1,"token":"t","user_id":"alice"}"#,
    r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_1","last_seq":0}"#,
    r#"{"type":"refresh","id":2,"token":"t"}"#,
    r#"{"type":"join","id":3,"channel":"general"}"#,
    r#"{"type":"leave","id":4,"channel":"general"}"#,
    r#"{"type":"publish","id":5,"channel":"general","data":{"n":1}}"#,
    r#"{"type":"logout"}"#,
    r#"{"type":"rpc","id":6,"method":"chat.send","data":{"n":1}}"#,
    r#"{"type":"rpc","id":7,"method":"chat.send"}"#,
    r#"{"type":"ping","id":8}"#,
];

/// Every [`TokenError`]; `token_errors_are_all_drawn` keeps it complete.
const TOKEN_ERRORS: [TokenError; 21] = [
    TokenError::TooLarge { max: 8192 },
    TokenError::Malformed("header"),
    TokenError::EncryptedOrNested,
    TokenError::CriticalHeader,
    TokenError::BadType,
    TokenError::DuplicateName,
    TokenError::MissingClaim("exp"),
    TokenError::WrongClaimType("sub"),
    TokenError::AlgorithmNotAllowed,
    TokenError::UnknownKid,
    TokenError::NoMatchingKey,
    TokenError::BadSignature,
    TokenError::WrongIssuer,
    TokenError::WrongAudience,
    TokenError::Expired,
    TokenError::NotYetValid,
    TokenError::IssuedInFuture,
    TokenError::Revoked,
    TokenError::Inactive,
    TokenError::Unavailable,
    TokenError::LifetimeTooLong { max_s: 86_400 },
];

fn pick(u: &mut Unstructured<'_>, values: &[&str]) -> Result<String> {
    Ok((*u.choose(values)?).to_owned())
}

/// A time from two minutes before [`BASE_MS`] to an hour after it, in whole seconds.
fn near_base_ms(u: &mut Unstructured<'_>) -> Result<u64> {
    let offset_s: u64 = u.int_in_range(0..=3_720)?;
    Ok(BASE_MS - 120_000 + offset_s * 1000)
}

impl<'a> Arbitrary<'a> for Frame<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=10)? {
            0..=5 => Frame::Text(u.choose(&MESSAGES)?),
            6 => Frame::Text(<&str>::arbitrary(u)?),
            7 => Frame::InvalidUtf8,
            8 => Frame::Binary(u.int_in_range(0..=64)?),
            9 => Frame::ProtocolViolation,
            _ => Frame::TooLarge(u.int_in_range(65_537..=1 << 20)?),
        })
    }
}

impl<'a> Arbitrary<'a> for RequestId {
    /// Small: a connection numbers its requests from 1, so only small ones answer.
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(RequestId(u.int_in_range(1..=8)?))
    }
}

impl<'a> Arbitrary<'a> for Claims {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut claims = Claims::new(pick(u, &SUBS)?, near_base_ms(u)?);
        if bool::arbitrary(u)? {
            claims.iat_ms = Some(near_base_ms(u)?.min(claims.exp_ms));
        }
        if bool::arbitrary(u)? {
            claims.jti = Some(pick(u, &JTIS)?);
        }
        if bool::arbitrary(u)? {
            let count = u.int_in_range(0..=2)?;
            let patterns = (0..count).map(|_| pick(u, &CHANNEL_PATTERNS));
            claims.channels = Some(patterns.collect::<Result<_>>()?);
        }
        Ok(claims)
    }
}

impl<'a> Arbitrary<'a> for Payload {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Payload::from_json(u.choose(&PAYLOADS)?).map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

impl<'a> Arbitrary<'a> for Secret {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Secret::new(pick(u, &RESUME_TOKENS)?))
    }
}

impl<'a> Arbitrary<'a> for TokenError {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(u.choose(&TOKEN_ERRORS)?.clone())
    }
}

impl<'a> Arbitrary<'a> for Revocation {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=2)? {
            0 => Revocation::Token {
                jti: pick(u, &JTIS)?,
            },
            1 => Revocation::Subject {
                sub: pick(u, &SUBS)?,
                at_s: near_base_ms(u)? / 1000,
            },
            _ => Revocation::Session {
                session_id: pick(u, &SESSIONS)?,
            },
        })
    }
}

impl<'a> Arbitrary<'a> for Attachment {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Attachment {
            session_id: pick(u, &SESSIONS)?,
            epoch: u.int_in_range(1..=4)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Delivery {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Delivery {
            channel: Arc::from(*u.choose(&CHANNELS)?),
            // `None`: published or sent by the server (PROTOCOL §9).
            from: if u.ratio(1, 4)? {
                None
            } else {
                Some(Arc::from(*u.choose(&SUBS)?))
            },
            seq: u.int_in_range(1..=16)?,
            data: Payload::arbitrary(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for ResumedSession {
    /// The buffer in `seq` order, as a store keeps it.
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut buffered: Vec<Delivery> = (0..u.int_in_range(0..=4)?)
            .map(|_| Delivery::arbitrary(u))
            .collect::<Result<_>>()?;
        buffered.sort_by_key(|d| d.seq);
        buffered.dedup_by_key(|d| d.seq);
        let highest_buffered = buffered.last().map_or(0, |d| d.seq);
        let channels = (0..u.int_in_range(0..=3)?)
            .map(|_| pick(u, &CHANNELS))
            .collect::<Result<_>>()?;
        Ok(ResumedSession {
            session_id: pick(u, &SESSIONS)?,
            resume_token: Secret::arbitrary(u)?,
            claims: Arc::new(Claims::arbitrary(u)?),
            authorized_at_ms: near_base_ms(u)?,
            expiring_sent: bool::arbitrary(u)?,
            channels,
            buffered,
            last_seq: highest_buffered + u.int_in_range(0..=2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{
        AuthMethod, CallResult, Connection, Input, Output, Reply, SessionConfig, StoreRequest,
    };

    /// Deterministic bytes for `Unstructured` (xorshift64).
    fn bytes(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    fn connection(u: &mut Unstructured<'_>, now: u64) -> Result<Connection> {
        let config = Arc::new(SessionConfig::default());
        Ok(if bool::arbitrary(u)? {
            let token = Secret::new("t");
            Connection::with_upgrade_token(config, AuthMethod::Header, token, now)
        } else {
            Connection::new(config, now)
        })
    }

    #[derive(Default)]
    struct Tally {
        inputs: usize,
        closed: usize,
        authenticated: usize,
    }

    /// Feeds arbitrary inputs to one connection, a tick after each, until it
    /// closes or the bytes run out.
    fn run_connection(u: &mut Unstructured<'_>, tally: &mut Tally) -> Result<()> {
        let mut now = BASE_MS;
        let mut conn = connection(u, now)?;
        let mut was_authenticated = false;
        while !conn.is_closed() {
            answer_requests(u, &mut conn, now)?;
            let input = Input::arbitrary(u)?;
            now += u.int_in_range(0..=20_000)?;
            conn.handle(now, input);
            conn.handle(now, Input::Tick);
            tally.inputs += 1;
            was_authenticated |= conn.is_authenticated();
            if !conn.is_closed() {
                let next = conn.poll_timeout();
                assert!(next.is_some_and(|at| at > now), "{next:?} at {now}");
            }
        }
        answer_requests(u, &mut conn, now)?;
        assert_eq!(conn.poll_timeout(), None, "closed, no timer");
        conn.handle(now + 1, Input::Tick);
        assert!(conn.poll_output().is_none(), "closed, inputs ignored");
        tally.closed += 1;
        tally.authenticated += usize::from(was_authenticated);
        Ok(())
    }

    /// Drains the outputs, answering each request at once as a driver would: half
    /// the time with an arbitrary reply, else with one that fits the request. A
    /// call is answered with an arbitrary result, or left unanswered.
    fn answer_requests(u: &mut Unstructured<'_>, conn: &mut Connection, now: u64) -> Result<()> {
        while let Some(output) = conn.poll_output() {
            if let Output::Call { request, .. } = output {
                if bool::arbitrary(u)? {
                    conn.handle(now, Input::CallResult(request, CallResult::arbitrary(u)?));
                }
                continue;
            }
            let request = match &output {
                Output::Verify { request, .. } => *request,
                Output::Store(store) => match store.reply_to() {
                    Some(request) => request,
                    None => continue,
                },
                _ => continue,
            };
            let reply = if bool::arbitrary(u)? {
                Reply::arbitrary(u)?
            } else {
                fitting_reply(u, &output)?
            };
            conn.handle(now, Input::Reply(request, reply));
        }
        Ok(())
    }

    fn fitting_reply(u: &mut Unstructured<'_>, request: &Output) -> Result<Reply> {
        Ok(match request {
            Output::Verify { .. } => Reply::Verified(Arc::new(Claims::arbitrary(u)?)),
            Output::Store(StoreRequest::CreateSession { .. }) => Reply::Created {
                attachment: Attachment::arbitrary(u)?,
                resume_token: Secret::arbitrary(u)?,
                evicted: 0,
            },
            Output::Store(StoreRequest::ResumeSession { .. }) => Reply::Resumed {
                session: Box::new(ResumedSession::arbitrary(u)?),
                epoch: u.int_in_range(1..=4)?,
            },
            Output::Store(StoreRequest::RefreshSession { .. }) => Reply::Refreshed,
            Output::Store(StoreRequest::Subscribe { .. }) => Reply::Subscribed,
            _ => Reply::Published,
        })
    }

    #[test]
    fn arbitrary_inputs_never_panic_and_a_closed_connection_wants_no_timer() {
        let data = bytes(64 * 1024, 0x5eed);
        let mut u = Unstructured::new(&data);
        let mut tally = Tally::default();
        while !u.is_empty() && tally.inputs < 3_000 {
            if run_connection(&mut u, &mut tally).is_err() {
                break;
            }
        }
        assert!(tally.inputs >= 300, "{} inputs", tally.inputs);
        assert!(tally.closed >= 50, "{} closed", tally.closed);
        assert!(
            tally.authenticated >= 5,
            "{} authenticated",
            tally.authenticated
        );
    }

    #[test]
    fn token_errors_are_all_drawn() {
        // Adding a variant breaks this match, and the list must grow with it.
        let index = |e: &TokenError| match e {
            TokenError::TooLarge { .. } => 0,
            TokenError::Malformed(_) => 1,
            TokenError::EncryptedOrNested => 2,
            TokenError::CriticalHeader => 3,
            TokenError::BadType => 4,
            TokenError::DuplicateName => 5,
            TokenError::MissingClaim(_) => 6,
            TokenError::WrongClaimType(_) => 7,
            TokenError::AlgorithmNotAllowed => 8,
            TokenError::UnknownKid => 9,
            TokenError::NoMatchingKey => 10,
            TokenError::BadSignature => 11,
            TokenError::WrongIssuer => 12,
            TokenError::WrongAudience => 13,
            TokenError::Expired => 14,
            TokenError::NotYetValid => 15,
            TokenError::IssuedInFuture => 16,
            TokenError::Revoked => 17,
            TokenError::Inactive => 18,
            TokenError::Unavailable => 19,
            TokenError::LifetimeTooLong { .. } => 20,
        };
        let drawn: Vec<usize> = TOKEN_ERRORS.iter().map(index).collect();
        assert_eq!(drawn, (0..TOKEN_ERRORS.len()).collect::<Vec<_>>());
    }
}
