//! The process's file-descriptor budget: every connection is a descriptor.
//!
//! Two things are done once at start, before the runtime's threads exist:
//! - the soft `RLIMIT_NOFILE` is raised towards what the configuration needs (many
//!   systems start processes at 1024, far below `limits.max_connections`);
//! - the kernel's descriptor table is grown to that size at once. Linux grows it by
//!   doubling, and in a multi-threaded process each growth waits for an RCU grace
//!   period (10–20 ms here). Under a connection ramp every accept that crossed a
//!   power of two (256, 512, … 8192) stalled for that long; in a single-threaded
//!   process no wait is needed, so growing it up front removes the stalls.

/// What [`prepare`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit now in force, if it could be read.
    pub soft_limit: Option<u64>,
    /// The hard limit, if it could be read.
    pub hard_limit: Option<u64>,
    /// Descriptors the table was grown to hold (0 when it was not).
    pub reserved: u64,
}

impl FdBudget {
    /// True when the soft limit is below `want`: some connections will be refused by
    /// the operating system before `limits.max_connections` is reached.
    pub fn falls_short_of(&self, want: u64) -> bool {
        self.soft_limit.is_some_and(|soft| soft < want)
    }
}

/// Raises the soft limit to `want` descriptors (at most the hard limit) and grows
/// the descriptor table to the limit in force, capped at `want`. Call it before any
/// thread is spawned.
pub fn prepare(want: u64) -> FdBudget {
    let (soft_limit, hard_limit) = raise_soft_limit(want);
    let size = soft_limit.map_or(want, |soft| soft.min(want));
    let reserved = if reserve_table(size) { size } else { 0 };
    FdBudget {
        soft_limit,
        hard_limit,
        reserved,
    }
}

/// Raises the soft `RLIMIT_NOFILE` to `want` (never lowers it, never above the hard
/// limit). Returns the soft and hard limits in force.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix
pub fn raise_soft_limit(want: u64) -> (Option<u64>, Option<u64>) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (None, None);
        }
        let target = (want as libc::rlim_t).min(lim.rlim_max);
        if lim.rlim_cur < target {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (Some(lim.rlim_cur as u64), Some(lim.rlim_max as u64))
}

/// Not unix: nothing to raise.
#[cfg(not(unix))]
pub fn raise_soft_limit(_want: u64) -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// Grows the descriptor table to hold `fds` descriptors by placing one at `fds - 1`
/// and closing it (the table never shrinks). False when it could not.
#[cfg(unix)]
pub fn reserve_table(fds: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(top) = libc::c_int::try_from(fds.saturating_sub(1)) else {
        return false;
    };
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return false;
    };
    if top <= null.as_raw_fd() {
        return true;
    }
    // SAFETY: `top` is checked to be unused (F_GETFD fails with EBADF) before dup2
    // places a copy of our own /dev/null descriptor there, which is closed at once;
    // no other descriptor of the process is touched.
    unsafe {
        if libc::fcntl(top, libc::F_GETFD) != -1 {
            return true;
        }
        if libc::dup2(null.as_raw_fd(), top) != top {
            return false;
        }
        libc::close(top);
    }
    true
}

/// Not unix: nothing to grow.
#[cfg(not(unix))]
pub fn reserve_table(_fds: u64) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_but_never_past_the_hard_limit() {
        let (soft, hard) = raise_soft_limit(0);
        let (soft, hard) = (soft.expect("soft"), hard.expect("hard"));
        assert!(soft <= hard);
        let (raised, _) = raise_soft_limit(hard.saturating_add(1_000));
        assert_eq!(raised, Some(hard), "raised to the hard limit, not past it");
        let (again, _) = raise_soft_limit(16);
        assert_eq!(again, Some(hard), "a smaller want never lowers the limit");
    }

    #[test]
    fn reserving_leaves_no_descriptor_open_and_new_ones_still_come_low() {
        let (soft, _) = raise_soft_limit(4096);
        let size = soft.expect("soft").min(4096);
        assert!(reserve_table(size));
        let top = libc::c_int::try_from(size - 1).expect("fits");
        // SAFETY: F_GETFD only queries the descriptor number.
        let open = unsafe { libc::fcntl(top, libc::F_GETFD) };
        assert_eq!(open, -1, "the placeholder descriptor was closed");
        #[cfg(target_os = "linux")]
        {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            let table: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("FDSize:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("FDSize");
            assert!(table >= size, "the table holds {table}, wanted {size}");
        }
        let file = std::fs::File::open("/dev/null").expect("open");
        use std::os::fd::AsRawFd;
        assert!(
            file.as_raw_fd() < 1024,
            "descriptors are still allocated lowest first"
        );
    }

    #[test]
    fn a_shortfall_is_reported() {
        let budget = FdBudget {
            soft_limit: Some(1024),
            hard_limit: Some(4096),
            reserved: 1024,
        };
        assert!(budget.falls_short_of(100_000));
        assert!(!budget.falls_short_of(1000));
    }
}
