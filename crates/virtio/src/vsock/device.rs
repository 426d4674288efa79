//! The virtio-vsock device model: moves packets between the guest's rx/tx queues and
//! the [`VsockMuxer`].

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use tracing::{debug, warn};
use virtio_queue::{Queue, QueueOwnedT, Reader, Writer};

use super::packet::{PacketHeader, HEADER_LEN, MAX_PAYLOAD};
use super::VsockMuxer;
use crate::block::device::read_config_bytes;
use crate::device::{ActivateError, VirtioDevice};
use crate::queue::{complete, next_chain, wants_interrupt};
use crate::{device_type, GuestMemoryMmap, VIRTIO_F_VERSION_1};

/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];
/// Queue indices.
pub const RX_QUEUE: usize = 0;
/// Guest-to-host packets.
pub const TX_QUEUE: usize = 1;
/// Transport events (unused: no live migration).
pub const EVENT_QUEUE: usize = 2;

/// Consumes every packet the guest queued on `tx`. Malformed packets (short header,
/// payload longer than announced buffers or [`MAX_PAYLOAD`], memory outside the guest)
/// are dropped. Returns whether the driver wants an interrupt.
pub fn process_tx(
    muxer: &mut VsockMuxer,
    tx: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<bool, virtio_queue::Error> {
    let mut used_any = false;
    let mut payload = Vec::new();
    while let Some(chain) = next_chain(tx, mem)? {
        let head = chain.head_index();
        match Reader::new(mem, chain) {
            Ok(mut reader) => {
                if let Some(hdr) = read_packet(&mut reader, &mut payload) {
                    muxer.handle_guest_packet(&hdr, &payload);
                }
            }
            Err(e) => debug!("vsock: tx chain outside guest memory: {e}"),
        }
        complete(tx, mem, head, 0)?;
        used_any = true;
    }
    Ok(used_any && wants_interrupt(tx, mem))
}

fn read_packet(reader: &mut Reader<'_>, payload: &mut Vec<u8>) -> Option<PacketHeader> {
    let mut raw = [0u8; HEADER_LEN];
    if reader.read_exact(&mut raw).is_err() {
        debug!("vsock: short tx header");
        return None;
    }
    let hdr = PacketHeader::decode(&raw);
    let len = hdr.len as usize;
    if len > MAX_PAYLOAD || len > reader.available_bytes() {
        debug!("vsock: tx payload of {len} bytes does not fit");
        return None;
    }
    payload.resize(len, 0);
    reader.read_exact(payload).ok()?;
    Some(hdr)
}

/// Fills guest receive buffers with whatever the muxer has for the guest. Returns
/// whether the driver wants an interrupt.
pub fn fill_rx(
    muxer: &mut VsockMuxer,
    rx: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<bool, virtio_queue::Error> {
    let mut used_any = false;
    let mut payload = Vec::new();
    while muxer.has_rx_work() {
        let Some(chain) = next_chain(rx, mem)? else {
            muxer.set_rx_starved(true);
            break;
        };
        let head = chain.head_index();
        let mut writer = match Writer::new(mem, chain) {
            Ok(w) if w.available_bytes() >= HEADER_LEN => w,
            Ok(_) | Err(_) => {
                debug!("vsock: unusable rx buffer");
                complete(rx, mem, head, 0)?;
                used_any = true;
                continue;
            }
        };
        let room = (writer.available_bytes() - HEADER_LEN).min(MAX_PAYLOAD);
        let Some(hdr) = muxer.next_packet(room, &mut payload) else {
            rx.go_to_previous_position();
            break;
        };
        let written = writer
            .write_all(&hdr.encode())
            .and_then(|()| writer.write_all(&payload));
        if written.is_err() {
            warn!("vsock: rx buffer write failed, packet lost");
        }
        let len = u32::try_from(writer.bytes_written()).unwrap_or(u32::MAX);
        complete(rx, mem, head, len)?;
        used_any = true;
    }
    Ok(used_any && wants_interrupt(rx, mem))
}

/// A virtio-vsock device whose host side is a [`VsockMuxer`].
#[derive(Debug)]
pub struct Vsock {
    muxer: VsockMuxer,
    mem: Option<Arc<GuestMemoryMmap>>,
    queues: Vec<Queue>,
    broken: bool,
}

impl Vsock {
    /// A device for the guest behind `muxer`.
    pub fn new(muxer: VsockMuxer) -> Self {
        Self { muxer, mem: None, queues: Vec::new(), broken: false }
    }

    /// The host side.
    pub fn muxer(&self) -> &VsockMuxer {
        &self.muxer
    }

    fn run(&mut self, f: impl FnOnce(&mut VsockMuxer, &mut [Queue], &GuestMemoryMmap) -> Result<bool, virtio_queue::Error>) -> bool {
        if self.broken || self.queues.len() < 2 {
            return false;
        }
        let Some(mem) = self.mem.as_ref() else { return false };
        match f(&mut self.muxer, &mut self.queues, mem) {
            Ok(interrupt) => interrupt,
            Err(e) => {
                warn!("vsock: queue unusable: {e}");
                self.broken = true;
                true
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.muxer.guest_cid().to_le_bytes(), offset, data);
    }

    fn activate(
        &mut self,
        mem: Arc<GuestMemoryMmap>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if queues.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount { expected: QUEUE_SIZES.len(), got: queues.len() });
        }
        self.queues = queues;
        self.mem = Some(mem);
        self.broken = false;
        Ok(())
    }

    fn reset(&mut self) {
        self.queues.clear();
        self.mem = None;
        self.broken = false;
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match index {
            RX_QUEUE => self.run(|muxer, queues, mem| {
                muxer.set_rx_starved(false);
                fill_rx(muxer, &mut queues[RX_QUEUE], mem)
            }),
            TX_QUEUE => self.run(|muxer, queues, mem| {
                let tx = process_tx(muxer, &mut queues[TX_QUEUE], mem)?;
                let rx = fill_rx(muxer, &mut queues[RX_QUEUE], mem)?;
                Ok(tx || rx)
            }),
            _ => false,
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.muxer.epoll_fd())
    }

    fn process_backend(&mut self) -> bool {
        self.run(|muxer, queues, mem| {
            muxer.process_host_events();
            fill_rx(muxer, &mut queues[RX_QUEUE], mem)
        })
    }

    fn is_broken(&self) -> bool {
        self.broken
    }
}
