//! Terminals on the host: whether an fd is one, its window size, raw mode (for the
//! user's terminal while attached, or for good on a pty that only carries bytes), new
//! ptys and the controlling terminal of a session leader.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::fds;

/// Whether `fd` is a terminal.
pub fn is_tty(fd: impl AsFd) -> bool {
    // SAFETY: isatty only inspects a descriptor the caller holds open.
    unsafe { libc::isatty(fd.as_fd().as_raw_fd()) == 1 }
}

/// (rows, cols) of the terminal on `fd`; `None` if it is not one or reports no rows.
pub fn window_size(fd: impl AsFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to a valid pointer; fd is held open.
    let ok = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sets the window size of the terminal on `fd` (its foreground group gets SIGWINCH).
pub fn set_window_size(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; fd is held open.
    if unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_attrs(fd: impl AsFd) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it before it is read.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is held open and t is a valid termios.
    if unsafe { libc::tcgetattr(fd.as_fd().as_raw_fd(), &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

fn set_attrs(fd: impl AsFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: fd is held open and t is a valid termios.
    if unsafe { libc::tcsetattr(fd.as_fd().as_raw_fd(), libc::TCSANOW, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn raw(mut t: libc::termios) -> libc::termios {
    // SAFETY: t is a valid termios; cfmakeraw only edits its flags.
    unsafe { libc::cfmakeraw(&mut t) };
    t
}

/// Puts the terminal on `fd` into raw mode for good (a pty that only carries bytes:
/// echo, line editing and signals happen at the other end).
pub fn make_raw(fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd();
    set_attrs(fd, &raw(get_attrs(fd)?))
}

/// A terminal in raw mode until dropped, when its attributes are restored (on every
/// path out, panics included). It holds a duplicate of the fd, so it borrows nothing.
pub struct RawMode {
    fd: OwnedFd,
    saved: libc::termios,
}

impl RawMode {
    pub fn enable(fd: impl AsFd) -> io::Result<Self> {
        let fd = fd.as_fd().try_clone_to_owned()?;
        let saved = get_attrs(&fd)?;
        set_attrs(&fd, &raw(saved))?;
        Ok(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = set_attrs(&self.fd, &self.saved);
    }
}

/// Both ends of a new pseudo-terminal, close-on-exec.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pty (openpty(3)) with default attributes and size; both fds are
/// close-on-exec.
pub fn open_pty() -> io::Result<Pty> {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty writes two fds into m and s; name, termios and winsize are null.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both fds are open and nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    fds::set_cloexec(&master, true)?;
    fds::set_cloexec(&slave, true)?;
    Ok(Pty { master, slave })
}

/// Makes the terminal on `fd` the controlling terminal of the calling process, which
/// must lead a session without one (TIOCSCTTY): its window-size changes then arrive as
/// SIGWINCH.
pub fn make_controlling_tty(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); fd is held open.
    if unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lflag(fd: impl AsFd) -> libc::tcflag_t {
        get_attrs(fd).unwrap().c_lflag
    }

    #[test]
    fn a_new_pty_is_a_terminal_with_settable_size() {
        let pty = open_pty().unwrap();
        assert!(is_tty(&pty.master) && is_tty(&pty.slave));
        assert!(fds::cloexec(&pty.master).unwrap());
        assert!(fds::cloexec(&pty.slave).unwrap());
        assert_eq!(window_size(&pty.slave), None, "a new pty has no size");
        set_window_size(&pty.master, 40, 132).unwrap();
        assert_eq!(window_size(&pty.slave), Some((40, 132)));
        assert_eq!(window_size(&pty.master), Some((40, 132)));
    }

    #[test]
    fn not_a_terminal() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_tty(&f));
        assert_eq!(window_size(&f), None);
        assert!(RawMode::enable(&f).is_err());
        assert!(make_raw(&f).is_err());
    }

    #[test]
    fn raw_mode_lasts_until_dropped() {
        let pty = open_pty().unwrap();
        let cooked = lflag(&pty.slave);
        assert_ne!(cooked & (libc::ICANON | libc::ECHO), 0);
        let guard = RawMode::enable(&pty.slave).unwrap();
        assert_eq!(
            lflag(&pty.slave) & (libc::ICANON | libc::ECHO | libc::ISIG),
            0
        );
        drop(guard);
        assert_eq!(lflag(&pty.slave), cooked);
        make_raw(&pty.slave).unwrap();
        assert_eq!(lflag(&pty.slave) & (libc::ICANON | libc::ECHO), 0);
    }
}
