//! What makes a VM restored from a snapshot its own: fresh randomness and the current
//! time. Every copy of a snapshot resumes with the same kernel CRNG state, so without
//! this two restored VMs would hand out the same "random" bytes.

use std::io;
use std::os::fd::AsRawFd;

use skiff_proto::MAX_ENTROPY;

use crate::sys::check;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::Ioctl = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::Ioctl = 0x5207;

/// Mixes `entropy` into the input pool (credited: it comes from the host's CSPRNG),
/// reseeds the CRNG from it, and sets the wall clock if asked.
pub fn reseed(entropy: &[u8], realtime_ns: Option<u64>) -> io::Result<()> {
    if entropy.is_empty() || entropy.len() > MAX_ENTROPY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("expected 1-{MAX_ENTROPY} bytes of entropy"),
        ));
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let words = entropy.len().div_ceil(4);
    let mut info = vec![0u32; 2 + words];
    let bytes = u32::try_from(entropy.len()).unwrap_or(0); // at most MAX_ENTROPY
    info[0] = bytes * 8; // entropy_count, in bits
    info[1] = bytes; // buf_size, in bytes
    for (i, chunk) in entropy.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        info[2 + i] = u32::from_ne_bytes(w);
    }
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // SAFETY: info is a rand_pool_info whose buffer holds buf_size bytes.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) })
        .map_err(|e| io::Error::new(e.kind(), format!("RNDADDENTROPY: {e}")))?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) })
        .map_err(|e| io::Error::new(e.kind(), format!("RNDRESEEDCRNG: {e}")))?;
    if let Some(ns) = realtime_ns {
        let ts = libc::timespec {
            tv_sec: (ns / 1_000_000_000).try_into().unwrap_or(0),
            tv_nsec: (ns % 1_000_000_000).try_into().unwrap_or(0),
        };
        // SAFETY: ts is a valid timespec.
        check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })
            .map_err(|e| io::Error::new(e.kind(), format!("set the clock: {e}")))?;
    }
    Ok(())
}
