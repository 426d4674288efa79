//! The guest's serial console on the host. The VMM writes it into a FIFO in the VM's
//! scratch directory (a path, so it still works once the VMM is jailed in there), and
//! a thread of the process that owns the VM drains it into `console.log`, rotated at
//! [`CONSOLE_CAP`]: a guest flooding its serial port neither fills the host's disk nor
//! stalls on a full pipe.

use std::fs::{File, OpenOptions};
use std::io::{PipeWriter, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use skiff_sys::{fds, files};

use crate::rotating::{rotated, RotatingFile};
use crate::{Error, Result};

/// The FIFO the VMM writes the console into, in the VM's scratch directory.
pub const CONSOLE_FIFO: &str = "console.fifo";
/// The console as kept on the host (and `console.log.1` before it).
pub const CONSOLE_LOG: &str = "console.log";
/// `console.log`'s size at rotation: the console never holds more than twice this.
pub const CONSOLE_CAP: u64 = 1 << 20;
/// How far from the end of each file [`tail`] reads.
const TAIL_BYTES: u64 = 64 << 10;
/// Reads per turn, so a flood cannot keep the thread from its stop signal.
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 64 << 10;

/// A VM's console: the FIFO, its log and the thread between them. Dropping it stops
/// the thread and closes the FIFO.
pub struct ConsoleLog {
    fifo: PathBuf,
    log: PathBuf,
    drain: Arc<Mutex<Drain>>,
    /// Closing it wakes the thread to stop.
    stop: Option<PipeWriter>,
    thread: Option<JoinHandle<()>>,
}

/// The FIFO's read end and where its bytes go; shared so that [`ConsoleLog::tail`]
/// first takes what the VMM wrote and the thread has not yet moved.
struct Drain {
    fifo: File,
    log: RotatingFile,
}

impl ConsoleLog {
    /// Creates the FIFO and the log (0600) in `dir` and starts draining.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_with_cap(dir, CONSOLE_CAP)
    }

    fn start_with_cap(dir: &Path, cap: u64) -> Result<Self> {
        let fifo = dir.join(CONSOLE_FIFO);
        let log = dir.join(CONSOLE_LOG);
        make_fifo(&fifo)?;
        // Non-blocking: the open does not wait for a writer and reads never block, so
        // the thread only ever waits in poll, where the stop signal reaches it.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .map_err(Error::io(format!("open {}", fifo.display())))?;
        // The thread polls a duplicate (the same open FIFO), so it needs no lock to wait.
        let fifo_fd = reader
            .try_clone()
            .map_err(Error::io(format!("open {}", fifo.display())))?;
        let drain = Arc::new(Mutex::new(Drain {
            fifo: reader,
            log: RotatingFile::open(&log, cap)?,
        }));
        let (stop_rx, stop) = std::io::pipe().map_err(Error::io("console stop pipe"))?;
        let shared = Arc::clone(&drain);
        let thread = std::thread::Builder::new()
            .name("console-log".into())
            .spawn(move || run(&shared, fifo_fd.as_fd(), stop_rx.as_fd()))
            .map_err(Error::io("start the console thread"))?;
        Ok(Self {
            fifo,
            log,
            drain,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where the VMM writes the console.
    pub fn fifo(&self) -> &Path {
        &self.fifo
    }

    /// The last `n` non-empty lines of the console, including everything the VMM
    /// wrote before this call.
    pub fn tail(&self, n: usize) -> Vec<String> {
        if let Ok(mut d) = self.drain.lock() {
            let mut buf = vec![0u8; READ_CHUNK];
            d.pump(&mut buf);
        }
        tail(&self.log, n)
    }

    /// Stops the thread (at once: it does not drain what is left) and waits for it.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ConsoleLog {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drain {
    /// Moves what the FIFO holds into the log (at most [`READS_PER_TURN`] reads);
    /// false once no writer is left (or never came, which the caller tells apart).
    fn pump(&mut self, buf: &mut [u8]) -> bool {
        for _ in 0..READS_PER_TURN {
            match self.fifo.read(buf) {
                Ok(0) => return false,
                Ok(n) => self.log.write_stream(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// The console thread: waits for console bytes or the stop signal. It ends when the
/// VMM's side closes (poll reports the FIFO only once a writer came: Linux raises no
/// hangup for a FIFO whose writer never opened it) or when the stop pipe closes.
fn run(drain: &Mutex<Drain>, fifo_fd: BorrowedFd<'_>, stop_fd: BorrowedFd<'_>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let ready = match fds::poll_readable(&[fifo_fd, stop_fd], None) {
            Ok(ready) => ready,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if ready[1] {
            return;
        }
        if ready[0] {
            let open = drain.lock().is_ok_and(|mut d| d.pump(&mut buf));
            if !open {
                return;
            }
        }
    }
}

fn make_fifo(path: &Path) -> Result<()> {
    files::private_fifo(path).map_err(Error::io(format!("mkfifo {}", path.display())))
}

/// The last `n` non-empty lines of the log at `path`, read from its end (and from the
/// rotated file before it when that is not enough).
pub(crate) fn tail(path: &Path, n: usize) -> Vec<String> {
    let (mut lines, whole) = last_lines(path, n);
    // Lines from the rotated file follow on only if none were skipped in between.
    if lines.len() < n && whole {
        let (mut older, _) = last_lines(&rotated(path), n - lines.len());
        older.append(&mut lines);
        lines = older;
    }
    lines
}

/// The last `n` non-empty lines within [`TAIL_BYTES`] of the end of `path`, and
/// whether that window was the whole file.
fn last_lines(path: &Path, n: usize) -> (Vec<String>, bool) {
    let Ok(mut f) = File::open(path) else {
        return (Vec::new(), true);
    };
    let start = f
        .metadata()
        .map_or(0, |m| m.len())
        .saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err()
        || f.take(TAIL_BYTES).read_to_end(&mut bytes).is_err()
    {
        return (Vec::new(), false);
    }
    let mut text = bytes.as_slice();
    // Past the start, the window begins mid-line: skip to the next whole one.
    if start > 0 {
        if let Some(i) = text.iter().position(|&b| b == b'\n') {
            text = &text[i + 1..];
        }
    }
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let last = lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    (last, start == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on another thread and fails if it takes longer than a generous bound
    /// (a hang is the bug these tests look for).
    fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{what} did not finish"))
    }

    fn writer(fifo: &Path) -> File {
        OpenOptions::new().write(true).open(fifo).unwrap()
    }

    /// No reader is left on the FIFO: a non-blocking writer's open fails with ENXIO.
    fn no_reader(fifo: &Path) -> bool {
        let e = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .unwrap_err();
        e.raw_os_error() == Some(libc::ENXIO)
    }

    fn len(p: &Path) -> u64 {
        std::fs::metadata(p).map_or(0, |m| m.len())
    }

    #[test]
    fn a_flood_is_drained_and_kept_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let console = ConsoleLog::start_with_cap(dir.path(), 64 << 10).unwrap();
        let fifo = console.fifo().to_path_buf();
        // Blocking writes of far more than a pipe holds: they finish only if drained.
        finishes("a 16 MiB flood", move || {
            let mut w = writer(&fifo);
            let line = [b"flood\n".as_slice(); 1024].concat();
            for _ in 0..(16 << 20) / line.len() {
                w.write_all(&line).unwrap();
            }
            w.write_all(b"last words\n").unwrap();
        });
        assert_eq!(console.tail(1), ["last words"]);
        let log = dir.path().join(CONSOLE_LOG);
        assert!(len(&log) <= 64 << 10);
        assert_eq!(len(&rotated(&log)), 64 << 10);
        use std::os::unix::fs::PermissionsExt;
        for p in [&log, &rotated(&log), &dir.path().join(CONSOLE_FIFO)] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn the_thread_ends_when_the_vmm_side_closes() {
        let dir = tempfile::tempdir().unwrap();
        let mut console = ConsoleLog::start(dir.path()).unwrap();
        let mut w = writer(console.fifo());
        w.write_all(b"booting\nready\n").unwrap();
        drop(w);
        let thread = console.thread.take().unwrap();
        finishes("the console thread", move || thread.join().unwrap());
        assert_eq!(console.tail(5), ["booting", "ready"]);
        let fifo = console.fifo().to_path_buf();
        drop(console);
        assert!(no_reader(&fifo));
    }

    #[test]
    fn dropping_stops_the_thread_even_with_no_writer_or_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let console = ConsoleLog::start(dir.path()).unwrap();
        let fifo = console.fifo().to_path_buf();
        finishes("dropping an idle console", move || drop(console));
        assert!(no_reader(&fifo));

        let dir = tempfile::tempdir().unwrap();
        let console = ConsoleLog::start(dir.path()).unwrap();
        let fifo = console.fifo().to_path_buf();
        let w = writer(&fifo);
        finishes("dropping a console whose writer lives", move || {
            drop(console)
        });
        assert!(no_reader(&fifo));
        drop(w);
    }

    #[test]
    fn tail_reads_from_the_end_and_into_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, "a\r\n\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), ["b", "c"]);
        assert_eq!(tail(&p, 10), ["a", "b", "c"]);
        assert!(tail(&dir.path().join("none"), 3).is_empty());

        std::fs::write(rotated(&p), "old1\nold2\n").unwrap();
        assert_eq!(tail(&p, 4), ["old2", "a", "b", "c"]);

        // A big file: only its end is read, and the cut line is not shown.
        let mut big = "x".repeat(3 * TAIL_BYTES as usize);
        big.push_str("\nfirst whole\nlast\n");
        std::fs::write(&p, &big).unwrap();
        assert_eq!(tail(&p, 2), ["first whole", "last"]);
        assert_eq!(
            tail(&p, 3),
            ["first whole", "last"],
            "no partial, no older file: the window is full"
        );
    }
}
