//! Locking that survives a panicked holder: the daemon's mutexes guard plain
//! bookkeeping (pools, snapshot slots) that stays usable after a handler panics, so a
//! poisoned lock is taken as it is rather than failing every later request.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
