//! `flock(2)` locks on files in the store (`skiff_sys::files::FileLock`): released by
//! the kernel when the process dies, so a crash never leaves the store locked.

use std::path::Path;

use skiff_sys::files;
pub use skiff_sys::files::LockKind;

use crate::error::{IoContext, Result};

/// A held lock; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct FileLock {
    _lock: files::FileLock,
}

impl FileLock {
    /// Block until the lock is held.
    pub fn acquire(path: &Path, kind: LockKind) -> Result<Self> {
        let lock =
            files::FileLock::acquire(path, kind).ctx(|| format!("lock {}", path.display()))?;
        Ok(Self { _lock: lock })
    }

    /// Take the lock only if nobody holds a conflicting one.
    pub fn try_acquire(path: &Path, kind: LockKind) -> Result<Option<Self>> {
        let lock =
            files::FileLock::try_acquire(path, kind).ctx(|| format!("lock {}", path.display()))?;
        Ok(lock.map(|l| Self { _lock: l }))
    }
}
