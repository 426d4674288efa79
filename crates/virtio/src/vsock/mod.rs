//! virtio-vsock with the host side mediated by UNIX sockets (the Firecracker
//! convention), so no host vsock support is needed.
//!
//! A host program connects to the device's UNIX socket `U`, sends `CONNECT <port>\n`
//! and, once the guest accepts, reads `OK <host port>\n`; from then on the stream is the
//! guest's port. A guest connecting to host port `P` reaches whoever listens on `U_P`.
//! [`muxer::VsockMuxer`] does the routing and credit-based flow control;
//! [`device::Vsock`] moves its packets through the virtqueues.

pub mod connection;
pub mod device;
pub mod muxer;
pub mod packet;

pub use device::Vsock;
pub use muxer::VsockMuxer;

/// The host's context ID.
pub const HOST_CID: u64 = 2;
