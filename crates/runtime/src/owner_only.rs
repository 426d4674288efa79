//! Files and directories only their owner may read: a container's spec (its
//! environment holds passwords), state, logs, writable disk, console and snapshot
//! memory. The runtime's typed-error face of `skiff_sys::files` (0700 directories,
//! narrowed when opened; 0600 files from the moment they exist; atomic replacement).

use std::fs::File;
use std::path::Path;

use skiff_sys::files;

use crate::{Error, Result};

pub use files::{DIR_MODE, FILE_MODE};

/// Creates `path` and any missing parents 0700; an existing `path` is narrowed to
/// 0700 (parents that already exist are left as they are).
pub fn dir(path: &Path) -> Result<()> {
    files::private_dir(path).map_err(Error::io(format!("create {}", path.display())))
}

/// A new directory `<parent>/<prefix>XXXXXX`, 0700, removed when dropped.
pub fn temp_dir(parent: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    files::private_temp_dir(parent, prefix).map_err(Error::io(format!(
        "create a directory in {}",
        parent.display()
    )))
}

/// Creates (or truncates) `path` for writing, 0600.
pub fn create(path: &Path) -> Result<File> {
    files::create_private(path).map_err(Error::io(format!("open {}", path.display())))
}

/// Opens `path` for appending, creating it 0600; an existing file is narrowed.
pub fn append(path: &Path) -> Result<File> {
    files::append_private(path).map_err(Error::io(format!("open {}", path.display())))
}

/// Opens `path` read-write, creating it 0600; an existing file is narrowed.
pub fn read_write(path: &Path) -> Result<File> {
    files::read_write_private(path).map_err(Error::io(format!("open {}", path.display())))
}

/// Replaces `path` with `bytes` atomically: readers see the old content or the new.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    files::write_atomic(path, bytes).map_err(Error::io(format!("write {}", path.display())))
}

/// Blocks until the exclusive `flock` on `path` (a 0600 lock file) is ours.
pub fn lock(path: &Path) -> Result<files::FileLock> {
    files::FileLock::acquire(path, files::LockKind::Exclusive)
        .map_err(Error::io(format!("lock {}", path.display())))
}

/// Caps what a record file may be (they are small; anything bigger is corrupt).
const MAX_RECORD: u64 = 1 << 20;

/// Reads a JSON record (a container's spec or state, a network) of at most 1 MiB.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    use std::io::Read;
    let f = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!("No such container record: {}", path.display()))
        } else {
            Error::io(format!("open {}", path.display()))(e)
        }
    })?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD)
        .read_to_end(&mut bytes)
        .map_err(Error::io(format!("read {}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Config(format!("{}: corrupt record: {e}", path.display())))
}

/// Replaces `path` with `value` as JSON, atomically and readable only by its owner.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Config(format!("serialise {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}
