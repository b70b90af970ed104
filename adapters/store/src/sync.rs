//! std's `Mutex`, or loom's under `--cfg loom`, so that the store's concurrency can
//! be model-checked.

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks, recovering from a poisoned lock: every update either completes or panics
/// before it changes anything, so the state behind a poisoned lock is whole.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
