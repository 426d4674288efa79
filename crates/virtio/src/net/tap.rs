//! A TAP interface opened through /dev/net/tun, non-blocking, with virtio-net headers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::VNET_HDR_LEN;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
// _IOW('T', 202, int), _IOW('T', 216, int), _IOW('T', 208, unsigned int)
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;

/// Why a TAP could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP name {0:?} must be 1..=15 bytes of [A-Za-z0-9_.-]")]
    Name(String),
    #[error("TAP {name}: {op}: {source}")]
    Io {
        name: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (or creates, given CAP_NET_ADMIN) the TAP interface `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        let valid = !name.is_empty()
            && name.len() < libc::IFNAMSIZ
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(TapError::Name(name.into()));
        }
        let err = |op| {
            move |source| TapError::Io {
                name: name.into(),
                op,
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(err("open /dev/net/tun"))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let fd = file.as_raw_fd();
        // SAFETY: `req` is a properly sized, initialized ifreq that outlives the call.
        if unsafe { libc::ioctl(fd, TUNSETIFF as _, &mut req) } < 0 {
            return Err(err("TUNSETIFF")(io::Error::last_os_error()));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: the ioctl reads one int from a valid pointer.
        if unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ as _, &hdr_len) } < 0 {
            return Err(err("TUNSETVNETHDRSZ")(io::Error::last_os_error()));
        }
        // No offloads: the host must not hand the guest GSO frames it did not ask for.
        // SAFETY: TUNSETOFFLOAD takes an integer argument by value.
        if unsafe { libc::ioctl(fd, TUNSETOFFLOAD as _, 0 as libc::c_ulong) } < 0 {
            return Err(err("TUNSETOFFLOAD")(io::Error::last_os_error()));
        }
        Ok(Self {
            file,
            name: name.into(),
        })
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (with its virtio-net header).
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &self.file, buf)
    }

    /// Writes one frame (with its virtio-net header).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &self.file, frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
