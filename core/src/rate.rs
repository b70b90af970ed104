//! A token bucket with time as an input, for the per-connection message rate.

/// Token bucket: `per_sec` tokens a second, at most `burst` stored. Arithmetic is in
/// thousandths of a token so that no floats are needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    per_sec: u64,
    capacity_milli: u64,
    level_milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(per_sec: u32, burst: u32, now_ms: u64) -> Self {
        let capacity_milli = u64::from(burst) * 1000;
        TokenBucket {
            per_sec: u64::from(per_sec),
            capacity_milli,
            level_milli: capacity_milli,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        self.try_take_n(1, now_ms)
    }

    /// Takes `n` tokens if there are that many; else takes none.
    pub fn try_take_n(&mut self, n: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // per_sec tokens a second = per_sec milli-tokens a millisecond.
        let refill = elapsed.saturating_mul(self.per_sec);
        self.level_milli = self
            .level_milli
            .saturating_add(refill)
            .min(self.capacity_milli);
        let wanted = u64::from(n).saturating_mul(1000);
        if self.level_milli >= wanted {
            self.level_milli -= wanted;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenBucket;

    #[test]
    fn burst_then_steady_rate() {
        let mut b = TokenBucket::new(100, 200, 0);
        let taken = (0..250).filter(|_| b.try_take(0)).count();
        assert_eq!(taken, 200, "a full bucket allows exactly the burst");
        assert!(!b.try_take(9), "9 ms refill 0.9 tokens");
        assert!(b.try_take(10), "10 ms refill one token");
        assert!(!b.try_take(10));
        // After a long pause the bucket is full again, not more.
        let taken = (0..250).filter(|_| b.try_take(60_000)).count();
        assert_eq!(taken, 200);
    }

    #[test]
    fn several_tokens_are_taken_all_or_none() {
        let mut b = TokenBucket::new(1000, 100, 0);
        assert!(b.try_take_n(60, 0));
        assert!(!b.try_take_n(60, 0), "40 left: none taken");
        assert!(b.try_take_n(40, 0));
        assert!(!b.try_take(0));
        assert!(b.try_take_n(5, 5), "5 ms refill 5 tokens");
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut b = TokenBucket::new(1, 1, 1000);
        assert!(b.try_take(1000));
        assert!(!b.try_take(0));
        assert!(!b.try_take(1999));
        assert!(b.try_take(2000));
    }
}
