//! The session rules every store applies, stated once: when a session is alive,
//! what a revocation refuses and how long it lasts, what the per-user limit does,
//! and what a resume replays.
//!
//! Pure functions of their arguments (times in Unix milliseconds unless named
//! `_s`). `MemoryStore` calls them; the Redis store's Lua prelude cannot, so it
//! mirrors each one in a function of the same name, and the store contract's shared
//! table of cases (`wsauth_store::contract::RULE_CASES`) checks that both stores
//! give the verdicts these functions give.

use std::collections::BTreeSet;

use crate::jwt::Claims;
use crate::machine::{Delivery, Revocation};

/// When a token of `exp_ms` stops being accepted: `exp` plus the clock leeway. A
/// live session ends then (unless refreshed), and no resume revives it after.
pub fn token_ends_at(exp_ms: u64, leeway_ms: u64) -> u64 {
    exp_ms.saturating_add(leeway_ms)
}

/// When a session stops being alive: `exp` + leeway for its token, and, while no
/// connection holds it (`detached_at_ms` is when the last one went), the end of
/// its grace period, whichever comes first.
pub fn session_ends_at(
    detached_at_ms: Option<u64>,
    exp_ms: u64,
    resume_grace_ms: u64,
    leeway_ms: u64,
) -> u64 {
    let token_end = token_ends_at(exp_ms, leeway_ms);
    match detached_at_ms {
        None => token_end,
        Some(at) => token_end.min(at.saturating_add(resume_grace_ms)),
    }
}

/// Whether a session is alive at `now_ms`: attached, or detached within
/// `resume_grace_ms`; and before its token's `exp` + `leeway_ms`. A session that is
/// not alive can be neither resumed nor counted toward the per-user limit.
pub fn session_alive(
    now_ms: u64,
    detached_at_ms: Option<u64>,
    exp_ms: u64,
    resume_grace_ms: u64,
    leeway_ms: u64,
) -> bool {
    now_ms < session_ends_at(detached_at_ms, exp_ms, resume_grace_ms, leeway_ms)
}

/// Whether a revocation entry that lasts until `until_ms` is in force at `now_ms`.
pub fn entry_in_force(now_ms: u64, until_ms: u64) -> bool {
    now_ms < until_ms
}

/// Whether a revocation of a user at `at_s` (whole seconds) covers a token issued
/// at `iat_s`: issued at or before it, or with no `iat` (its age is unknown).
pub fn sub_revocation_covers(iat_s: Option<u64>, at_s: u64) -> bool {
    iat_s.is_none_or(|iat| iat <= at_s)
}

/// Whether `revocation` refuses a token with these claims, whatever the time
/// (the definition behind [`Revocation::refuses_token`]).
pub fn revocation_refuses(revocation: &Revocation, claims: &Claims) -> bool {
    match revocation {
        Revocation::Token { jti } => claims.jti.as_deref() == Some(jti.as_str()),
        Revocation::Subject { sub, at_s } => {
            claims.sub == *sub && sub_revocation_covers(claims.iat_s(), *at_s)
        }
        Revocation::Session { .. } => false,
    }
}

/// A store's revocation entry for a `sub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubEntry {
    /// The latest revocation time, in whole seconds.
    pub at_s: u64,
    /// Until when the entry is in force, in ms.
    pub until_ms: u64,
}

/// Whether a token is revoked at `now_ms`, given the store's entries for its `jti`
/// (in force until `jti_until_ms`) and for its `sub`.
pub fn token_revoked(
    now_ms: u64,
    iat_s: Option<u64>,
    jti_until_ms: Option<u64>,
    sub_entry: Option<SubEntry>,
) -> bool {
    let by_jti = jti_until_ms.is_some_and(|until| entry_in_force(now_ms, until));
    let by_sub = sub_entry.is_some_and(|e| {
        entry_in_force(now_ms, e.until_ms) && sub_revocation_covers(iat_s, e.at_s)
    });
    by_jti || by_sub
}

/// Until when a `jti` revocation issued at `now_ms` lasts: as long as the token is
/// accepted (`exp` + leeway) when a stored session knows its `exp` (the latest, if
/// several do), else `max_token_lifetime_ms`.
pub fn jti_revocation_until(
    now_ms: u64,
    known_exp_ms: Option<u64>,
    leeway_ms: u64,
    max_token_lifetime_ms: u64,
) -> u64 {
    match known_exp_ms {
        Some(exp) => exp.saturating_add(leeway_ms),
        None => now_ms.saturating_add(max_token_lifetime_ms),
    }
}

