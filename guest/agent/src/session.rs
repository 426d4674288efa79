//! One host connection: the hello exchange, then requests (create, start, signal,
//! resize, stop) and stdin data in; stdout/stderr data, exit statuses and errors out.
//! A protocol violation gets an error message and ends the connection; the processes
//! it started keep running.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use skiff_proto::{
    read_frame, write_frame, DataKind, ExitStatus, Frame, Message, ProcessSpec, PROTOCOL_VERSION,
};

use crate::process::{self, PidNs, SpawnError, Spawned};
use crate::{container, log};

/// A connection to the host: a vsock stream or the virtio-serial port.
pub trait Conn: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> std::io::Result<Self>;
    /// Ends the connection so a thread blocked reading it wakes up (where possible).
    fn shutdown(&self);
}

/// The connection's writing half, type-erased so one `Writer` type serves both.
type Sink = Box<dyn Write + Send>;

/// How long stdout/stderr may keep flowing after a process exits (a background child
/// may hold the pipe open) before the exit is reported anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// How long to wait for the host to hang up after `PoweringOff`.
const HOST_HANGUP_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Writer(Arc<Mutex<Option<Sink>>>);

impl Writer {
    /// Sends a frame; after the first failure the connection is considered gone and
    /// further frames are dropped (processes keep running, their output is discarded).
    fn send(&self, frame: &Frame) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stream) = guard.as_mut() else {
            return false;
        };
        if let Err(e) = write_frame(stream, frame) {
            log!("send to host failed: {e}");
            *guard = None;
            return false;
        }
        true
    }

    fn control(&self, msg: Message) -> bool {
        self.send(&Frame::Control(msg))
    }
}

struct ProcEntry {
    pid: i32,
    stdin: Option<Sender<Vec<u8>>>,
    pty: Option<File>,
}

/// Set when the host side of the connection has gone away.
#[derive(Default)]
struct Hangup {
    gone: Mutex<bool>,
    cv: Condvar,
}

impl Hangup {
    fn set(&self) {
        *self.gone.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let guard = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.cv.wait_timeout_while(guard, timeout, |gone| !*gone);
    }
}

struct Session {
    writer: Writer,
    procs: Arc<Mutex<HashMap<u32, ProcEntry>>>,
    hangup: Arc<Hangup>,
}

/// Bytes per data frame of a generated stream (well under the frame limit).
const STREAM_CHUNK: usize = 64 << 10;

/// `Write` into `Stdout` data frames of one stream.
struct StreamSink {
    writer: Writer,
    stream: u32,
    buf: Vec<u8>,
}

impl Write for StreamSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(STREAM_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == STREAM_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_CHUNK));
        let frame = Frame::Data {
            kind: DataKind::Stdout,
            stream: self.stream,
            bytes,
        };
        if self.writer.send(&frame) {
            Ok(())
        } else {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }
}

pub fn serve<C: Conn>(conn: C) {
    let writer = match conn.try_clone() {
        Ok(w) => Writer(Arc::new(Mutex::new(Some(Box::new(w) as Sink)))),
        Err(e) => return log!("session: {e}"),
    };
    let session = Session {
        writer,
        procs: Arc::default(),
        hangup: Arc::default(),
    };
    let mut reader = conn;
    if let Err(msg) = session.run(&mut reader) {
        log!("session: {msg}");
        session.writer.control(Message::Error {
            stream: None,
            message: msg,
        });
    }
    reader.shutdown();
    // Nothing of this session may reach a later host connection (a serial port's).
    *session.writer.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    session.hangup.set();
}

impl Session {
    fn run(&self, conn: &mut impl Read) -> Result<(), String> {
        self.writer.control(Message::Hello {
            version: PROTOCOL_VERSION,
            uptime_ms: Some(crate::sys::uptime_ms()),
        });
        match read_frame(conn).map_err(|e| e.to_string())? {
            Some(Frame::Control(Message::Hello { version, .. })) if version == PROTOCOL_VERSION => {
            }
            Some(Frame::Control(Message::Hello { version, .. })) => {
                return Err(format!(
                    "protocol version {version} is not supported (agent speaks {PROTOCOL_VERSION})"
                ))
            }
            None => return Ok(()),
            Some(_) => return Err("expected hello".into()),
        }
        loop {
            match read_frame(conn).map_err(|e| e.to_string())? {
                None => return Ok(()),
                Some(Frame::Control(msg)) => self.handle(msg)?,
                Some(Frame::Data {
                    kind: DataKind::Stdin,
                    stream,
                    bytes,
                }) => self.stdin(stream, bytes),
                Some(Frame::Data { kind, .. }) => {
                    return Err(format!("unexpected {kind:?} data from the host"))
                }
            }
        }
    }

