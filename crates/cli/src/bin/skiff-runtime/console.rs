//! Terminals: a host pty whose master goes to the caller over the console socket
//! (one message carrying the pty name and the master fd via SCM_RIGHTS) and whose
//! slave becomes the relaying process's stdio; bytes and window sizes flow on to the
//! guest pty, which does the line discipline.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result};

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

pub fn open_pty() -> Result<Pty> {
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
        return Err(io::Error::last_os_error()).context("openpty");
    }
    // SAFETY: openpty succeeded, so both fds are open and ours.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    for fd in [&master, &slave] {
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    make_raw(slave.as_raw_fd())?;
    Ok(Pty { master, slave })
}

/// The host pty only carries bytes: echo, line editing and signals happen in the guest.
pub fn make_raw(fd: RawFd) -> Result<()> {
    // SAFETY: termios is plain data filled by tcgetattr before use.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a terminal we hold; t is valid.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error()).context("tcgetattr");
    }
    // SAFETY: t is a valid termios.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: as above.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(io::Error::last_os_error()).context("tcsetattr");
    }
    Ok(())
}

/// Sends the pty master to the caller listening on `socket`.
pub fn send_master(socket: &Path, master: &OwnedFd) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connect to the console socket {}", socket.display()))?;
    let name = b"/dev/ptmx";
    let mut iov = libc::iovec {
        iov_base: name.as_ptr() as *mut libc::c_void,
        iov_len: name.len(),
    };
    let fd = master.as_raw_fd();
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer set below outlives sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at a buffer of CMSG_SPACE(sizeof fd) bytes, so the
    // first header and its data fit.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: the socket is connected and msg is fully initialised.
    if unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, 0) } < 0 {
        return Err(io::Error::last_os_error()).context("send the pty to the console socket");
    }
    Ok(())
}

/// Makes the terminal on stdin our controlling terminal (we are a session leader), so
/// window-size changes arrive as SIGWINCH.
pub fn take_controlling_terminal() {
    // SAFETY: TIOCSCTTY on fd 0 with argument 0; failure only loses SIGWINCH.
    unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
}

/// (rows, cols) of the terminal on `fd`.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data filled by the ioctl.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into ws.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}
