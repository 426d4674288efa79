//! AF_VSOCK streams: the agent's channel to the host (`serial` is the other).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys::check;

pub struct Listener(OwnedFd);

pub struct Stream(OwnedFd);

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned immediately below.
    let fd =
        check(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;

impl Listener {
    pub fn bind(port: u32) -> io::Result<Self> {
        let fd = socket()?;
        let a = addr(libc::VMADDR_CID_ANY, port);
        // SAFETY: a is a valid sockaddr_vm of ADDR_LEN bytes.
        check(unsafe { libc::bind(fd.as_raw_fd(), (&raw const a).cast(), ADDR_LEN) })?;
        // SAFETY: fd is a bound socket.
        check(unsafe { libc::listen(fd.as_raw_fd(), 16) })?;
        Ok(Self(fd))
    }

    pub fn accept(&self) -> io::Result<Stream> {
        // SAFETY: null address pointers are allowed by accept4.
        let fd = check(unsafe {
            libc::accept4(
                self.0.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        })?;
        // SAFETY: fd was just returned by accept4 and is ours.
        Ok(Stream(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl Stream {
    pub fn connect(cid: u32, port: u32) -> io::Result<Self> {
        let fd = socket()?;
        let a = addr(cid, port);
        // SAFETY: a is a valid sockaddr_vm of ADDR_LEN bytes.
        check(unsafe { libc::connect(fd.as_raw_fd(), (&raw const a).cast(), ADDR_LEN) })?;
        Ok(Self(fd))
    }
}

impl crate::session::Conn for Stream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }

    /// Ends both directions, which wakes a thread blocked reading this connection.
    fn shutdown(&self) {
        // SAFETY: shutdown on a socket fd we own; errors are irrelevant here.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for reads of buf.len() bytes; MSG_NOSIGNAL avoids SIGPIPE.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