/// Until when a `sub` revocation issued at `now_ms` lasts: `max_token_lifetime_ms`,
/// after which every token it covers has expired.
pub fn sub_revocation_until(now_ms: u64, max_token_lifetime_ms: u64) -> u64 {
    now_ms.saturating_add(max_token_lifetime_ms)
}

/// What the per-user session limit does when it is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LimitPolicy {
    /// The oldest sessions are removed and their connections told `Replaced`.
    #[default]
    EvictOldest,
    /// The new session is refused (`TOO_MANY_SESSIONS`).
    RejectNew,
}

/// What the per-user limit decides about a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitDecision {
    /// Create it, after removing this many of the user's oldest sessions.
    Admit {
        /// How many of the oldest sessions go first.
        evict_oldest: usize,
    },
    /// Refuse it (`TOO_MANY_SESSIONS`).
    Refuse,
}

/// The per-user limit: a user with `live` sessions (attached or within grace)
/// asks for one more, with at most `max` allowed.
pub fn limit_decision(live: usize, max: usize, policy: LimitPolicy) -> LimitDecision {
    if live < max {
        return LimitDecision::Admit { evict_oldest: 0 };
    }
    match policy {
        LimitPolicy::RejectNew => LimitDecision::Refuse,
        // The new session takes one place of `max`; a limit of 0 still admits it.
        LimitPolicy::EvictOldest => LimitDecision::Admit {
            evict_oldest: live + 1 - max.max(1),
        },
    }
}

/// The channel of user `sub`: `user:<sub>`. The server's `send` to a user delivers
/// on it (PROTOCOL §9), to every session of the user, joined to it or not.
pub fn user_channel(sub: &str) -> String {
    format!("user:{sub}")
}

/// Whether a session of user `sub` that has joined `joined` accepts a message on
/// `channel`: a joined channel, or its own user channel `user:<sub>` (where the
/// server's `send` delivers whether or not the session joined it). A message on any
/// other channel is dropped (the session left it, or a refresh or resume dropped it).
pub fn accepts_channel(channel: &str, sub: &str, joined: &BTreeSet<String>) -> bool {
    joined.contains(channel) || channel.strip_prefix("user:") == Some(sub)
}

