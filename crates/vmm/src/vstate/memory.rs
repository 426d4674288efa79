//! Guest RAM: mappings split around the MMIO hole. Anonymous private memory by default;
//! one memfd mapped shared when a vhost-user device's backend process must map the
//! same RAM (it receives the memfd with the memory table).

use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress};

use crate::arch::layout::ram_ranges;
use crate::GuestMemoryMmap;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} MiB is not supported (1..=65536 MiB)")]
    Size(u64),
    #[error("cannot map guest memory: {0}")]
    Map(String),
    #[error("cannot create shared guest memory (memfd): {0}")]
    Memfd(std::io::Error),
}

/// How guest RAM is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory, visible to this process only.
    Private,
    /// A memfd mapped shared, so other processes (vhost-user backends) can map it.
    SharedMemfd,
}

fn ranges(mib: u64) -> Result<Vec<(GuestAddress, usize)>, MemoryError> {
    if mib == 0 || mib > 65536 {
        return Err(MemoryError::Size(mib));
    }
    ram_ranges(mib << 20)
        .into_iter()
        .map(|(start, len)| usize::try_from(len).map(|len| (GuestAddress(start), len)))
        .collect::<Result<_, _>>()
        .map_err(|_| MemoryError::Size(mib))
}

/// Maps `mib` MiB of guest RAM.
pub fn create_guest_memory(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    create_guest_memory_with(mib, Backing::Private)
}

/// Maps `mib` MiB of guest RAM with the given backing.
pub fn create_guest_memory_with(
    mib: u64,
    backing: Backing,
) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges = ranges(mib)?;
    match backing {
        Backing::Private => {
            GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map(e.to_string()))
        }
        Backing::SharedMemfd => {
            let file = memfd("skiff-guest-ram")?;
            file.set_len(mib << 20).map_err(MemoryError::Memfd)?;
            let mut offset = 0u64;
            let mut with_files = Vec::with_capacity(ranges.len());
            for (start, len) in ranges {
                let f = file.try_clone().map_err(MemoryError::Memfd)?;
                with_files.push((start, len, Some(FileOffset::new(f, offset))));
                offset += len as u64;
            }
            GuestMemoryMmap::from_ranges_with_files(with_files)
                .map_err(|e| MemoryError::Map(e.to_string()))
        }
    }
}

fn memfd(name: &str) -> Result<File, MemoryError> {
    let name = std::ffi::CString::new(name).map_err(|e| MemoryError::Memfd(e.into()))?;
    // SAFETY: memfd_create with a valid NUL-terminated name; the returned fd is new and
    // owned by the File below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    #[test]
    fn shared_memory_is_file_backed_and_usable() {
        let mem = create_guest_memory_with(4, Backing::SharedMemfd).unwrap();
        assert!(mem.iter().all(|r| r.file_offset().is_some()));
        mem.write_obj(0x1234_5678u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0x1234_5678
        );
        let private = create_guest_memory(4).unwrap();
        assert!(private.iter().all(|r| r.file_offset().is_none()));
    }
}
