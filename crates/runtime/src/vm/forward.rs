//! Signals from the host side to a process in the VM: what a foreground client or a
//! detached supervisor receives is meant for the container's process, as with
//! `docker run` (SIGWINCH becomes a window-size change of its terminal).

use std::io;
use std::sync::{Arc, Mutex};

use crate::AgentSender;

/// The signals forwarded to the container's process.
pub const FORWARDED: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Blocks the forwarded signals in the calling thread; threads spawned later inherit
/// the mask (call it before any thread starts). Child processes do not (std resets
/// the mask before exec).
pub fn block() -> io::Result<()> {
    skiff_sys::signals::block(&FORWARDED)
}

/// Forwards the signals we receive to `stream` once [`SignalTarget::set`] names the
/// connection; signals that arrive earlier are delivered then. Call [`block`] first.
#[derive(Clone, Default)]
pub struct SignalTarget {
    sender: Arc<Mutex<Option<AgentSender>>>,
    early: Arc<Mutex<Vec<i32>>>,
}

impl SignalTarget {
    /// With `tty`, SIGWINCH resizes the process's terminal to our stdout's size.
    pub fn spawn(stream: u32, tty: bool) -> Self {
        let target = Self::default();
        let t = target.clone();
        skiff_sys::signals::spawn_forwarder(&FORWARDED, move |sig| {
            let guard = t.sender.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(sender) if sig == libc::SIGWINCH => {
                    let size = skiff_sys::tty::window_size(io::stdout());
                    if let (true, Some((rows, cols))) = (tty, size) {
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
