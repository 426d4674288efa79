//! Passing a file descriptor over a Unix socket (SCM_RIGHTS), with a few bytes in the
//! same message: how a pty master reaches the caller of `--console-socket`.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The most fds [`recv_fd`] makes room for: it keeps the first and closes the rest, so
/// a peer sending several leaks none into this process.
const MAX_FDS: usize = 8;

/// Bytes of control buffer for `n` fds (CMSG_SPACE).
fn space_for(n: usize) -> usize {
    let len = u32::try_from(n * size_of::<RawFd>()).unwrap_or(u32::MAX);
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE(len) as usize }
}

/// A zeroed control buffer of at least `bytes`, aligned for `cmsghdr`.
fn control_buffer(bytes: usize) -> Vec<u64> {
    vec![0u64; bytes.div_ceil(size_of::<u64>())]
}

/// Sends `bytes` (at least one: a stream socket carries no empty message) with `fd`
/// attached in one message.
pub fn send_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    if bytes.is_empty() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let space = space_for(1);
    let mut cbuf = control_buffer(space);
    // SAFETY: msghdr is plain data; every pointer set below outlives sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at an aligned buffer of CMSG_SPACE(sizeof fd) bytes,
    // so the first header is not null and it and its data fit.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
    }
    // SAFETY: msg is fully initialised and only points at live buffers; the socket is
    // held open by `stream`. MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if (n as usize) < bytes.len() {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(())
}

/// Receives one message into `buf`: the number of bytes read and the fd attached to
/// it, if any (close-on-exec). Further fds in the message are closed; a message whose
/// fds did not all fit is an error.
pub fn recv_fd(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let space = space_for(MAX_FDS);
    let mut cbuf = control_buffer(space);
    // SAFETY: msghdr is plain data; every pointer set below outlives recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers of the lengths it gives; the socket is held
    // open by `stream`.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let fds = received_fds(&msg, space);
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "more fds than expected (control data truncated)",
        ));
    }
    Ok((n as usize, fds.into_iter().next()))
}

/// Every fd in the SCM_RIGHTS messages of `msg`, owned, so those not kept are closed.
/// Each header is checked to lie within the `space` bytes of the control buffer.
fn received_fds(msg: &libc::msghdr, space: usize) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    let start = msg.msg_control as usize;
    let end = start + msg.msg_controllen.min(space);
    // SAFETY: CMSG_FIRSTHDR reads msg's control fields only; it returns null when the
    // buffer cannot hold a header.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies within the buffer.
        let (level, typ, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        // SAFETY: CMSG_DATA and CMSG_LEN only compute addresses and lengths.
        let (data, header) = unsafe { (libc::CMSG_DATA(cmsg), libc::CMSG_LEN(0) as usize) };
        let data_len = len.saturating_sub(header);
        let within = len >= header && (data as usize) + data_len <= end;
        if !within {
            break;
        }
        if level == libc::SOL_SOCKET && typ == libc::SCM_RIGHTS {
            for i in 0..data_len / size_of::<RawFd>() {
                // SAFETY: the i-th int lies within this header's data, checked above.
                let fd = unsafe { std::ptr::read_unaligned(data.cast::<RawFd>().add(i)) };
                // SAFETY: the kernel installed this fd for us with the message; it is
                // ours alone.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: cmsg is a valid header of msg; CMSG_NXTHDR returns null past the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn an_fd_crosses_a_socketpair_with_its_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = crate::fds::pipe().unwrap();
        send_fd(&a, b"/dev/ptmx", w.as_fd()).unwrap();
        drop(w);
        let mut buf = [0u8; 64];
        let (n, fd) = recv_fd(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"/dev/ptmx");
        let fd = fd.expect("an fd");
        assert!(crate::fds::cloexec(&fd).unwrap());
        std::fs::File::from(fd).write_all(b"through").unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "through");
    }

    #[test]
    fn a_message_without_an_fd_gives_none() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"hi").unwrap();
        let mut buf = [0u8; 8];
        let (n, fd) = recv_fd(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], fd.is_none()), (&b"hi"[..], true));
        let (_r, w) = crate::fds::pipe().unwrap();
        assert!(send_fd(&a, b"", w.as_fd()).is_err());
    }

    #[test]
    fn a_closed_peer_is_an_error_not_sigpipe() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let (_r, w) = crate::fds::pipe().unwrap();
        assert!(send_fd(&a, b"x", w.as_fd()).is_err());
    }
}
