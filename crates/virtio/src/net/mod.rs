//! virtio-net over a host TAP device: frames the guest sends are written to the TAP,
//! frames the host stack routes to the TAP are delivered to the guest.
//!
//! The TAP carries the 12-byte virtio-net header itself (`IFF_VNET_HDR`), so headers
//! pass through unchanged; no offloads are offered, so the guest never sends GSO
//! frames and the host never receives any. [`tap`] opens the interface, [`device`] is
//! the virtio model.

pub mod device;
pub mod tap;

pub use device::Net;
pub use tap::Tap;

/// Size of `virtio_net_hdr_v1` (with `num_buffers`), the header of every frame.
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame plus header accepted in either direction.
pub const MAX_FRAME: usize = 65_535 + VNET_HDR_LEN;
/// Feature: the device has a MAC address in config space.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
