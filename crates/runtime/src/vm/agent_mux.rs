//! One agent connection shared by several host connections.
//!
//! A VM restored from a snapshot talks to its host over one serial line (see
//! `guest/agent/src/serial.rs`): it has no vsock device on which `exec`, `top` or a
//! daemon could open connections of their own. The container's supervisor owns that
//! line and puts this multiplexer on it: a UNIX socket that answers the vsock device's
//! `CONNECT <port>` / `OK <port>` handshake, greets each connection as the agent
//! would, and relays its frames over the one line. Clients need no change: the socket
//! is recorded where the vsock socket would be.
//!
//! Streams are numbered by each client; on the line client `k` (the supervisor is
//! client 0) uses `k << 16 | stream`, so replies go back by number. Answers to
//! connection-level requests (create, list processes, reseed) go to the clients that
//! asked, in order. When a client goes away its processes are killed, so nothing it
//! started runs on unwatched; when the line ends every client is hung up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use skiff_proto::{read_frame, write_frame, Frame, Message, AGENT_PORT, PROTOCOL_VERSION};

use crate::{AgentConn, Error, Result};

/// Bits of a line stream number that are the client's own.
const CLIENT_SHIFT: u32 = 16;
/// Largest stream number a client may use.
const MAX_STREAM: u32 = (1 << CLIENT_SHIFT) - 1;
/// Frames queued for a client that does not read before it is hung up (a slow
/// reader must not stall the line, which carries the main process's output too).
const CLIENT_QUEUE: usize = 1024;
/// How long a new connection may take to say `CONNECT` and hello.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// The running multiplexer; its socket is removed when it is dropped.
pub struct AgentMux {
    socket: PathBuf,
}

impl Drop for AgentMux {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl AgentMux {
    /// Where clients connect (record it as the container's vsock socket).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Takes over `line` (an agent connection right after its hello, with nothing in
    /// flight), serves other connections on `socket`, and hands back the caller's own
    /// connection through the multiplexer.
    pub fn start(line: AgentConn, socket: &Path) -> Result<(Self, AgentConn)> {
        let line = line.into_stream()?;
        let writer = line.try_clone().map_err(Error::io("agent line"))?;
        let listener = UnixListener::bind(socket)
            .map_err(Error::io(format!("listen on {}", socket.display())))?;
        let shared = Arc::new(Shared {
            line: Mutex::new(writer),
            clients: Mutex::new(Clients::default()),
        });
        let (mine, theirs) = UnixStream::pair().map_err(Error::io("socketpair"))?;
        let id = shared.register(theirs.try_clone().map_err(Error::io("socketpair"))?)?;
        spawn_client(&shared, id, theirs);
        let reader_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("agent-mux-line".into())
            .spawn(move || reader_shared.relay_line(line))
            .map_err(Error::io("start the agent line relay"))?;
        let accept_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("agent-mux-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(c) => accept(&accept_shared, c),
                        Err(e) => tracing::warn!("agent mux accept: {e}"),
                    }
                }
            })
            .map_err(Error::io("start the agent mux listener"))?;
        let conn = AgentConn::handshake(mine, GREETING_TIMEOUT)?;
        Ok((
            Self {
                socket: socket.to_path_buf(),
            },
            conn,
        ))
    }
}

struct Client {
    tx: SyncSender<Frame>,
    /// For hanging up.
    socket: UnixStream,
    /// Line streams of its processes that have not exited.
    live: HashSet<u32>,
}

#[derive(Default)]
struct Clients {
    next: u32,
    by_id: HashMap<u32, Client>,
    /// Who waits for an answer to a connection-level request, oldest first.
    pending: VecDeque<u32>,
    /// The line ended: no new clients.
    closed: bool,
}

struct Shared {
    line: Mutex<UnixStream>,
    clients: Mutex<Clients>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers the vsock handshake, then serves the connection as a client.
fn accept(shared: &Arc<Shared>, mut conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(GREETING_TIMEOUT));
    // A byte at a time, so nothing after the line is swallowed.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match conn.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
            _ => break,
        }
    }
    let port = std::str::from_utf8(&line)
        .ok()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|p| p.trim().parse::<u32>().ok());
    if port != Some(AGENT_PORT) {
        let _ = conn.write_all(b"ERROR no such port\n");
        return;
    }
    let _ = conn.set_read_timeout(None);
    let id = match conn
        .try_clone()
        .map_err(Error::io("client socket"))
        .and_then(|c| shared.register(c))
    {
        Ok(id) => id,
        Err(e) => {
            let _ = conn.write_all(format!("ERROR {e}\n").as_bytes());
            return;
        }
    };
    if conn
        .write_all(format!("OK {AGENT_PORT}\n").as_bytes())
        .is_err()
    {
        shared.drop_client(id);
        return;
    }
    spawn_client(shared, id, conn);
}

