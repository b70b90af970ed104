//! std's (and tokio's) synchronisation types, or loom's under `--cfg loom`, so that
//! the store's and the hub's concurrency can be model-checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks, recovering from a poisoned lock: every update either completes or panics
/// before it changes anything, so the state behind a poisoned lock is whole.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A wake-up for one waiter. Both sides keep a permit when no one waits yet, so a
/// wake sent between a waiter's check and its wait is not lost; both may also wake
/// with nothing to show for it, so waiters check again in a loop.
#[derive(Default)]
pub(crate) struct Wake(
    #[cfg(not(loom))] tokio::sync::Notify,
    #[cfg(loom)] loom::sync::Notify,
);

impl Wake {
    pub(crate) fn wake(&self) {
        #[cfg(not(loom))]
        self.0.notify_one();
        #[cfg(loom)]
        self.0.notify();
    }

    /// Waits for a wake (async: tokio's runtime).
    #[cfg(not(loom))]
    pub(crate) async fn wait(&self) {
        self.0.notified().await;
    }

    /// Waits for a wake (blocking: loom has no async runtime to model here).
    #[cfg(loom)]
    pub(crate) fn wait(&self) {
        self.0.wait();
    }
}
