//! The contract between a device model and its transport.

use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_queue::{Queue, QueueState};
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemoryMmap;

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up fewer queues than the device needs.
    #[error("expected {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    /// The backend (file, socket) could not be prepared.
    #[error("device backend: {0}")]
    Backend(#[from] std::io::Error),
}

/// A virtio device model as seen by a transport.
///
/// The transport owns feature negotiation and queue configuration; once the driver sets
/// DRIVER_OK it hands the queues over with [`VirtioDevice::activate`] and from then on
/// forwards notifications. Methods returning `bool` say whether the guest must be
/// interrupted because used buffers were added.
pub trait VirtioDevice: Send {
    /// virtio device ID (see [`crate::device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers.
    fn features(&self) -> u64;
    /// Features the driver accepted (a subset of [`VirtioDevice::features`]).
    fn ack_features(&mut self, features: u64);
    /// Reads device-specific configuration space; out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device-specific configuration space; ignored by read-only layouts.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device with the driver's queues.
    fn activate(
        &mut self,
        mem: Arc<GuestMemoryMmap>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError>;
    /// Returns the device to its initial state (queues dropped).
    fn reset(&mut self);
    /// Handles a driver notification for queue `index`.
    fn process_queue(&mut self, index: usize) -> bool;
    /// A file descriptor the event loop must watch for readability, if the device has a
    /// host-side backend that produces events on its own (vsock sockets).
    fn backend_fd(&self) -> Option<RawFd> {
        None
    }
    /// Handles readiness of [`VirtioDevice::backend_fd`].
    fn process_backend(&mut self) -> bool {
        false
    }
    /// True once the device gave up on a queue the driver corrupted.
    fn is_broken(&self) -> bool {
        false
    }
    /// Offered the queue-notify eventfds (index = queue) when the transport is built.
    /// A device served by another process (vhost-user) keeps clones to hand over as its
    /// kick fds and returns `true`: the event loop then leaves them alone and
    /// [`VirtioDevice::process_queue`] is never called for them.
    fn take_queue_events(&mut self, _events: &[EventFd]) -> std::io::Result<bool> {
        Ok(false)
    }
    /// Snapshot support: the state of the queues the device holds since activation
    /// (empty before it). `None` means the device cannot be snapshotted, and a
    /// snapshot of a VM holding it fails instead of silently losing its state.
    fn snapshot_queues(&self) -> Option<Vec<QueueState>> {
        None
    }
    /// Called once a restored device has been re-activated with its saved queues;
    /// returns whether the guest must be interrupted (e.g. a vsock transport reset).
    fn restored(&mut self) -> bool {
        false
    }
}
