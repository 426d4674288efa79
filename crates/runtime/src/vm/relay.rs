//! A process's output from the guest agent to wherever it goes (a container log, a
//! terminal, a buffer): the one event loop that supervisors, `exec` and `vm run` share.

use std::io::Write;

use skiff_proto::ExitStatus;

use crate::{AgentConn, AgentSender, Event};

/// Where a relayed process's output goes.
pub trait Output {
    fn stdout(&mut self, bytes: &[u8]);
    fn stderr(&mut self, bytes: &[u8]);
    /// An error the agent reported (logged unless the output shows it itself).
    fn agent_error(&mut self, message: &str) {
        tracing::warn!("guest agent: {message}");
    }
}

/// When relaying ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// When the process reports its exit (an exec'd process).
    Exit,
    /// When the VM powers off (a container's main process: output may follow the exit
    /// status of its own process group's stragglers).
    PowerOff,
}

/// How relaying ended.
#[derive(Debug, Default)]
pub struct Relayed {
    /// The process's exit status, if the agent reported it.
    pub status: Option<ExitStatus>,
    /// The last error the agent (or its connection) reported.
    pub error: Option<String>,
}

/// Relays `stream`'s output to `out` until `until` (or the connection ends).
pub fn relay(agent: &mut AgentConn, stream: u32, until: Until, out: &mut dyn Output) -> Relayed {
    let mut r = Relayed::default();
    loop {
        match agent.next_event() {
            Ok(Some(Event::Stdout { stream: s, bytes })) if s == stream => out.stdout(&bytes),
            Ok(Some(Event::Stderr { stream: s, bytes })) if s == stream => out.stderr(&bytes),
            Ok(Some(Event::Exited { stream: s, status })) if s == stream => {
                r.status = Some(status);
                if until == Until::Exit {
                    break;
                }
            }
            Ok(Some(Event::Error { message, .. })) => {
                out.agent_error(&message);
                r.error = Some(message);
            }
            Ok(Some(Event::PoweringOff)) => break,
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
        }
    }
    r
}

/// Writes process output to our stdout and stderr, unbuffered. When our stdout's
/// reader goes away (`skiff run ... | head`), the process gets SIGPIPE, as it would
/// writing to that pipe itself.
pub struct Stdio {
    sender: Option<AgentSender>,
    stream: u32,
    broken: bool,
}

impl Stdio {
    pub fn new(sender: Option<AgentSender>, stream: u32) -> Self {
        Self {
            sender,
            stream,
            broken: false,
        }
    }

    fn write(&mut self, out: &mut dyn Write, bytes: &[u8]) {
        if self.broken {
            return;
        }
        if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                self.broken = true;
                if let Some(s) = &self.sender {
                    let _ = s.signal(self.stream, libc::SIGPIPE);
                }
            }
        }
    }
}

impl Output for Stdio {
    fn stdout(&mut self, bytes: &[u8]) {
        self.write(&mut std::io::stdout(), bytes);
    }

    fn stderr(&mut self, bytes: &[u8]) {
        self.write(&mut std::io::stderr(), bytes);
    }
}