    fn handle(&self, msg: Message) -> Result<(), String> {
        match msg {
            Message::CreateContainer { config } => {
                let reply = match container::create(&config) {
                    Ok(()) => Message::ContainerCreated,
                    Err(e) => Message::Error {
                        stream: None,
                        message: format!("create container: {e}"),
                    },
                };
                self.writer.control(reply);
            }
            Message::Start {
                stream,
                main,
                process,
            } => self.start(stream, main, &process),
            Message::Signal { stream, signal } => {
                let pid = self.lock_procs().get(&stream).map(|p| p.pid);
                let result = match pid {
                    // SAFETY: plain kill(2); bad signal numbers come back as EINVAL.
                    Some(pid) if unsafe { libc::kill(pid, signal) } == 0 => Ok(()),
                    Some(_) => Err(format!(
                        "signal {signal}: {}",
                        std::io::Error::last_os_error()
                    )),
                    None => Err(format!("no running process on stream {stream}")),
                };
                if let Err(message) = result {
                    self.writer.control(Message::Error {
                        stream: Some(stream),
                        message,
                    });
                }
            }
            Message::Resize { stream, rows, cols } => {
                if let Some(Err(e)) = self
                    .lock_procs()
                    .get(&stream)
                    .and_then(|p| p.pty.as_ref())
                    .map(|pty| process::set_window_size(pty, rows, cols))
                {
                    log!("resize: {e}");
                }
            }
            Message::ListProcesses => {
                let reply = match container::pid_namespace().and_then(|ns| crate::ps::list(&ns)) {
                    Ok(processes) => Message::Processes { processes },
                    Err(e) => Message::Error {
                        stream: None,
                        message: format!("list processes: {e}"),
                    },
                };
                self.writer.control(reply);
            }
            Message::Reseed {
                entropy,
                realtime_ns,
            } => {
                let reply = match crate::identity::reseed(&entropy, realtime_ns) {
                    Ok(()) => Message::Reseeded,
                    Err(e) => Message::Error {
                        stream: None,
                        message: format!("reseed: {e}"),
                    },
                };
                self.writer.control(reply);
            }
            Message::ExportChanges { stream } => self.export_changes(stream),
            Message::Stop { signal, grace_ms } => {
                container::stop(signal, Duration::from_millis(grace_ms.min(3_600_000)));
            }
            other => return Err(format!("unexpected message from the host: {other:?}")),
        }
        Ok(())
    }

    /// Streams the writable layer's changes on a thread of its own, so the session
    /// keeps serving (and a host that stops reading stalls only this stream).
    fn export_changes(&self, stream: u32) {
        let writer = self.writer.clone();
        if stream == 0 || self.lock_procs().contains_key(&stream) {
            writer.control(Message::Error {
                stream: Some(stream),
                message: format!("stream {stream} is not free"),
            });
            return;
        }
        std::thread::spawn(move || {
            let mut out = StreamSink {
                writer: writer.clone(),
                stream,
                buf: Vec::with_capacity(STREAM_CHUNK),
            };
            let result = crate::changes::upper_dir()
                .and_then(|upper| crate::changes::write_layer(&upper, &mut out))
                .and_then(|()| out.flush());
            writer.control(match result {
                Ok(()) => Message::Exited {
                    stream,
                    status: ExitStatus::Exited(0),
                },
                Err(e) => Message::Error {
                    stream: Some(stream),
                    message: format!("export the writable layer: {e}"),
                },
            });
        });
    }

