//! A bounded cache of verified tokens, so that a token seen again (a reconnect
//! storm, many tabs of one user) costs a hash instead of an RSA or ECDSA check.
//!
//! Keyed by the SHA-256 of the token (the token itself is not kept), each entry
//! lives until the token's `exp` plus leeway, when the verifier would refuse it
//! anyway. Only what the verifier accepted is cached, and a hit gives the same
//! claims the verifier gave: revocation is not the verifier's business and is
//! checked by the store on every use, cached or not. Time is an argument.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::Claims;

/// The cache key of a token: its SHA-256.
pub type TokenKey = [u8; 32];

/// Verified tokens, at most `capacity` of them; the oldest insertions go first.
#[derive(Debug)]
pub struct VerifyCache {
    entries: HashMap<TokenKey, (Arc<Claims>, u64)>,
    order: VecDeque<TokenKey>,
    capacity: usize,
}

impl VerifyCache {
    /// An empty cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        VerifyCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// The key of `token`.
    pub fn key(token: &str) -> TokenKey {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of a token verified earlier, unless its time is up at `now_ms`.
    pub fn get(&mut self, key: &TokenKey, now_ms: u64) -> Option<Arc<Claims>> {
        match self.entries.get(key) {
            Some((claims, until)) if now_ms < *until => Some(claims.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `until_ms` (its `exp` plus leeway).
    pub fn insert(&mut self, key: TokenKey, claims: Arc<Claims>, until_ms: u64, now_ms: u64) {
        if self.capacity == 0 || now_ms >= until_ms {
            return;
        }
        if self.entries.insert(key, (claims, until_ms)).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        // Keys of entries removed by `get` linger in `order`; keep it bounded too.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str) -> Arc<Claims> {
        Arc::new(Claims::new(sub, 10_000))
    }

    #[test]
    fn an_entry_lives_until_its_time_and_not_a_millisecond_longer() {
        let mut cache = VerifyCache::new(4);
        let key = VerifyCache::key("a.b.c");
        cache.insert(key, claims("alice"), 10_000, 0);
        assert_eq!(
            cache.get(&key, 9_999).map(|c| c.sub.clone()),
            Some("alice".into())
        );
        assert!(cache.get(&key, 10_000).is_none(), "expired at exp + leeway");
        assert!(cache.is_empty(), "and forgotten");
    }

    #[test]
    fn the_cache_stays_within_its_capacity_dropping_the_oldest() {
        let mut cache = VerifyCache::new(3);
        let keys: Vec<TokenKey> = (0..10)
            .map(|i| VerifyCache::key(&format!("t{i}")))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            cache.insert(*key, claims(&format!("u{i}")), 10_000, 0);
            assert!(cache.len() <= 3);
        }
        assert!(cache.get(&keys[0], 1).is_none(), "the oldest went");
        assert!(cache.get(&keys[9], 1).is_some(), "the newest stayed");
        for round in 0..100 {
            let key = VerifyCache::key(&format!("churn{round}"));
            cache.insert(key, claims("x"), 10_000, 0);
            let _ = cache.get(&key, 20_000);
        }
        assert!(
            cache.order.len() <= 6,
            "bookkeeping bounded: {}",
            cache.order.len()
        );
    }

    #[test]
    fn nothing_is_cached_with_no_capacity_or_no_time_left() {
        let mut cache = VerifyCache::new(0);
        cache.insert(VerifyCache::key("t"), claims("a"), 10_000, 0);
        assert!(cache.is_empty());
        let mut cache = VerifyCache::new(2);
        cache.insert(VerifyCache::key("t"), claims("a"), 10_000, 10_000);
        assert!(cache.is_empty());
    }
}
