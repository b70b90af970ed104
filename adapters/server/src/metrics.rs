//! Counters of what happens, kept in memory for the admin API (the Prometheus
//! exporter reads them too). Labels are codes and kinds only, never users or tokens.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wsauth_core::{AuthMethod, ErrorCode, Event};

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    /// Sessions created by authentication.
    pub authenticated: AtomicU64,
    /// Resumes that succeeded.
    pub resumed: AtomicU64,
    /// Refreshes that succeeded.
    pub refreshed: AtomicU64,
    /// Connections closed.
    pub closed: AtomicU64,
    /// Token verifications.
    pub verifications: AtomicU64,
    /// Total verification time, in nanoseconds.
    pub verification_nanos: AtomicU64,
    failures: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    closes: Mutex<BTreeMap<(u16, &'static str), u64>>,
}

impl Metrics {
    fn count_failure(&self, kind: &'static str, code: ErrorCode) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *f.entry((kind, code.as_str())).or_default() += 1;
    }

    /// An upgrade was refused before any WebSocket.
    pub fn upgrade_refused(&self, code: ErrorCode) {
        self.count_failure("upgrade", code);
    }

    /// A token was verified.
    pub fn verified(&self, took: Duration) {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        self.verification_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Counts a core event.
    pub fn event(&self, event: &Event) {
        match event {
            Event::Authenticated { .. } => {
                self.authenticated.fetch_add(1, Ordering::Relaxed);
            }
            Event::Resumed { .. } => {
                self.resumed.fetch_add(1, Ordering::Relaxed);
            }
            Event::Refreshed { .. } => {
                self.refreshed.fetch_add(1, Ordering::Relaxed);
            }
            Event::AuthFailed { method, code } => {
                let kind = match method {
                    AuthMethod::Resume => "resume",
                    _ => "auth",
                };
                self.count_failure(kind, *code);
            }
            Event::RefreshFailed { code } => self.count_failure("refresh", *code),
            Event::Closed { code, error, .. } => {
                self.closed.fetch_add(1, Ordering::Relaxed);
                let key = (
                    code.map_or(0, |c| c.0),
                    error.map_or("-", ErrorCode::as_str),
                );
                let mut closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
                *closes.entry(key).or_default() += 1;
            }
            Event::ExpiringSent | Event::RateLimited => {}
        }
    }

    /// Closes by close code (0: no close frame) and error code (`-`: none).
    pub fn closes(&self) -> BTreeMap<(u16, &'static str), u64> {
        self.closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Failures by kind (`upgrade`, `auth`, `resume`, `refresh`) and code.
    pub fn failures(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