    fn lock_procs(&self) -> std::sync::MutexGuard<'_, HashMap<u32, ProcEntry>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stdin(&self, stream: u32, bytes: Vec<u8>) {
        let mut procs = self.lock_procs();
        let Some(entry) = procs.get_mut(&stream) else {
            return;
        };
        if bytes.is_empty() {
            entry.stdin = None; // dropping the sender closes the pipe
        } else if let Some(tx) = &entry.stdin {
            let _ = tx.send(bytes);
        }
    }

    fn start(&self, stream: u32, main: bool, spec: &ProcessSpec) {
        let fail = |message: String| {
            self.writer.control(Message::Error {
                stream: Some(stream),
                message,
            });
        };
        if stream == 0 || self.lock_procs().contains_key(&stream) {
            return fail(format!("stream {stream} is invalid or in use"));
        }
        let ns = match container::namespace() {
            Ok(ns) => ns,
            Err(e) => return fail(e.to_string()),
        };
        if main {
            if let Err(e) = container::claim_main() {
                return fail(e.to_string());
            }
        }
        let resolved;
        let spec = match (&spec.user_name, container::rootfs()) {
            (Some(name), Some(rootfs)) => {
                match crate::users::resolve(&rootfs, name, spec.user.umask) {
                    Ok(user) => {
                        resolved = ProcessSpec {
                            user,
                            ..spec.clone()
                        };
                        &resolved
                    }
                    Err(e) => {
                        // As an exec failure: the reason on stderr, status 126.
                        self.writer.send(&Frame::Data {
                            kind: DataKind::Stderr,
                            stream,
                            bytes: format!("skiff: {e}\n").into_bytes(),
                        });
                        self.writer.control(Message::Exited {
                            stream,
                            status: ExitStatus::Exited(126),
                        });
                        if main {
                            self.finish_container();
                        }
                        return;
                    }
                }
            }
            _ => spec,
        };
        let setup;
        let joined;
        let pid_ns = if main {
            setup = container::main_setup();
            PidNs::New(&setup)
        } else {
            joined = match container::exec_pid_namespace() {
                Ok(ns) => ns,
                Err(e) => return fail(e.to_string()),
            };
            match &joined {
                container::ExecNs::Vm => PidNs::Vm,
                container::ExecNs::Join(ns) => PidNs::Join(ns.as_raw_fd()),
                container::ExecNs::Fresh => PidNs::Fresh,
            }
        };
        let (spawned, new_pid_ns) = match process::spawn(spec, ns.as_raw_fd(), pid_ns) {
            Ok(s) => s,
            Err(SpawnError::Exec { message, code }) => {
                // As Docker: the reason on stderr, then 126/127 as the exit status.
                self.writer.send(&Frame::Data {
                    kind: DataKind::Stderr,
                    stream,
                    bytes: format!("skiff: {message}\n").into_bytes(),
                });
                self.writer.control(Message::Exited {
                    stream,
                    status: ExitStatus::Exited(code),
                });
                if main {
                    self.finish_container();
                }
                return;
            }
            Err(SpawnError::Setup(e)) => {
                if main {
                    // The slot stays claimed: a container whose process could not be
                    // set up is stopped, as Docker does.
                    self.writer.control(Message::Error {
                        stream: Some(stream),
                        message: format!("start: {e}"),
                    });
                    self.finish_container();
                    return;
                }
                return fail(format!("start: {e}"));
            }
        };
        if main {
            container::set_main_pid(spawned.pid, new_pid_ns);
        }
        self.writer.control(Message::Started {
            stream,
            pid: spawned.pid,
        });
        self.run_process(stream, main, spawned);
    }

    fn run_process(&self, stream: u32, main: bool, sp: Spawned) {
        let Spawned {
            pid,
            exit,
            stdin,
            stdout,
            stderr,
            pty,
        } = sp;
        let stdin_tx = stdin.map(|file| {
            let (tx, rx) = mpsc::channel::<Vec<u8>>();
            std::thread::spawn(move || pump_stdin(file, &rx));
            tx
        });
        self.lock_procs().insert(
            stream,
            ProcEntry {
                pid,
                stdin: stdin_tx,
                pty,
            },
        );

        let (done_tx, done_rx) = mpsc::channel();
        let mut relays = 1;
        spawn_relay(
            stdout,
            DataKind::Stdout,
            stream,
            self.writer.clone(),
            done_tx.clone(),
        );
        if let Some(err) = stderr {
            relays += 1;
            spawn_relay(err, DataKind::Stderr, stream, self.writer.clone(), done_tx);
        }

        let writer = self.writer.clone();
        let procs = Arc::clone(&self.procs);
        let hangup = Arc::clone(&self.hangup);
        std::thread::spawn(move || {
            let status = exit.recv().unwrap_or(ExitStatus::Signaled(libc::SIGKILL));
            if main {
                container::main_exited();
            }
            for _ in 0..relays {
                if done_rx.recv_timeout(DRAIN_AFTER_EXIT).is_err() {
                    break;
                }
            }
            procs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&stream);
            writer.control(Message::Exited { stream, status });
            if main {
                shutdown(&writer, &hangup);
            }
        });
    }

    fn finish_container(&self) {
        container::main_exited();
        let writer = self.writer.clone();
        let hangup = Arc::clone(&self.hangup);
        std::thread::spawn(move || shutdown(&writer, &hangup));
    }
}

/// After the main process: wait for the rest to die, unmount, tell the host, power off.
fn shutdown(writer: &Writer, hangup: &Hangup) -> ! {
    container::wait_for_no_processes(Duration::from_secs(5));
    container::unmount_all();
    if writer.control(Message::PoweringOff) {
        hangup.wait(HOST_HANGUP_WAIT);
    }
    container::power_off()
}

fn spawn_relay(mut src: File, kind: DataKind, stream: u32, writer: Writer, done: Sender<()>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    // Keep draining even if the host is gone so the process never
                    // blocks on a full pipe.
                    writer.send(&Frame::Data {
                        kind,
                        stream,
                        bytes,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO from a pty master means the terminal's last user closed it.
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

fn pump_stdin(mut file: File, rx: &Receiver<Vec<u8>>) {
    for chunk in rx {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
}
