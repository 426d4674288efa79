//! The first serial port (ttyS0) as the agent's channel to the host, for VMs that are
//! saved and restored with QEMU migration (QEMU cannot migrate a vhost-user vsock
//! device, and the one device of this guest kernel that QEMU can migrate and that
//! carries bytes both ways is the UART). Asked for with [`SERIAL_SWITCH`] on the
//! kernel command line. ttyS0 is also the kernel console: once the agent takes the
//! line it turns console messages off and sends its own stdio to /dev/null, so the
//! line carries the protocol alone (the host skips the boot messages before
//! [`SERIAL_READY`]).
//!
//! A serial line has no connect or hang-up of its own: the agent announces that it
//! waits ([`SERIAL_READY`], the moment a snapshot template is saved) and starts a
//! session when a host sends [`SERIAL_GO`]. A VM restored from the snapshot resumes
//! right there, so each copy greets its own new host.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use skiff_proto::{SERIAL_GO, SERIAL_READY, SERIAL_SWITCH};

use crate::sys::check;

pub fn requested() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .map(|c| c.split_ascii_whitespace().any(|w| w == SERIAL_SWITCH))
        .unwrap_or(false)
}

/// Keeps the kernel's and the agent's own messages off the line.
pub fn silence_console() -> io::Result<()> {
    // SYSLOG_ACTION_CONSOLE_OFF: printk stops writing to consoles.
    // SAFETY: klogctl with a null buffer and length 0 for this action.
    check(unsafe { libc::klogctl(6, std::ptr::null_mut(), 0) })?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 of an open descriptor onto a standard one.
        check(unsafe { libc::dup2(null.as_raw_fd(), fd) })?;
    }
    Ok(())
}

pub struct Port(File);

impl Port {
    /// Opens ttyS0 raw: no echo, no line editing, no translation, 8 bits.
    pub fn open() -> io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/ttyS0")?;
        // SAFETY: termios is plain old data; tcgetattr fills it in.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: f is an open tty and t a valid termios.
        check(unsafe { libc::tcgetattr(f.as_raw_fd(), &mut t) })?;
        // SAFETY: t is a valid termios.
        unsafe { libc::cfmakeraw(&mut t) };
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: as above.
        check(unsafe { libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) })?;
        Ok(Self(f))
    }

    /// Says the agent is ready, then waits for a host's go.
    pub fn wait_for_host(&mut self) -> io::Result<()> {
        self.0.write_all(SERIAL_READY)?;
        let mut b = [0u8; 1];
        loop {
            if self.0.read(&mut b)? == 1 && b[0] == SERIAL_GO {
                return Ok(());
            }
        }
    }
}

impl crate::session::Conn for Port {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }

    /// A serial line cannot be hung up from here.
    fn shutdown(&self) {}
}

impl Read for Port {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Port {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
