//! Channel authorization by the token's `channels` claim (PROTOCOL §6).
//!
//! A pattern is an exact name or a prefix ending in `*` (one or more characters,
//! `:` included). `{sub}` stands for the token's `sub`, matched literally: a `*`
//! inside `sub` is no wildcard. A `*` anywhere but last makes the pattern grant
//! nothing. `user:{sub}` is always allowed.

/// Whether `channel` is allowed for `sub` by `patterns` (the `channels` claim,
/// `None` when the token has none).
pub fn channel_allowed(patterns: Option<&[String]>, sub: &str, channel: &str) -> bool {
    if is_own_user_channel(sub, channel) {
        return true;
    }
    patterns
        .unwrap_or_default()
        .iter()
        .any(|p| pattern_matches(p, sub, channel))
}

fn is_own_user_channel(sub: &str, channel: &str) -> bool {
    channel
        .strip_prefix("user:")
        .is_some_and(|rest| rest == sub)
}

/// Whether one pattern matches `channel`.
pub fn pattern_matches(pattern: &str, sub: &str, channel: &str) -> bool {
    let (body, wildcard) = match pattern.strip_suffix('*') {
        Some(prefix) => (prefix, true),
        None => (pattern, false),
    };
    if body.contains('*') {
        return false;
    }
    // Walk the pattern piece by piece so that `sub` is compared literally and no
    // string is allocated.
    let mut rest = channel;
    let mut pieces = body.split("{sub}");
    let mut first = true;
    for piece in pieces.by_ref() {
        if !first {
            match rest.strip_prefix(sub) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        first = false;
        match rest.strip_prefix(piece) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    if wildcard {
        !rest.is_empty()
    } else {
        rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(patterns: &[&str], sub: &str, channel: &str) -> bool {
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        channel_allowed(Some(&patterns), sub, channel)
    }

    #[test]
    fn exact_names_match_only_themselves() {
        assert!(allowed(&["general"], "alice", "general"));
        assert!(!allowed(&["general"], "alice", "general2"));
        assert!(!allowed(&["general"], "alice", "genera"));
    }

    #[test]
    fn a_trailing_star_needs_one_or_more_characters() {
        assert!(allowed(&["team:*"], "alice", "team:42"));
        assert!(allowed(&["team:*"], "alice", "team:42:sub"));
        assert!(!allowed(&["team:*"], "alice", "team:"));
        assert!(!allowed(&["team:*"], "alice", "teams:1"));
        assert!(allowed(&["*"], "alice", "anything"));
    }

    #[test]
    fn a_star_anywhere_but_last_grants_nothing() {
        assert!(!allowed(&["te*m:1"], "alice", "te*m:1"));
        assert!(!allowed(&["te*m:1"], "alice", "team:1"));
        assert!(!allowed(&["**"], "alice", "x*"));
    }

    #[test]
    fn sub_is_substituted_and_matched_literally() {
        assert!(allowed(&["dm:{sub}:*"], "alice", "dm:alice:bob"));
        assert!(!allowed(&["dm:{sub}:*"], "alice", "dm:bob:alice"));
        // A `*` inside sub is no wildcard.
        assert!(allowed(&["room:{sub}"], "a*", "room:a*"));
        assert!(!allowed(&["room:{sub}"], "a*", "room:abc"));
        assert!(allowed(&["{sub}-{sub}"], "x", "x-x"));
        assert!(!allowed(&["{sub}-{sub}"], "x", "x-y"));
    }

    #[test]
    fn own_user_channel_is_always_allowed() {
        assert!(channel_allowed(None, "alice", "user:alice"));
        assert!(!channel_allowed(None, "alice", "user:bob"));
        assert!(!channel_allowed(None, "alice", "general"));
        assert!(allowed(&[], "alice", "user:alice"));
    }
}
