//! Terminals: a host pty whose master goes to the caller over the console socket
//! (one message carrying the pty name and the master fd via SCM_RIGHTS) and whose
//! slave becomes the relaying process's stdio; bytes and window sizes flow on to the
//! guest pty, which does the line discipline. The terminal and fd-passing calls are
//! `skiff_sys`'s.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result};
use skiff_sys::{fdpass, tty};

pub use skiff_sys::tty::Pty;

/// A new host pty, both ends close-on-exec, the slave raw: the host pty only carries
/// bytes, echo, line editing and signals happen in the guest.
pub fn open_pty() -> Result<Pty> {
    let pty = tty::open_pty().context("openpty")?;
    tty::make_raw(&pty.slave).context("put the pty in raw mode")?;
    Ok(pty)
}

/// Sends the pty master to the caller listening on `socket`.
pub fn send_master(socket: &Path, master: &OwnedFd) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connect to the console socket {}", socket.display()))?;
    fdpass::send_fd(&stream, b"/dev/ptmx", master.as_fd())
        .context("send the pty to the console socket")
}

/// Makes the terminal on stdin our controlling terminal (we are a session leader), so
/// window-size changes arrive as SIGWINCH.
pub fn take_controlling_terminal() {
    // Failure only loses SIGWINCH.
    let _ = tty::make_controlling_tty(std::io::stdin());
}

/// (rows, cols) of the terminal on stdin (the pty slave).
pub fn window_size() -> Option<(u16, u16)> {
    tty::window_size(std::io::stdin())
}
