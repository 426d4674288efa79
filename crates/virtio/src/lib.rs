//! virtio device models for skiff microVMs and the virtio-mmio transport that exposes
//! them to a guest.
//!
//! The device models (`block`, `vsock`, `net`) only see a [`virtio_queue::Queue`] and guest
//! memory, never the transport, so the same code runs inside `skiff-vmm` (behind
//! [`transport::MmioTransport`]) and behind a vhost-user backend driven by QEMU. Every
//! address and length a guest hands over is resolved through `vm-memory`, which
//! bounds-checks it against guest RAM; nothing here dereferences a raw guest pointer.

pub mod block;
pub mod device;
pub mod net;
pub mod queue;
pub mod transport;
pub mod vsock;

#[cfg(test)]
mod test_utils;

pub use device::{ActivateError, VirtioDevice};

/// Guest memory as every skiff device model sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// `VIRTIO_F_VERSION_1`: the only feature the modern (v2) transport requires.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// virtio device IDs (virtio 1.2, section 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Socket device.
    pub const VSOCK: u32 = 19;
}
