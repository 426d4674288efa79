//! Small filesystem helpers for crash consistency: write to a temp file in the
//! same directory, fsync, rename over the target, fsync the directory.

use std::fs::{self, File};
use std::path::Path;

use crate::error::{IoContext, Result};

pub fn fsync_dir(dir: &Path) -> Result<()> {
    skiff_sys::files::fsync_dir(dir).ctx(|| format!("fsync {}", dir.display()))
}

/// Start writing `len` bytes at `offset` of `f` back to disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the fsync before publishing
/// finds little left to do: writeback overlaps the download and conversion
/// instead of following them. Advisory: errors are ignored (the fsync
/// still reports real ones).
pub fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open descriptor; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Bytes written between `start_writeback` calls.
pub const WRITEBACK_STEP: u64 = 8 << 20;

/// Replace `path` with `bytes` atomically: readers see the old or the new file (0600,
/// fsynced, the directory too).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    skiff_sys::files::write_atomic(path, bytes).ctx(|| format!("write {}", path.display()))
}

/// Creates `path` and its missing parents 0700, and narrows an existing `path` to
/// 0700: the store holds images committed from containers, which may hold secrets.
pub fn create_private_dir(path: &Path) -> Result<()> {
    skiff_sys::files::private_dir(path).ctx(|| format!("create {}", path.display()))
}

/// Bytes a file really occupies on disk (sparse files count less).
pub fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// Remove a file or tree; a missing path is not an error.
pub fn remove_any(path: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.ctx(|| format!("remove {}", path.display()))
}

pub use skiff_sys::time::{now_unix, parse_rfc3339, rfc3339};

/// "3 days ago" as Docker prints CREATED.
pub fn human_ago(then: u64, now: u64) -> String {
    let s = now.saturating_sub(then);
    let (n, unit) = match s {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=1_209_599 => (s / 86_400, "day"),
        1_209_600..=5_183_999 => (s / 604_800, "week"),
        5_184_000..=63_071_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// "1.2MB" as Docker prints sizes (decimal units).
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + units[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(1_000_000), "1MB");
    }
}
