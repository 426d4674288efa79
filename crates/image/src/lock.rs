//! `flock(2)` locks on files in the store: released by the kernel when the
//! process dies, so a crash never leaves the store locked.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{IoContext, Result};

/// A held lock; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl FileLock {
    /// Block until the lock is held.
    pub fn acquire(path: &Path, kind: LockKind) -> Result<Self> {
        Self::lock(path, kind, true)?
            .ok_or_else(|| crate::Error::Store(path.to_owned(), "lock unexpectedly busy".into()))
    }

    /// Take the lock only if nobody holds a conflicting one.
    pub fn try_acquire(path: &Path, kind: LockKind) -> Result<Option<Self>> {
        Self::lock(path, kind, false)
    }

    fn lock(path: &Path, kind: LockKind, block: bool) -> Result<Option<Self>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .ctx(|| format!("open lock file {}", path.display()))?;
        let mut op = match kind {
            LockKind::Shared => libc::LOCK_SH,
            LockKind::Exclusive => libc::LOCK_EX,
        };
        if !block {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a file descriptor we own for the duration of the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Some(Self { _file: file }));
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !block => return Ok(None),
                _ => return Err(err).ctx(|| format!("flock {}", path.display())),
            }
        }
    }
}
