//! The connection's timers, quinn-style: a field-less [`Timer`] indexes a small
//! table of deadlines, and [`Connection::run_timers`] fires the due ones in order.

use super::phase::Phase;
use super::{Connection, Output};
use crate::error::ErrorCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// Authentication must complete before it.
    Auth,
    /// Nothing received since `idle_timeout_ms`.
    Idle,
    /// Time for the next ping.
    Heartbeat,
    /// Time for the `expiring` notice.
    Expiring,
    /// The token's `exp` plus leeway.
    Expiry,
    /// The earliest deadline of the application calls in flight (each call's own
    /// deadline is kept with it in the live phase).
    CallDeadline,
}

const TIMER_COUNT: usize = 6;
const TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Auth,
    Timer::Idle,
    Timer::Heartbeat,
    Timer::Expiring,
    Timer::Expiry,
    Timer::CallDeadline,
];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TimerTable([Option<u64>; TIMER_COUNT]);

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: u64) {
        self.0[timer as usize] = Some(at);
    }
    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }
    pub(super) fn get(&self, timer: Timer) -> Option<u64> {
        self.0[timer as usize]
    }
    pub(super) fn next(&self) -> Option<u64> {
        self.0.iter().flatten().copied().min()
    }
    /// The earliest timer due at `now`, if any.
    fn due(&self, now: u64) -> Option<Timer> {
        TIMERS
            .iter()
            .copied()
            .filter(|t| self.get(*t).is_some_and(|at| at <= now))
            .min_by_key(|t| self.get(*t))
    }
}

impl Connection {
    /// Runs the timers due at `now`, earliest first, until none is due or the
    /// connection is closed.
    pub(super) fn run_timers(&mut self, now: u64) {
        loop {
            let Some(open) = self.phase.open_mut() else {
                return;
            };
            let Some(timer) = open.timers.due(now) else {
                return;
            };
            open.timers.stop(timer);
            match timer {
                Timer::Auth => {
                    if let Phase::AwaitingAuth(_) = self.phase {
                        self.fail(None, ErrorCode::AuthTimeout);
                    }
                }
                Timer::Idle => self.fail(None, ErrorCode::IdleTimeout),
                Timer::Heartbeat => {
                    self.outputs.push(Output::Ping);
                    let at = now.saturating_add(self.config.heartbeat_ms);
                    open.timers.set(Timer::Heartbeat, at);
                }
                Timer::Expiring => self.send_expiring(now),
                Timer::Expiry => self.fail(None, ErrorCode::SessionExpired),
                Timer::CallDeadline => self.calls_past_deadline(now),
            }
        }
    }
}
