//! Files skiff keeps on the host, written one way everywhere:
//! - private: directories 0700 (an existing one narrowed when opened, so older installs
//!   are fixed), files 0600 from the moment they exist — a container's spec holds its
//!   environment (passwords), its disk and console its data;
//! - atomic: a file is replaced by writing a 0600 temp file beside it, fsyncing it,
//!   renaming it over the target and fsyncing the directory, so readers (and a restart
//!   after `kill -9`) see the old content or the new, never a mix;
//! - FIFOs: created 0600 like the files;
//! - locked: `flock(2)` locks, released by the kernel when the process dies, so a
//!   crash never leaves anything locked.
//!
//! Errors are the system's; callers add which file and what for.

use std::ffi::CString;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents 0700; an existing `path` is narrowed to
/// 0700 (parents that already exist are left as they are).
pub fn private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    narrow(path, DIR_MODE)
}

/// A new directory `<parent>/<prefix>XXXXXX`, 0700 (tempfile's default follows the
/// umask), removed when dropped.
pub fn private_temp_dir(parent: &Path, prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(Permissions::from_mode(DIR_MODE))
        .tempdir_in(parent)
}

/// Creates (or truncates) `path` for writing, 0600.
pub fn create_private(path: &Path) -> io::Result<File> {
    open_private(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
}

/// Opens `path` for appending, creating it 0600; an existing file is narrowed.
pub fn append_private(path: &Path) -> io::Result<File> {
    open_private(path, OpenOptions::new().append(true).create(true))
}

/// Opens `path` read-write, creating it 0600; an existing file is narrowed.
pub fn read_write_private(path: &Path) -> io::Result<File> {
    open_private(
        path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
}

/// Replaces `path` with `bytes` atomically and durably (0600 temp file beside it,
/// fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp")
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())?;
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(dir)
}

/// Creates a FIFO (named pipe) at `path`, 0600 (less if the umask says so); an
/// existing file there is an error (`AlreadyExists`).
pub fn private_fifo(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: c is a valid NUL-terminated path; mkfifo only reads it.
    if unsafe { libc::mkfifo(c.as_ptr(), FILE_MODE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let f = options.mode(FILE_MODE).open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(f)
}

fn narrow(path: &Path, mode: u32) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// A held `flock(2)` lock on a (0600) lock file; dropping it, or the process dying,
/// releases it.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl FileLock {
    /// Blocks until the lock is held.
    pub fn acquire(path: &Path, kind: LockKind) -> io::Result<Self> {
        Self::lock(path, kind, true)?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }

    /// Takes the lock only if nobody holds a conflicting one.
    pub fn try_acquire(path: &Path, kind: LockKind) -> io::Result<Option<Self>> {
        Self::lock(path, kind, false)
    }

    fn lock(path: &Path, kind: LockKind, block: bool) -> io::Result<Option<Self>> {
        let file = read_write_private(path)?;
        let mut op = match kind {
            LockKind::Shared => libc::LOCK_SH,
            LockKind::Exclusive => libc::LOCK_EX,
        };
        if !block {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a descriptor we own for the duration of the call.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(Self { _file: file }));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !block => return Ok(None),
                _ => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_are_created_and_narrowed_to_0700() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        private_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(&d.path().join("a")), 0o700);
        let old = d.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, Permissions::from_mode(0o755)).unwrap();
        private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        let t = private_temp_dir(d.path(), "vm-").unwrap();
        assert_eq!(mode(t.path()), 0o700);
    }

    #[test]
    fn files_are_0600_new_or_old_and_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("spec.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(mode(&p), 0o600);
        write_atomic(&p, b"[]").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"[]");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "temp file left");
        let log = d.path().join("log.json");
        fs::write(&log, b"old\n").unwrap();
        fs::set_permissions(&log, Permissions::from_mode(0o644)).unwrap();
        append_private(&log).unwrap().write_all(b"new\n").unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(fs::read(&log).unwrap(), b"old\nnew\n");
        for (p, open) in [
            ("rw.img", create_private as fn(&Path) -> io::Result<File>),
            ("x.lock", read_write_private),
        ] {
            open(&d.path().join(p)).unwrap();
            assert_eq!(mode(&d.path().join(p)), 0o600, "{p}");
        }
        assert!(create_private(&d.path().join("missing/x")).is_err());
    }

    #[test]
    fn fifos_are_0600_and_new() {
        use std::os::unix::fs::FileTypeExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.fifo");
        private_fifo(&p).unwrap();
        assert!(fs::metadata(&p).unwrap().file_type().is_fifo());
        assert_eq!(mode(&p) & 0o077, 0);
        let again = private_fifo(&p).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn locks_exclude_each_other_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = FileLock::acquire(&p, LockKind::Exclusive).unwrap();
        assert!(FileLock::try_acquire(&p, LockKind::Shared)
            .unwrap()
            .is_none());
        drop(held);
        let a = FileLock::try_acquire(&p, LockKind::Shared).unwrap();
        let b = FileLock::try_acquire(&p, LockKind::Shared).unwrap();
        assert!(a.is_some() && b.is_some());
        assert_eq!(mode(&p), 0o600);
    }
}
