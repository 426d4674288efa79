//! Attaching the local terminal to a process in a microVM: stdout/stderr out, stdin in,
//! signals and window-size changes forwarded. Shared by `vm run`, `run`, `start -a` and
//! `exec`.

use std::sync::{Arc, Mutex};

use skiff_proto::ExitStatus;
use skiff_runtime::AgentSender;

use crate::{signals, terminal};

/// Shell-style exit code of a process status, for our own exit.
pub fn exit_code(s: ExitStatus) -> u8 {
    u8::try_from(s.code().clamp(0, 255)).unwrap_or(255)
}

/// Copies our stdin to `stream` until EOF, then closes the process's stdin.
pub fn spawn_stdin_pump(sender: AgentSender, stream: u32) {
    sender.spawn_stdin_pump(stream, std::io::stdin());
}

/// Forwards the signals we receive to `stream` once [`SignalTarget::set`] names the
/// connection; signals that arrive earlier are delivered then. Call
/// [`signals::block`] first, before any thread starts.
#[derive(Clone, Default)]
pub struct SignalTarget {
    sender: Arc<Mutex<Option<AgentSender>>>,
    early: Arc<Mutex<Vec<i32>>>,
}

impl SignalTarget {
    pub fn spawn(stream: u32, tty: bool) -> Self {
        let target = Self::default();
        let t = target.clone();
        signals::spawn_forwarder(move |sig| {
            let guard = t.sender.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(sender) if sig == libc::SIGWINCH => {
                    if let (true, Some((rows, cols))) = (tty, terminal::window_size(1)) {
                        let _ = sender.resize(stream, rows, cols);
                    }
                }
                Some(sender) => {
                    let _ = sender.signal(stream, sig);
                }
                None if sig != libc::SIGWINCH => {
                    t.early.lock().unwrap_or_else(|p| p.into_inner()).push(sig)
                }
                None => {}
            }
        });
        target
    }

    pub fn set(&self, sender: AgentSender, stream: u32) {
        *self.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        for sig in std::mem::take(&mut *self.early.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = sender.signal(stream, sig);
        }
    }
}
