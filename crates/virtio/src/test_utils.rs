//! Helpers for playing the guest driver in unit tests.

use virtio_queue::desc::split::{Descriptor, VirtqUsedElem};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use crate::GuestMemoryMmap;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const MEM_SIZE: usize = 16 << 20;

/// 16 MiB of guest memory at address 0.
pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

/// Writes a chain of `(addr, len, writable)` buffers at descriptor index `first`.
pub fn add_chain(
    mock: &MockSplitQueue<'_, GuestMemoryMmap>,
    first: u16,
    bufs: &[(u64, u32, bool)],
) {
    let descs: Vec<RawDescriptor> = bufs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, w))| {
            let last = i + 1 == bufs.len();
            let flags = if last { 0 } else { F_NEXT } | if w { F_WRITE } else { 0 };
            let next = if last { 0 } else { first + i as u16 + 1 };
            desc(addr, len, flags, next)
        })
        .collect();
    mock.add_desc_chains(&descs, first).unwrap();
}

pub fn used_idx(mock: &MockSplitQueue<'_, GuestMemoryMmap>) -> u16 {
    mock.used().idx().load()
}

/// (descriptor head, length) of used element `i`.
pub fn used(mock: &MockSplitQueue<'_, GuestMemoryMmap>, i: usize) -> (u32, u32) {
    let e: VirtqUsedElem = mock.used().ring().ref_at(i).unwrap().load();
    (e.id(), e.len())
}

pub fn read_bytes(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}
