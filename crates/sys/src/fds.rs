//! File descriptors as such: pipes, the close-on-exec flag, handing an fd to a child at
//! a fixed number, taking one inherited that way, and waiting for any of several to
//! become readable.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A new pipe, (read end, write end), both close-on-exec from the start.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: pipe2 writes two fds into the array, which has room for them.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether `fd` is close-on-exec.
pub fn cloexec(fd: impl AsFd) -> io::Result<bool> {
    // SAFETY: F_GETFD on a descriptor held open; no memory is involved.
    let flags = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::FD_CLOEXEC != 0)
}

/// Sets or clears close-on-exec on `fd`.
pub fn set_cloexec(fd: impl AsFd, on: bool) -> io::Result<()> {
    set_cloexec_raw(fd.as_fd().as_raw_fd(), on)
}

fn set_cloexec_raw(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD with an integer argument; an fd that is not open gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In a child between fork and exec (`CommandExt::pre_exec`): makes `fd` available
/// as `target` in the program it execs, without close-on-exec. Async-signal-safe.
pub fn inherit_as(fd: RawFd, target: RawFd) -> io::Result<()> {
    if fd == target {
        return set_cloexec_raw(fd, false);
    }
    // SAFETY: dup2 of integer fds; the new `target` is not close-on-exec.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of `fd`, which the parent passed to this process (see
/// [`inherit_as`]), and makes it close-on-exec so later children do not inherit it.
/// Refuses stdio (0-2) and fds that are not open.
///
/// Call it once per fd, at startup, before anything else in the process could have
/// taken that fd as its own: the number is the parent's promise that it is ours.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd <= 2 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    set_cloexec_raw(fd, true)?;
    // SAFETY: the fd is open (F_SETFD succeeded) and, by the parent's hand-over, ours
    // alone; this is the one place that turns it into an owned handle.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until one of `fds` is readable, hung up or in error, or `timeout` (`None`:
/// forever) passes; true for each fd that is. EINTR is returned as an error
/// (`ErrorKind::Interrupted`), for the caller to retry or not.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX)
    });
    let n = libc::nfds_t::try_from(pfds.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: pfds is a valid array of n pollfds, whose fds are borrowed (held open)
    // for the call.
    if unsafe { libc::poll(pfds.as_mut_ptr(), n, ms) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::process::CommandExt;

    #[test]
    fn pipes_are_cloexec_and_carry_bytes() {
        let (r, w) = pipe().unwrap();
        assert!(cloexec(&r).unwrap() && cloexec(&w).unwrap());
        set_cloexec(&w, false).unwrap();
        assert!(!cloexec(&w).unwrap());
        assert_eq!(
            poll_readable(&[r.as_fd()], Some(Duration::ZERO)).unwrap(),
            [false]
        );
        std::fs::File::from(w).write_all(b"x").unwrap();
        assert_eq!(poll_readable(&[r.as_fd()], None).unwrap(), [true]);
    }

    #[test]
    fn poll_reports_the_ready_one() {
        let (r1, _w1) = pipe().unwrap();
        let (r2, w2) = pipe().unwrap();
        drop(w2);
        let ready = poll_readable(&[r1.as_fd(), r2.as_fd()], Some(Duration::from_secs(5)));
        assert_eq!(ready.unwrap(), [false, true], "a hung-up pipe counts");
    }

    #[test]
    fn a_child_inherits_an_fd_at_a_fixed_number() {
        let (r, w) = pipe().unwrap();
        let wfd = w.as_raw_fd();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo ok >&7"]);
        // SAFETY: inherit_as only calls dup2/fcntl, which are async-signal-safe.
        unsafe { cmd.pre_exec(move || inherit_as(wfd, 7)) };
        assert!(cmd.status().unwrap().success());
        drop(w);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
        assert_eq!(out, "ok\n");
    }

    #[test]
    fn take_inherited_refuses_stdio_and_closed_fds() {
        assert!(take_inherited(1).is_err());
        assert!(take_inherited(1 << 30).is_err(), "not open");
    }
}
