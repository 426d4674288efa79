//! Guest RAM: anonymous mappings split around the MMIO hole.

use vm_memory::GuestAddress;

use crate::arch::layout::ram_ranges;
use crate::GuestMemoryMmap;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} MiB is not supported (1..=65536 MiB)")]
    Size(u64),
    #[error("cannot map guest memory: {0}")]
    Map(String),
}

/// Maps `mib` MiB of guest RAM.
pub fn create_guest_memory(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if mib == 0 || mib > 65536 {
        return Err(MemoryError::Size(mib));
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(mib << 20)
        .into_iter()
        .map(|(start, len)| usize::try_from(len).map(|len| (GuestAddress(start), len)))
        .collect::<Result<_, _>>()
        .map_err(|_| MemoryError::Size(mib))?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map(e.to_string()))
}
