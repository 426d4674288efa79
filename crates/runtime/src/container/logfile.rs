//! The container's stdout and stderr, kept on the host as JSON lines
//! (`{"stream":"stdout","time":"...","log":"..."}`, as Docker's json-file driver), in
//! `log.json` plus one rotated `log.json.1`, so a chatty container uses bounded disk.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::rotating::{rotated, RotatingFile};
use crate::{Error, Result};
use skiff_sys::time::{now_ns, rfc3339_ns};

/// Size at which `log.json` is rotated (so at most twice this on disk).
pub const MAX_LOG_BYTES: u64 = 8 << 20;
/// A line longer than this is written in pieces (as Docker's 16 KiB partial lines).
const MAX_LINE: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub stream: LogStream,
    pub time: String,
    pub log: String,
}

pub struct LogWriter {
    file: RotatingFile,
    /// Bytes of an unfinished line per stream.
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: RotatingFile::open(path, MAX_LOG_BYTES)?,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Appends output; complete lines are written at once, a partial line when it
    /// grows long or at [`LogWriter::flush`].
    pub fn write(&mut self, stream: LogStream, bytes: &[u8]) {
        let i = stream as usize;
        let mut buf = std::mem::take(&mut self.partial[i]);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            self.entry(stream, &buf[start..end]);
            start = end;
        }
        while buf.len() - start >= MAX_LINE {
            self.entry(stream, &buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.partial[i] = buf.split_off(start);
    }

    pub fn flush(&mut self) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.entry(stream, &rest);
            }
        }
    }

    fn entry(&mut self, stream: LogStream, bytes: &[u8]) {
        let entry = LogEntry {
            stream,
            time: rfc3339_ns(now_ns()),
            log: String::from_utf8_lossy(bytes).into_owned(),
        };
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        line.push(b'\n');
        // A full disk must not stop the container: the log just loses lines.
        self.file.write_record(&line);
    }
}

/// All entries, oldest first, and the byte offset reached in the current file (to
/// continue from with `follow`).
pub fn read_log(path: &Path) -> Result<(Vec<LogEntry>, u64)> {
    let mut out = Vec::new();
    read_from(&rotated(path), 0, &mut out)?;
    let offset = read_from(path, 0, &mut out)?;
    Ok((out, offset))
}

/// Entries from `offset` on; returns the new offset. A missing file reads as empty.
pub fn read_from(path: &Path, offset: u64, out: &mut Vec<LogEntry>) -> Result<u64> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("open {}", path.display()))(e)),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // Rotated under us: start over in the new file.
    let offset = if offset > len { 0 } else { offset };
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))
        .map_err(Error::io(format!("seek {}", path.display())))?;
    let mut reader = BufReader::new(f);
    let mut pos = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(Error::io(format!("read {}", path.display())))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // a line still being written is read next time
        }
        pos += n as u64;
        if let Ok(e) = serde_json::from_slice::<LogEntry>(&line) {
            out.push(e);
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn lines_are_split_and_partials_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut w = LogWriter::open(&p).unwrap();
        w.write(LogStream::Stdout, b"a\nb");
        w.write(LogStream::Stderr, b"err\n");
        w.write(LogStream::Stdout, b"c\n");
        w.write(LogStream::Stdout, b"tail");
        w.flush();
        let (entries, off) = read_log(&p).unwrap();
        let logs: Vec<(LogStream, &str)> =
            entries.iter().map(|e| (e.stream, e.log.as_str())).collect();
        assert_eq!(
            logs,
            [
                (LogStream::Stdout, "a\n"),
                (LogStream::Stderr, "err\n"),
                (LogStream::Stdout, "bc\n"),
                (LogStream::Stdout, "tail")
            ]
        );
        assert_eq!(off, fs::metadata(&p).unwrap().len());
    }

    #[test]
    fn the_log_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut w = LogWriter::open(&p).unwrap();
        let line = vec![b'x'; 1000];
        for _ in 0..(3 * MAX_LOG_BYTES / 1000) {
            w.write(LogStream::Stdout, &line);
            w.write(LogStream::Stdout, b"\n");
        }
        let total = fs::metadata(&p).unwrap().len() + fs::metadata(rotated(&p)).unwrap().len();
        assert!(total <= 2 * MAX_LOG_BYTES, "{total}");
        let (entries, _) = read_log(&p).unwrap();
        assert!(!entries.is_empty());
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        fs::write(
            &p,
            b"not json\n{\"stream\":\"stdout\",\"time\":\"t\",\"log\":\"ok\\n\"}\npartial",
        )
        .unwrap();
        let (entries, _) = read_log(&p).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].log, "ok\n");
    }
}
