//! The host end of the agent protocol: one connection, requests out, events in.
//!
//! Reading is single-threaded (the owner of [`AgentConn`] pulls [`Event`]s); writing is
//! shared through [`AgentSender`] so a stdin pump or a signal forwarder can run beside
//! the reader.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_proto::{
    read_frame, write_frame, ContainerConfig, DataKind, ExitStatus, Frame, GuestProcess, Message,
    ProcessSpec, MAX_PROCESSES, PROTOCOL_VERSION,
};

use crate::{Error, Result};

/// Something the agent told us.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Stdout {
        stream: u32,
        bytes: Vec<u8>,
    },
    Stderr {
        stream: u32,
        bytes: Vec<u8>,
    },
    Exited {
        stream: u32,
        status: ExitStatus,
    },
    Error {
        stream: Option<u32>,
        message: String,
    },
    /// The container is stopped and unmounted; the VM powers off next.
    PoweringOff,
}

/// How a `Start` request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    Running {
        pid: i32,
    },
    /// The command could not be executed; the agent already sent the reason on the
    /// stream's stderr (buffered as an event) and this status (126 or 127).
    Failed {
        status: ExitStatus,
    },
}

#[derive(Clone)]
pub struct AgentSender(Arc<Mutex<UnixStream>>);

impl AgentSender {
    fn send(&self, frame: &Frame) -> Result<()> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *s, frame).map_err(Error::from)
    }

    pub fn control(&self, msg: Message) -> Result<()> {
        self.send(&Frame::Control(msg))
    }

    /// Stdin data for `stream`; an empty chunk closes the process's stdin.
    pub fn stdin(&self, stream: u32, bytes: Vec<u8>) -> Result<()> {
        self.send(&Frame::Data {
            kind: DataKind::Stdin,
            stream,
            bytes,
        })
    }

    pub fn signal(&self, stream: u32, signal: i32) -> Result<()> {
        self.control(Message::Signal { stream, signal })
    }

    pub fn resize(&self, stream: u32, rows: u16, cols: u16) -> Result<()> {
        self.control(Message::Resize { stream, rows, cols })
    }

    /// Asks the agent to stop the container: `signal`, then SIGKILL after `grace`.
    pub fn stop(&self, signal: i32, grace: Duration) -> Result<()> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.control(Message::Stop { signal, grace_ms })
    }

    /// Closes our side so the agent sees the hang-up.
    /// Copies `input` to the stdin of `stream` on a thread of its own; end of input (or
    /// a read error) closes the process's stdin.
    pub fn spawn_stdin_pump(self, stream: u32, mut input: impl std::io::Read + Send + 'static) {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = self.stdin(stream, Vec::new());
                        return;
                    }
                    Ok(n) => {
                        if self.stdin(stream, buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }

    pub fn hang_up(&self) {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

pub struct AgentConn {
    reader: UnixStream,
    sender: AgentSender,
    pending: VecDeque<Event>,
    /// Guest time since boot when the agent said hello.
    pub guest_uptime_ms: Option<u64>,
}

impl AgentConn {
    /// Completes the hello exchange on a fresh connection. The agent speaks first.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self> {
        stream
            .set_read_timeout(Some(timeout))
            .map_err(Error::io("agent socket"))?;
        let mut reader = stream.try_clone().map_err(Error::io("agent socket"))?;
        let uptime = match read_frame(&mut reader)? {
            Some(Frame::Control(Message::Hello { version, uptime_ms })) if version == PROTOCOL_VERSION => uptime_ms,
            Some(Frame::Control(Message::Hello { version, .. })) => {
                return Err(Error::Protocol(format!(
                    "the agent speaks protocol version {version}, skiff speaks {PROTOCOL_VERSION}; rebuild the initramfs"
                )))
            }
            Some(other) => return Err(Error::Protocol(format!("expected hello, got {other:?}"))),
            None => return Err(Error::Protocol("the agent closed the connection before hello".into())),
        };
        reader
            .set_read_timeout(None)
            .map_err(Error::io("agent socket"))?;
        let conn = Self {
            reader,
            sender: AgentSender(Arc::new(Mutex::new(stream))),
            pending: VecDeque::new(),
            guest_uptime_ms: uptime,
        };
        conn.sender.control(Message::Hello {
            version: PROTOCOL_VERSION,
            uptime_ms: None,
        })?;
        Ok(conn)
    }

    /// Opens a new connection to a running VM's agent through the vsock device's UNIX
    /// socket (`CONNECT <port>` / `OK <port>`).
    pub fn connect(vsock_uds: &Path, port: u32, timeout: Duration) -> Result<Self> {
        let mut stream = UnixStream::connect(vsock_uds)
            .map_err(Error::io(format!("connect {}", vsock_uds.display())))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(Error::io("vsock socket"))?;
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .map_err(Error::io("vsock handshake"))?;
        // Read the reply a byte at a time so no protocol bytes are swallowed.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 64 {
            match std::io::Read::read(&mut stream, &mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(e) => return Err(Error::io("vsock handshake")(e)),
            }
        }
        let line = String::from_utf8_lossy(&line);
        if !line.starts_with("OK ") {
            return Err(Error::Protocol(format!(
                "vsock port {port}: the VM answered {line:?} instead of OK (is the agent running?)"
            )));
        }
        Self::handshake(stream, timeout)
    }

    pub fn sender(&self) -> AgentSender {
        self.sender.clone()
    }

    /// The raw connection, for a relay that takes it over; refused while events that
    /// were read ahead wait to be taken.
    pub fn into_stream(self) -> Result<UnixStream> {
        if !self.pending.is_empty() {
            return Err(Error::Protocol(
                "the agent connection has unread events".into(),
            ));
        }
        Ok(self.reader)
    }

    /// The next event, or `None` when the agent closed the connection.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        let Some(frame) = read_frame(&mut self.reader)? else {
            return Ok(None);
        };
        let event = match frame {
            Frame::Data {
                kind: DataKind::Stdout,
                stream,
                bytes,
            } => Event::Stdout { stream, bytes },
            Frame::Data {
                kind: DataKind::Stderr,
                stream,
                bytes,
            } => Event::Stderr { stream, bytes },
            Frame::Data {
                kind: DataKind::Stdin,
                ..
            } => return Err(Error::Protocol("the agent sent stdin data".into())),
            Frame::Control(Message::Exited { stream, status }) => Event::Exited { stream, status },
            Frame::Control(Message::Error { stream, message }) => Event::Error { stream, message },
            Frame::Control(Message::PoweringOff) => Event::PoweringOff,
            Frame::Control(
                Message::Started { .. }
                | Message::ContainerCreated
                | Message::Reseeded
                | Message::Processes { .. },
            ) => return Err(Error::Protocol("unsolicited reply from the agent".into())),
            Frame::Control(other) => {
                return Err(Error::Protocol(format!(
                    "unexpected message from the agent: {other:?}"
                )))
            }
        };
        Ok(Some(event))
    }

    /// Reads until a reply arrives; events in between are kept for `next_event`.
    fn await_reply<T>(&mut self, mut pick: impl FnMut(&Frame) -> Option<Result<T>>) -> Result<T> {
        loop {
            let frame = read_frame(&mut self.reader)?
                .ok_or_else(|| Error::Protocol("the agent closed the connection".into()))?;
            if let Some(result) = pick(&frame) {
                return result;
            }
            match frame {
                Frame::Data {
                    kind: DataKind::Stdout,
                    stream,
                    bytes,
                } => self.pending.push_back(Event::Stdout { stream, bytes }),
                Frame::Data {
                    kind: DataKind::Stderr,
                    stream,
                    bytes,
                } => self.pending.push_back(Event::Stderr { stream, bytes }),
                Frame::Control(Message::Exited { stream, status }) => {
                    self.pending.push_back(Event::Exited { stream, status })
                }
                Frame::Control(Message::Error { stream, message }) => {
                    self.pending.push_back(Event::Error { stream, message })
                }
                Frame::Control(Message::PoweringOff) => self.pending.push_back(Event::PoweringOff),
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected frame from the agent: {other:?}"
                    )))
                }
            }
        }
    }

    /// Assembles the container's root filesystem in the guest.
    pub fn create_container(&mut self, config: &ContainerConfig) -> Result<()> {
        self.sender.control(Message::CreateContainer {
            config: Box::new(config.clone()),
        })?;
        self.await_reply(|f| match f {
            Frame::Control(Message::ContainerCreated) => Some(Ok(())),
            Frame::Control(Message::Error {
                stream: None,
                message,
            }) => Some(Err(Error::Agent(message.clone()))),
            _ => None,
        })
    }

    /// Gives a restored guest fresh randomness (mixed in, CRNG reseeded) and the
    /// host's wall-clock time.
    pub fn reseed(&mut self) -> Result<()> {
        // Bytes from the host's CSPRNG for the restored guest's pool.
        let entropy = skiff_sys::random::bytes(64).map_err(Error::io("read /dev/urandom"))?;
        let realtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
        self.sender.control(Message::Reseed {
            entropy,
            realtime_ns,
        })?;
        self.await_reply(|f| match f {
            Frame::Control(Message::Reseeded) => Some(Ok(())),
            Frame::Control(Message::Error {
                stream: None,
                message,
            }) => Some(Err(Error::Agent(message.clone()))),
            _ => None,
        })
    }

    /// The container's processes as the guest numbers them (`ps`).
    pub fn list_processes(&mut self) -> Result<Vec<GuestProcess>> {
        self.sender.control(Message::ListProcesses)?;
        let list = self.await_reply(|f| match f {
            Frame::Control(Message::Processes { processes }) => Some(Ok(processes.clone())),
            Frame::Control(Message::Error {
                stream: None,
                message,
            }) => Some(Err(Error::Agent(message.clone()))),
            _ => None,
        })?;
        if list.len() > MAX_PROCESSES {
            return Err(Error::Protocol(format!(
                "the agent listed {} processes (at most {MAX_PROCESSES} expected)",
                list.len()
            )));
        }
        Ok(list)
    }

    /// Starts a process (the container's `main` one, or an exec) on `stream`.
    pub fn start(
        &mut self,
        stream: u32,
        main: bool,
        process: &ProcessSpec,
    ) -> Result<StartOutcome> {
        self.sender.control(Message::Start {
            stream,
            main,
            process: process.clone(),
        })?;
        self.await_reply(|f| match f {
            Frame::Control(Message::Started { stream: s, pid }) if *s == stream => {
                Some(Ok(StartOutcome::Running { pid: *pid }))
            }
            Frame::Control(Message::Exited { stream: s, status }) if *s == stream => {
                Some(Ok(StartOutcome::Failed { status: *status }))
            }
            Frame::Control(Message::Error {
                stream: Some(s),
                message,
            }) if *s == stream => Some(Err(Error::Agent(message.clone()))),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_agent(send: &'static [u8]) -> UnixStream {
        let (host, mut guest) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let _ = guest.write_all(send);
            // Hold the connection open briefly, then hang up.
            std::thread::sleep(Duration::from_millis(200));
        });
        host
    }

    #[test]
    fn garbage_from_the_guest_is_an_error_not_a_panic() {
        let err = AgentConn::handshake(fake_agent(&[0xff; 32]), Duration::from_secs(5))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }

    #[test]
    fn silent_guest_times_out() {
        let (host, _guest) = UnixStream::pair().unwrap();
        let err = AgentConn::handshake(host, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }

    #[test]
    fn wrong_version_and_wrong_first_message_are_refused() {
        let mut hello = Vec::new();
        write_frame(
            &mut hello,
            &Frame::Control(Message::Hello {
                version: 99,
                uptime_ms: None,
            }),
        )
        .unwrap();
        let leaked: &'static [u8] = Box::leak(hello.into_boxed_slice());
        let err = AgentConn::handshake(fake_agent(leaked), Duration::from_secs(5))
            .err()
            .unwrap();
        assert!(err.to_string().contains("version 99"), "{err}");

        let mut other = Vec::new();
        write_frame(&mut other, &Frame::Control(Message::PoweringOff)).unwrap();
        let leaked: &'static [u8] = Box::leak(other.into_boxed_slice());
        assert!(AgentConn::handshake(fake_agent(leaked), Duration::from_secs(5)).is_err());
    }

    #[test]
    fn unsolicited_or_stdin_frames_from_the_guest_end_the_session() {
        let mut bytes = Vec::new();
        write_frame(
            &mut bytes,
            &Frame::Control(Message::Hello {
                version: PROTOCOL_VERSION,
                uptime_ms: Some(1),
            }),
        )
        .unwrap();
        write_frame(
            &mut bytes,
            &Frame::Data {
                kind: DataKind::Stdin,
                stream: 1,
                bytes: b"x".to_vec(),
            },
        )
        .unwrap();
        let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let (host, mut guest) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let _ = guest.write_all(leaked);
            let mut sink = [0u8; 256];
            let _ = std::io::Read::read(&mut guest, &mut sink);
            std::thread::sleep(Duration::from_millis(200));
        });
        let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
        assert_eq!(conn.guest_uptime_ms, Some(1));
        assert!(conn.next_event().is_err());
    }
}