/// What a resume replays: the deliveries of the session's `buffered` messages
/// (in `seq` order) that the client has not seen (`seq` > `last_seq`) on a channel
/// it accepts (one it keeps, or its own user channel: [`accepts_channel`] for user
/// `sub`), and whether there is a gap: messages were assigned after `last_seq`
/// (the store's `last_assigned`) but the one right after it is no longer buffered.
/// The gap is judged on the whole buffer, channels no longer kept included.
pub fn replay(
    buffered: Vec<Delivery>,
    last_seq: u64,
    last_assigned: u64,
    sub: &str,
    kept: &BTreeSet<String>,
) -> (Vec<Delivery>, bool) {
    let oldest_missed = buffered.iter().map(|d| d.seq).find(|seq| *seq > last_seq);
    let gap = last_assigned > last_seq
        && oldest_missed.is_none_or(|first| first > last_seq.saturating_add(1));
    let replay = buffered
        .into_iter()
        .filter(|d| d.seq > last_seq && accepts_channel(&d.channel, sub, kept))
        .collect();
    (replay, gap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    const T: u64 = 1_767_225_600_000;
    const GRACE: u64 = 1_000;
    const LEEWAY: u64 = 30_000;

    #[test]
    fn a_detached_session_dies_exactly_at_grace_end() {
        let exp = T + 3_600_000;
        assert!(session_alive(T + GRACE - 1, Some(T), exp, GRACE, LEEWAY));
        assert!(!session_alive(T + GRACE, Some(T), exp, GRACE, LEEWAY));
        assert!(
            session_alive(T + 10 * GRACE, None, exp, GRACE, LEEWAY),
            "an attached session has no grace to run out"
        );
        assert!(
            !session_alive(T, Some(T), exp, 0, LEEWAY),
            "no grace at all"
        );
    }

    #[test]
    fn a_session_dies_exactly_at_exp_plus_leeway() {
        let exp = T + 1_000;
        for detached in [None, Some(exp)] {
            let grace = 10 * LEEWAY;
            assert!(session_alive(
                exp + LEEWAY - 1,
                detached,
                exp,
                grace,
                LEEWAY
            ));
            assert!(!session_alive(exp + LEEWAY, detached, exp, grace, LEEWAY));
        }
        assert_eq!(session_ends_at(Some(T), exp, GRACE, LEEWAY), T + GRACE);
        assert_eq!(session_ends_at(None, u64::MAX, GRACE, LEEWAY), u64::MAX);
    }

    #[test]
    fn a_sub_revocation_covers_iat_up_to_its_time_and_tokens_without_iat() {
        let at = T / 1000;
        assert!(sub_revocation_covers(Some(at - 1), at));
        assert!(sub_revocation_covers(Some(at), at), "iat equal: covered");
        assert!(!sub_revocation_covers(Some(at + 1), at), "one second after");
        assert!(sub_revocation_covers(None, at), "no iat");
    }

    #[test]
    fn revocations_refuse_what_they_name() {
        let at_s = T / 1000;
        let mut c = Claims::new("alice", T + 3_600_000);
        c.jti = Some("j1".into());
        c.iat_ms = Some(at_s * 1000 + 999);
        let token = |jti: &str| Revocation::Token { jti: jti.into() };
        let subject = |sub: &str, at_s| Revocation::Subject {
            sub: sub.into(),
            at_s,
        };
        assert!(revocation_refuses(&token("j1"), &c));
        assert!(!revocation_refuses(&token("j2"), &c));
        assert!(
            revocation_refuses(&subject("alice", at_s), &c),
            "iat_s equal"
        );
        assert!(!revocation_refuses(&subject("alice", at_s - 1), &c));
        assert!(!revocation_refuses(&subject("bob", at_s), &c));
        let session = Revocation::Session {
            session_id: "s_x".into(),
        };
        assert!(!revocation_refuses(&session, &c));
        c.jti = None;
        assert!(!revocation_refuses(&token("j1"), &c), "no jti");
    }

    #[test]
    fn entries_refuse_only_while_in_force() {
        let at_s = T / 1000;
        let until = T + 5_000;
        let entry = Some(SubEntry {
            at_s,
            until_ms: until,
        });
        assert!(token_revoked(until - 1, Some(at_s), None, entry));
        assert!(!token_revoked(until, Some(at_s), None, entry), "expired");
        assert!(token_revoked(until - 1, None, None, entry), "no iat");
        assert!(!token_revoked(T, Some(at_s + 1), None, entry), "newer");
        assert!(token_revoked(until - 1, Some(at_s + 1), Some(until), entry));
        assert!(!token_revoked(until, Some(at_s + 1), Some(until), entry));
        assert!(!token_revoked(T, None, None, None), "no entry");
    }

    #[test]
    fn revocation_entries_last_as_long_as_the_tokens_they_refuse() {
        let day = 86_400_000;
        let exp = T + 60_000;
        assert_eq!(
            jti_revocation_until(T, Some(exp), LEEWAY, day),
            exp + LEEWAY
        );
        assert_eq!(jti_revocation_until(T, None, LEEWAY, day), T + day);
        assert_eq!(sub_revocation_until(T, day), T + day);
        assert_eq!(sub_revocation_until(u64::MAX - 1, day), u64::MAX);
    }

    #[test]
    fn the_limit_at_max_minus_one_max_and_max_plus_one() {
        use LimitDecision::{Admit, Refuse};
        let max = 3;
        let cases = [
            (max - 1, LimitPolicy::EvictOldest, Admit { evict_oldest: 0 }),
            (max - 1, LimitPolicy::RejectNew, Admit { evict_oldest: 0 }),
            (max, LimitPolicy::EvictOldest, Admit { evict_oldest: 1 }),
            (max, LimitPolicy::RejectNew, Refuse),
            // More than max: the limit was lowered since they were created.
            (max + 1, LimitPolicy::EvictOldest, Admit { evict_oldest: 2 }),
            (max + 1, LimitPolicy::RejectNew, Refuse),
        ];
        for (live, policy, want) in cases {
            assert_eq!(limit_decision(live, max, policy), want, "{live} {policy:?}");
        }
        assert_eq!(
            limit_decision(2, 0, LimitPolicy::EvictOldest),
            Admit { evict_oldest: 2 }
        );
        assert_eq!(limit_decision(0, 0, LimitPolicy::RejectNew), Refuse);
    }

    /// Seqs 1..=`published`, odd ones on `a`, even ones on `b`; the last `cap` kept.
    fn buffer(published: u64, cap: u64) -> Vec<Delivery> {
        (published.saturating_sub(cap) + 1..=published)
            .map(|seq| Delivery {
                channel: if seq % 2 == 1 { "a" } else { "b" }.into(),
                from: Some("p".into()),
                seq,
                data: Payload::from_json("1").expect("json"),
            })
            .collect()
    }

    fn replayed(published: u64, cap: u64, last_seq: u64, kept: &[&str]) -> (Vec<u64>, bool) {
        let kept = kept.iter().map(|c| (*c).to_owned()).collect();
        let (deliveries, gap) = replay(buffer(published, cap), last_seq, published, "p", &kept);
        (deliveries.iter().map(|d| d.seq).collect(), gap)
    }

    #[test]
    fn replay_before_at_and_after_the_buffer() {
        // Buffer holds 3, 4, 5 of 1..=5.
        assert_eq!(replayed(5, 3, 0, &["a", "b"]), (vec![3, 4, 5], true));
        assert_eq!(replayed(5, 3, 1, &["a", "b"]), (vec![3, 4, 5], true));
        assert_eq!(
            replayed(5, 3, 2, &["a", "b"]),
            (vec![3, 4, 5], false),
            "the first missed is the oldest buffered"
        );
        assert_eq!(replayed(5, 3, 4, &["a", "b"]), (vec![5], false));
        assert_eq!(replayed(5, 3, 5, &["a", "b"]), (vec![], false));
        assert_eq!(
            replayed(5, 3, 9, &["a", "b"]),
            (vec![], false),
            "a last_seq beyond the store's is no gap"
        );
    }

    #[test]
    fn a_trimmed_or_empty_buffer_is_a_gap() {
        assert_eq!(replayed(5, 0, 3, &["a"]), (vec![], true), "nothing kept");
        assert_eq!(replayed(0, 3, 0, &["a"]), (vec![], false), "nothing sent");
    }

    #[test]
    fn channels_no_longer_joined_are_not_replayed_but_count_for_the_gap() {
        assert_eq!(replayed(5, 3, 2, &["a"]), (vec![3, 5], false));
        // Seq 4 (on b) is buffered: no gap though it is not replayed.
        assert_eq!(replayed(5, 3, 3, &["a"]), (vec![5], false));
        assert_eq!(replayed(5, 3, 0, &[]), (vec![], true));
    }

    #[test]
    fn a_session_accepts_joined_channels_and_its_own_user_channel() {
        let joined: BTreeSet<String> = ["team:1".to_owned()].into();
        assert!(accepts_channel("team:1", "alice", &joined));
        assert!(
            accepts_channel("user:alice", "alice", &joined),
            "own, unjoined"
        );
        assert!(
            !accepts_channel("user:bob", "alice", &joined),
            "another user's"
        );
        assert!(!accepts_channel("team:2", "alice", &joined), "not joined");
        assert!(
            !accepts_channel("user:alic", "alice", &joined),
            "a prefix of it"
        );
        assert!(!accepts_channel("user:alice2", "alice", &joined));
        assert!(
            !accepts_channel("alice", "alice", &joined),
            "no user: prefix"
        );
        assert_eq!(user_channel("alice"), "user:alice");
    }

    #[test]
    fn a_resume_replays_the_own_user_channel_though_not_joined() {
        let mut buffered = buffer(3, 3);
        buffered.push(Delivery {
            channel: "user:p".into(),
            from: None,
            seq: 4,
            data: Payload::from_json("2").expect("json"),
        });
        buffered.push(Delivery {
            channel: "user:q".into(),
            from: None,
            seq: 5,
            data: Payload::from_json("3").expect("json"),
        });
        let kept = BTreeSet::from(["a".to_owned()]);
        let (deliveries, gap) = replay(buffered, 0, 5, "p", &kept);
        let seqs: Vec<u64> = deliveries.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, vec![1, 3, 4], "a and user:p, not b nor user:q");
        assert!(!gap);
    }
}
