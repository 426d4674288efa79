//! The host terminal for `-t`, as the CLI sees it: the process's own stdio by number
//! (0 in raw mode while attached, 1's window size for the guest pty). The terminal
//! calls themselves are `skiff_sys::tty`'s.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use skiff_sys::tty;

/// Runs `f` on stdin, stdout or stderr by number; `None` for any other fd.
fn with_stdio<T>(fd: i32, f: impl FnOnce(BorrowedFd<'_>) -> T) -> Option<T> {
    match fd {
        0 => Some(f(io::stdin().as_fd())),
        1 => Some(f(io::stdout().as_fd())),
        2 => Some(f(io::stderr().as_fd())),
        _ => None,
    }
}

pub fn is_tty(fd: i32) -> bool {
    with_stdio(fd, |f| tty::is_tty(f)).unwrap_or(false)
}

/// (rows, cols) of the terminal on `fd`, if it is one.
pub fn window_size(fd: i32) -> Option<(u16, u16)> {
    with_stdio(fd, |f| tty::window_size(f)).flatten()
}

/// The size a process's pty starts with: our stdout's, when it gets a terminal (`-t`).
pub fn console_size(tty: bool) -> Option<(u16, u16)> {
    if tty {
        window_size(1)
    } else {
        None
    }
}

/// Puts the terminal on stdin into raw mode until dropped.
pub struct RawMode {
    _guard: tty::RawMode,
}

impl RawMode {
    pub fn enable() -> io::Result<Self> {
        let _guard = tty::RawMode::enable(io::stdin())?;
        Ok(Self { _guard })
    }
}
