//! A log file on the host that stays bounded whatever is written to it: once it holds
//! its cap it becomes `<name>.1` (replacing the older one) and a new file starts, so
//! the two never hold more than twice the cap. Writes never fail: a full disk loses
//! bytes, it does not stop the writer.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{owner_only, Result};

pub(crate) struct RotatingFile {
    path: PathBuf,
    /// None while the file could not be (re)opened: bytes are dropped.
    file: Option<File>,
    /// Bytes in the current file, counting those whose write failed.
    size: u64,
    cap: u64,
}

impl RotatingFile {
    /// Opens `path` (0600) to append to what it holds.
    pub(crate) fn open(path: &Path, cap: u64) -> Result<Self> {
        let file = owner_only::append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            cap,
        })
    }

    /// Writes a record whole, in a fresh file if it does not fit in this one.
    pub(crate) fn write_record(&mut self, record: &[u8]) {
        if self.size > 0 && self.size + record.len() as u64 > self.cap {
            self.rotate();
        }
        self.append(record);
    }

    /// Writes a byte stream, split across files where the cap falls.
    pub(crate) fn write_stream(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.size >= self.cap {
                self.rotate();
            }
            let room = usize::try_from(self.cap - self.size).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.append(now);
            bytes = rest;
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if let Some(f) = &mut self.file {
            let _ = f.write_all(bytes);
        }
        self.size += bytes.len() as u64;
    }

    fn rotate(&mut self) {
        self.file = None;
        let renamed = std::fs::rename(&self.path, rotated(&self.path)).is_ok();
        self.file = owner_only::append(&self.path).ok();
        if !renamed {
            // Start over in place rather than grow past the cap.
            if let Some(f) = &self.file {
                let _ = f.set_len(0);
            }
        }
        self.size = 0;
    }
}

/// Where `path` goes when it is rotated: `<path>.1`.
pub(crate) fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(p: &Path) -> u64 {
        std::fs::metadata(p).map_or(0, |m| m.len())
    }

    #[test]
    fn a_stream_keeps_the_cap_and_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut f = RotatingFile::open(&p, 1000).unwrap();
        for i in 0..100u8 {
            f.write_stream(&[i; 333]);
        }
        assert_eq!(len(&rotated(&p)), 1000, "rotated exactly at the cap");
        assert!(len(&p) <= 1000);
        let newest = std::fs::read(&p).unwrap();
        assert_eq!(newest.last(), Some(&99));
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "one current file and one rotated");
    }

    #[test]
    fn records_are_never_split() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut f = RotatingFile::open(&p, 10).unwrap();
        f.write_record(b"aaaa\n");
        f.write_record(b"bbbb\n");
        f.write_record(b"cccc\n");
        assert_eq!(std::fs::read(rotated(&p)).unwrap(), b"aaaa\nbbbb\n");
        assert_eq!(std::fs::read(&p).unwrap(), b"cccc\n");
    }
}