/// Greets client `id` and relays what it sends to the line, on a thread of its own.
fn spawn_client(shared: &Arc<Shared>, id: u32, conn: UnixStream) {
    let shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("agent-mux-{id}"))
        .spawn({
            let shared = Arc::clone(&shared);
            move || {
                shared.to_client(
                    id,
                    Frame::Control(Message::Hello {
                        version: PROTOCOL_VERSION,
                        uptime_ms: None,
                    }),
                );
                if let Err(e) = shared.relay_client(id, conn) {
                    tracing::debug!("agent mux client {id}: {e}");
                }
                shared.drop_client(id);
            }
        });
    if spawned.is_err() {
        shared.drop_client(id);
    }
}

impl Shared {
    /// A new client with its writer thread; refused once the line has ended.
    fn register(&self, socket: UnixStream) -> Result<u32> {
        let mut writer = socket.try_clone().map_err(Error::io("client socket"))?;
        let (tx, rx) = mpsc::sync_channel::<Frame>(CLIENT_QUEUE);
        let id = {
            let mut c = lock(&self.clients);
            if c.closed {
                return Err(Error::Protocol("the VM's agent is gone".into()));
            }
            let id = (0..=MAX_STREAM)
                .map(|i| (c.next + i) & MAX_STREAM)
                .find(|i| !c.by_id.contains_key(i))
                .ok_or_else(|| Error::Protocol("too many agent connections".into()))?;
            c.next = (id + 1) & MAX_STREAM;
            c.by_id.insert(
                id,
                Client {
                    tx,
                    socket: socket.try_clone().map_err(Error::io("client socket"))?,
                    live: HashSet::new(),
                },
            );
            id
        };
        std::thread::Builder::new()
            .name(format!("agent-mux-w{id}"))
            .spawn(move || {
                for frame in rx {
                    if write_frame(&mut writer, &frame).is_err() {
                        break;
                    }
                }
                let _ = writer.shutdown(std::net::Shutdown::Both);
            })
            .map_err(Error::io("start a client writer"))?;
        Ok(id)
    }

    /// Queues `frame` for client `id`; a client too slow to keep up is hung up.
    fn to_client(&self, id: u32, frame: Frame) {
        let full = {
            let c = lock(&self.clients);
            c.by_id
                .get(&id)
                .is_some_and(|cl| matches!(cl.tx.try_send(frame), Err(TrySendError::Full(_))))
        };
        if full {
            tracing::warn!("agent mux: client {id} does not read its output; hanging up");
            self.drop_client(id);
        }
    }

    /// Forgets client `id`, hangs it up and kills the processes it left running.
    fn drop_client(&self, id: u32) {
        let gone = lock(&self.clients).by_id.remove(&id);
        let Some(client) = gone else { return };
        let _ = client.socket.shutdown(std::net::Shutdown::Both);
        for stream in client.live {
            let _ = self.to_line(&Frame::Control(Message::Signal {
                stream,
                signal: libc::SIGKILL,
            }));
        }
    }

