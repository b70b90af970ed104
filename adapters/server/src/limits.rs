//! The caps on unauthenticated connections, counted from TCP accept (before
//! TLS) until authentication: per client network (an IPv4 address, an IPv6
//! /64, which one client usually holds whole) and in total on the node.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Counts unauthenticated connections per client network and in total.
pub struct IpLimiter {
    counts: Mutex<Counts>,
    max_per_ip: usize,
    max_total: usize,
}

#[derive(Default)]
struct Counts {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// One counted connection; dropping it (authenticated or gone) uncounts it.
pub struct IpGuard {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

/// What `ip` is counted under: an IPv4 address as it is (also when mapped into
/// IPv6), an IPv6 address by its /64.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

impl IpLimiter {
    /// At most `max_per_ip` per client network, and `max_total` in all.
    pub fn new(max_per_ip: usize, max_total: usize) -> Arc<Self> {
        Arc::new(IpLimiter {
            counts: Mutex::new(Counts::default()),
            max_per_ip,
            max_total,
        })
    }

    /// Counts one more connection for `ip`, or `None` when its network or the
    /// node is at its cap.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpGuard> {
        let ip = client_network(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return None;
        }
        let n = counts.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        counts.total += 1;
        Some(IpGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// Unauthenticated connections currently counted for `ip`'s network.
    pub fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.per_ip.get(&client_network(ip)).copied().unwrap_or(0)
    }

    /// Unauthenticated connections currently counted on the node.
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
            counts.total -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_cap_holds_and_guards_release() {
        let limiter = IpLimiter::new(2, 100);
        let a = limiter.try_acquire(ip("127.0.0.1")).expect("first");
        let _b = limiter.try_acquire(ip("127.0.0.1")).expect("second");
        assert!(
            limiter.try_acquire(ip("127.0.0.1")).is_none(),
            "third is over the cap"
        );
        assert!(
            limiter.try_acquire(ip("127.0.0.2")).is_some(),
            "another IP has its own count"
        );
        drop(a);
        assert_eq!(limiter.count(ip("127.0.0.1")), 1);
        assert!(limiter.try_acquire(ip("127.0.0.1")).is_some());
    }

    #[test]
    fn ipv6_addresses_are_counted_by_their_64() {
        let limiter = IpLimiter::new(2, 100);
        // One client holds a whole /64: rotating its low bits gains nothing.
        let _a = limiter.try_acquire(ip("2001:db8:1:2::1")).expect("first");
        let _b = limiter
            .try_acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .expect("second");
        assert!(limiter.try_acquire(ip("2001:db8:1:2:abcd::9")).is_none());
        assert_eq!(limiter.count(ip("2001:db8:1:2::77")), 2);
        assert!(
            limiter.try_acquire(ip("2001:db8:1:3::1")).is_some(),
            "the next /64 is another client"
        );
        // An IPv4-mapped address is its IPv4 address.
        let _c = limiter.try_acquire(ip("::ffff:192.0.2.7")).expect("mapped");
        assert_eq!(limiter.count(ip("192.0.2.7")), 1);
    }

    #[test]
    fn the_node_wide_cap_holds_across_addresses() {
        let limiter = IpLimiter::new(10, 3);
        let held: Vec<IpGuard> = (1..=3)
            .map(|i| {
                limiter
                    .try_acquire(ip(&format!("10.0.0.{i}")))
                    .expect("under")
            })
            .collect();
        assert!(
            limiter.try_acquire(ip("10.0.0.9")).is_none(),
            "over the total"
        );
        assert_eq!(limiter.total(), 3);
        drop(held);
        assert_eq!(limiter.total(), 0);
        assert!(limiter.try_acquire(ip("10.0.0.9")).is_some());
    }
}
