//! The cap on unauthenticated connections per client IP, counted from TCP accept
//! until authentication.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts unauthenticated connections per IP.
pub struct IpLimiter {
    counts: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One counted connection; dropping it (authenticated or gone) uncounts it.
pub struct IpGuard {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    /// At most `max` per IP.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(IpLimiter {
            counts: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// Counts one more connection for `ip`, or `None` when it is at the cap.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// Unauthenticated connections currently counted for `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_and_guards_release() {
        let limiter = IpLimiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let a = limiter.try_acquire(ip).expect("first");
        let _b = limiter.try_acquire(ip).expect("second");
        assert!(limiter.try_acquire(ip).is_none(), "third is over the cap");
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        assert!(
            limiter.try_acquire(other).is_some(),
            "another IP has its own count"
        );
        drop(a);
        assert_eq!(limiter.count(ip), 1);
        assert!(limiter.try_acquire(ip).is_some());
    }
}
