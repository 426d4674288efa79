//! Helpers shared by device models for walking a split virtqueue safely.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

/// Takes the next available chain, or `Err` when the driver published an avail index
/// that cannot be right (the device must then stop using the queue).
pub fn next_chain<'m, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'m M,
) -> Result<Option<DescriptorChain<&'m M>>, virtio_queue::Error> {
    let mut iter = queue.iter(mem)?;
    Ok(iter.next())
}

/// Marks `head` used with `len` bytes written; returns whether the driver wants an
/// interrupt. Errors (used ring outside guest memory) are reported as `Err`.
pub fn complete<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    head: u16,
    len: u32,
) -> Result<(), virtio_queue::Error> {
    queue.add_used(mem, head, len)
}

/// Whether the driver asked to be interrupted for the used buffers added so far.
pub fn wants_interrupt<M: GuestMemory>(queue: &mut Queue, mem: &M) -> bool {
    // A needs_notification error means the ring is unreadable: interrupting is harmless.
    queue.needs_notification(mem).unwrap_or(true)
}