    fn to_line(&self, frame: &Frame) -> Result<()> {
        write_frame(&mut *lock(&self.line), frame).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Client `id`'s side: its hello, then its frames with their streams renumbered.
    fn relay_client(&self, id: u32, mut conn: UnixStream) -> Result<()> {
        match read_frame(&mut conn).map_err(|e| Error::Protocol(e.to_string()))? {
            Some(Frame::Control(Message::Hello { version, .. })) if version == PROTOCOL_VERSION => {
            }
            Some(Frame::Control(Message::Hello { version, .. })) => {
                return Err(Error::Protocol(format!(
                    "client speaks protocol {version}, the agent {PROTOCOL_VERSION}"
                )))
            }
            other => return Err(Error::Protocol(format!("expected hello, got {other:?}"))),
        }
        let line_stream = |s: u32| -> Option<u32> {
            (s != 0 && s <= MAX_STREAM).then_some((id << CLIENT_SHIFT) | s)
        };
        while let Some(frame) = read_frame(&mut conn).map_err(|e| Error::Protocol(e.to_string()))? {
            let (out, stream) = match frame {
                Frame::Data {
                    kind,
                    stream,
                    bytes,
                } => (
                    line_stream(stream).map(|s| Frame::Data {
                        kind,
                        stream: s,
                        bytes,
                    }),
                    Some(stream),
                ),
                Frame::Control(msg) => match msg {
                    Message::Start {
                        stream,
                        main,
                        process,
                    } => (
                        line_stream(stream).map(|s| {
                            Frame::Control(Message::Start {
                                stream: s,
                                main,
                                process,
                            })
                        }),
                        Some(stream),
                    ),
                    Message::Signal { stream, signal } => (
                        line_stream(stream)
                            .map(|s| Frame::Control(Message::Signal { stream: s, signal })),
                        Some(stream),
                    ),
                    Message::Resize { stream, rows, cols } => (
                        line_stream(stream).map(|s| {
                            Frame::Control(Message::Resize {
                                stream: s,
                                rows,
                                cols,
                            })
                        }),
                        Some(stream),
                    ),
                    m @ (Message::CreateContainer { .. }
                    | Message::ListProcesses
                    | Message::Reseed { .. }) => {
                        // Queued before it is sent, so the answer finds its asker.
                        let mut c = lock(&self.clients);
                        c.pending.push_back(id);
                        let r = self.to_line(&Frame::Control(m));
                        drop(c);
                        r?;
                        continue;
                    }
                    m @ Message::Stop { .. } => (Some(Frame::Control(m)), None),
                    other => {
                        self.to_client(
                            id,
                            Frame::Control(Message::Error {
                                stream: None,
                                message: format!("unexpected message from the host: {other:?}"),
                            }),
                        );
                        continue;
                    }
                },
            };
            match out {
                Some(f) => {
                    if let Frame::Control(Message::Start { stream, .. }) = &f {
                        if let Some(c) = lock(&self.clients).by_id.get_mut(&id) {
                            c.live.insert(*stream);
                        }
                    }
                    self.to_line(&f)?;
                }
                None => self.to_client(
                    id,
                    Frame::Control(Message::Error {
                        stream,
                        message: format!("stream numbers are 1 to {MAX_STREAM}"),
                    }),
                ),
            }
        }
        Ok(())
    }

    /// The agent's side: each frame to the client it belongs to.
    fn relay_line(&self, mut line: UnixStream) {
        loop {
            let frame = match read_frame(&mut line) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("agent line: {e}");
                    break;
                }
            };
            match frame {
                Frame::Data {
                    kind,
                    stream,
                    bytes,
                } => self.to_client(
                    stream >> CLIENT_SHIFT,
                    Frame::Data {
                        kind,
                        stream: stream & MAX_STREAM,
                        bytes,
                    },
                ),
                Frame::Control(msg) => self.route(msg),
            }
        }
        // The VM is gone: hang everyone up and take no one new.
        let ids: Vec<u32> = {
            let mut c = lock(&self.clients);
            c.closed = true;
            c.by_id.keys().copied().collect()
        };
        for id in ids {
            if let Some(client) = lock(&self.clients).by_id.remove(&id) {
                let _ = client.socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn route(&self, msg: Message) {
        let local = |s: u32| (s >> CLIENT_SHIFT, s & MAX_STREAM);
        match msg {
            Message::Started { stream, pid } => {
                let (id, s) = local(stream);
                self.to_client(id, Frame::Control(Message::Started { stream: s, pid }));
            }
            Message::Exited { stream, status } => {
                let (id, s) = local(stream);
                if let Some(c) = lock(&self.clients).by_id.get_mut(&id) {
                    c.live.remove(&stream);
                }
                self.to_client(id, Frame::Control(Message::Exited { stream: s, status }));
            }
            Message::Error {
                stream: Some(stream),
                message,
            } => {
                let (id, s) = local(stream);
                if let Some(c) = lock(&self.clients).by_id.get_mut(&id) {
                    c.live.remove(&stream);
                }
                self.to_client(
                    id,
                    Frame::Control(Message::Error {
                        stream: Some(s),
                        message,
                    }),
                );
            }
            m @ (Message::ContainerCreated
            | Message::Processes { .. }
            | Message::Reseeded
            | Message::Error { stream: None, .. }) => {
                let asker = lock(&self.clients).pending.pop_front();
                // An error nobody asked about is the session's: the supervisor's.
                self.to_client(asker.unwrap_or(0), Frame::Control(m));
            }
            Message::PoweringOff => {
                let ids: Vec<u32> = lock(&self.clients).by_id.keys().copied().collect();
                for id in ids {
                    self.to_client(id, Frame::Control(Message::PoweringOff));
                }
            }
            other => tracing::warn!("agent line: unexpected {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, StartOutcome};
    use skiff_proto::{DataKind, ExitStatus, ProcessSpec};

    /// A stand-in agent on one end of a socket pair: `Start` of `sleep` runs until
    /// killed, anything else prints `out-<line stream>` and exits 0; signals it gets
    /// are reported on `signals`.
    fn fake_agent(mut line: UnixStream, signals: mpsc::Sender<(u32, i32)>) {
        let mut w = line.try_clone().expect("clone");
        let hello = Frame::Control(Message::Hello {
            version: PROTOCOL_VERSION,
            uptime_ms: Some(1),
        });
        write_frame(&mut w, &hello).expect("hello");
        std::thread::spawn(move || {
            while let Ok(Some(frame)) = read_frame(&mut line) {
                let replies = match frame {
                    Frame::Control(Message::Start {
                        stream, process, ..
                    }) => {
                        let mut r = vec![Frame::Control(Message::Started { stream, pid: 7 })];
                        if process.args != ["sleep"] {
                            r.push(Frame::Data {
                                kind: DataKind::Stdout,
                                stream,
                                bytes: format!("out-{stream}").into_bytes(),
                            });
                            r.push(Frame::Control(Message::Exited {
                                stream,
                                status: ExitStatus::Exited(0),
                            }));
                        }
                        r
                    }
                    Frame::Control(Message::Signal { stream, signal }) => {
                        let _ = signals.send((stream, signal));
                        vec![Frame::Control(Message::Exited {
                            stream,
                            status: ExitStatus::Signaled(signal),
                        })]
                    }
                    Frame::Control(Message::ListProcesses) => {
                        vec![Frame::Control(Message::Processes {
                            processes: Vec::new(),
                        })]
                    }
                    _ => Vec::new(),
                };
                for r in replies {
                    if write_frame(&mut w, &r).is_err() {
                        return;
                    }
                }
            }
        });
    }

    fn output(conn: &mut AgentConn, stream: u32) -> (String, Option<ExitStatus>) {
        let mut out = String::new();
        loop {
            match conn.next_event().expect("event") {
                Some(Event::Stdout { stream: s, bytes }) if s == stream => {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
                Some(Event::Exited { stream: s, status }) if s == stream => {
                    return (out, Some(status))
                }
                Some(_) => {}
                None => return (out, None),
            }
        }
    }

    fn mux() -> (
        tempfile::TempDir,
        AgentMux,
        AgentConn,
        mpsc::Receiver<(u32, i32)>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (host, guest) = UnixStream::pair().expect("pair");
        let (tx, rx) = mpsc::channel();
        fake_agent(guest, tx);
        let line = AgentConn::handshake(host, Duration::from_secs(5)).expect("handshake");
        let (m, own) = AgentMux::start(line, &dir.path().join("agent.sock")).expect("mux");
        (dir, m, own, rx)
    }

    #[test]
    fn each_connection_gets_its_own_streams_and_answers() {
        let (_dir, m, mut own, _signals) = mux();
        let mut other =
            AgentConn::connect(m.socket(), AGENT_PORT, Duration::from_secs(5)).expect("connect");
        let p = ProcessSpec::new(vec!["echo".into()]);
        // Both use stream 1; the agent sees two different streams.
        assert!(matches!(
            other.start(1, false, &p).expect("start"),
            StartOutcome::Running { .. }
        ));
        assert!(matches!(
            own.start(1, true, &p).expect("start"),
            StartOutcome::Running { .. }
        ));
        let (out_other, st) = output(&mut other, 1);
        assert_eq!(st, Some(ExitStatus::Exited(0)));
        let (out_own, _) = output(&mut own, 1);
        assert_eq!(out_own, "out-1");
        assert_ne!(
            out_other, out_own,
            "the second client's stream is renumbered"
        );
        assert!(other.list_processes().expect("ps").is_empty());
    }

    #[test]
    fn a_departed_client_leaves_no_process_running() {
        let (_dir, m, _own, signals) = mux();
        let mut other =
            AgentConn::connect(m.socket(), AGENT_PORT, Duration::from_secs(5)).expect("connect");
        other
            .start(3, false, &ProcessSpec::new(vec!["sleep".into()]))
            .expect("start");
        drop(other);
        let (stream, signal) = signals
            .recv_timeout(Duration::from_secs(5))
            .expect("the process was killed");
        assert_eq!(signal, libc::SIGKILL);
        assert_eq!(stream & MAX_STREAM, 3);
        assert_ne!(stream, 3, "not the supervisor's stream 3");
    }

    #[test]
    fn wrong_ports_and_bad_stream_numbers_are_refused() {
        let (_dir, m, _own, _signals) = mux();
        assert!(AgentConn::connect(m.socket(), AGENT_PORT + 7, Duration::from_secs(5)).is_err());
        let mut other =
            AgentConn::connect(m.socket(), AGENT_PORT, Duration::from_secs(5)).expect("connect");
        let p = ProcessSpec::new(vec!["echo".into()]);
        assert!(other.start(0, false, &p).is_err());
        assert!(other.start(MAX_STREAM + 1, false, &p).is_err());
    }
}
