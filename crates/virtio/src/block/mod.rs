//! virtio-blk: a guest disk backed by a host file (a raw image), read-only or
//! read-write, with flush and a serial number (`GET_ID`).
//!
//! [`request`] turns a descriptor chain into a typed request and executes it against
//! the [`Disk`]; [`device`] is the virtio model that feeds it from the request queue.

pub mod device;
pub mod request;

pub use device::Block;
pub use request::{Disk, DiskConfig, DiskError};

/// Sector size used by the virtio-blk protocol, whatever the backing file's.
pub const SECTOR_SIZE: u64 = 512;
/// Longest serial `GET_ID` returns (virtio 1.2, 5.2.6).
pub const SERIAL_LEN: usize = 20;

/// Feature: the device is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature: the device supports the flush command.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
