//! virtio-mmio, version 2 (virtio 1.2, section 4.2.2): a 4 KiB register window per
//! device plus an interrupt line.
//!
//! The transport negotiates features and collects queue addresses; queue notifications
//! arrive as eventfds (registered with KVM as ioeventfds, or signalled by
//! [`MmioTransport::write`] when that is unavailable) and interrupts leave through an
//! [`IrqTrigger`] (an irqfd). A driver that misbehaves gets `DEVICE_NEEDS_RESET`, never a
//! panic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tracing::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{GuestMemoryMmap, VirtioDevice, VIRTIO_F_VERSION_1};

/// Size of the register window of one device.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x534b_4946; // "SKIF"

/// Offset of the queue-notify register (where an ioeventfd belongs).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x050;
const CONFIG_OFFSET: u64 = 0x100;

/// Interrupt status bit: a queue has new used buffers.
pub const INT_USED_RING: u32 = 1;
/// Interrupt status bit: configuration (or device status) changed.
pub const INT_CONFIG: u32 = 2;

mod status {
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Raises the device's interrupt line and remembers why (the InterruptStatus register).
#[derive(Debug)]
pub struct IrqTrigger {
    status: AtomicU32,
    evt: EventFd,
}

impl IrqTrigger {
    /// A trigger signalling `evt` (usually registered with KVM as an irqfd).
    pub fn new(evt: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            evt,
        }
    }

    /// A trigger with a fresh eventfd.
    pub fn with_new_eventfd() -> std::io::Result<Self> {
        Ok(Self::new(EventFd::new(EFD_NONBLOCK)?))
    }

    /// The eventfd to register as an irqfd.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// Sets `bits` in InterruptStatus and raises the line.
    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.evt.write(1) {
            warn!("virtio-mmio: cannot raise interrupt: {e}");
        }
    }

    /// Current InterruptStatus.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// One virtio-mmio device: registers, queue configuration, and the model behind them.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Arc<GuestMemoryMmap>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    irq: Arc<IrqTrigger>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    /// Wraps `device`; queue notifications are delivered through fresh eventfds.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: Arc<GuestMemoryMmap>,
        irq: Arc<IrqTrigger>,
    ) -> std::io::Result<Self> {
        let queue_evts = device
            .queue_max_sizes()
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        let queues = Self::fresh_queues(device.as_ref());
        Ok(Self {
            device,
            mem,
            queues,
            queue_evts,
            irq,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        })
    }

    fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
        device
            .queue_max_sizes()
            .iter()
            // Sizes come from our own device models; a bad one yields a queue of 1 entry.
            .filter_map(|&max| Queue::new(max).or_else(|_| Queue::new(1)).ok())
            .collect()
    }

    /// Eventfds signalled when the driver notifies queue `i` (index = queue index).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The interrupt trigger of this device.
    pub fn irq(&self) -> &Arc<IrqTrigger> {
        &self.irq
    }

    /// The device model (for the event loop: backend fd).
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// Whether the driver has started the device.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Handles a notification of queue `index` (from its eventfd).
    pub fn notify_queue(&mut self, index: usize) {
        if !self.activated || self.status & status::NEEDS_RESET != 0 {
            return;
        }
        let interrupt = self.device.process_queue(index);
        self.after_device_work(interrupt);
    }

    /// Handles readiness of the device's backend fd.
    pub fn process_backend(&mut self) {
        if !self.activated || self.status & status::NEEDS_RESET != 0 {
            return;
        }
        let interrupt = self.device.process_backend();
        self.after_device_work(interrupt);
    }

    fn after_device_work(&mut self, interrupt: bool) {
        if interrupt {
            self.irq.trigger(INT_USED_RING);
        }
        if self.device.is_broken() && self.status & status::NEEDS_RESET == 0 {
            warn!(
                "virtio-mmio: device type {} is broken, needs reset",
                self.device.device_type()
            );
            self.status |= status::NEEDS_RESET;
            self.irq.trigger(INT_CONFIG);
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        // Queues may only be configured before DRIVER_OK.
        if self.activated {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Guest read of `data.len()` bytes at `offset` within the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            warn!(
                "virtio-mmio: bad register read at {offset:#x} len {}",
                data.len()
            );
            data.fill(0);
            return;
        }
        let value = match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR_ID,
            0x010 => {
                let features = self.device.features() | VIRTIO_F_VERSION_1;
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            0x034 => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            0x044 => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            0x060 => self.irq.status(),
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => {
                debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Guest write of `data` at `offset` within the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.write_config(offset - CONFIG_OFFSET, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn!(
                "virtio-mmio: bad register write at {offset:#x} len {}",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            warn!("virtio-mmio: unaligned register write at {offset:#x}");
            return;
        }
        let v = u32::from_le_bytes(bytes);
        match offset {
            0x014 => self.device_features_sel = v,
            0x020 => {
                if self.status & status::FEATURES_OK != 0 {
                    return; // features are frozen once accepted
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
            }
            0x024 => self.driver_features_sel = v,
            0x030 => self.queue_sel = v,
            0x038 => {
                if let Some(q) = self.selected_queue() {
                    // Sizes above the maximum or not a power of two leave the queue invalid;
                    // activation then refuses it.
                    q.set_size(u16::try_from(v).unwrap_or(0));
                }
            }
            0x044 => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            QUEUE_NOTIFY_OFFSET => {
                // Without an ioeventfd the notification arrives here: forward it.
                if let Some(evt) = self.queue_evts.get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            0x064 => self.irq.ack(v),
            0x070 => self.set_status(v),
            0x080 => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            0x084 => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            0x090 => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            0x094 => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            0x0a0 => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            0x0a4 => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            _ => debug!("virtio-mmio: write of unknown register {offset:#x}"),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // The driver may only add bits (virtio 1.2, 2.1.2), except through reset.
        if v & self.status != self.status {
            warn!(
                "virtio-mmio: driver cleared status bits ({:#x} -> {v:#x})",
                self.status
            );
            self.status |= status::FAILED;
            return;
        }
        let new_bits = v & !self.status;
        if new_bits & status::FEATURES_OK != 0 {
            let offered = self.device.features() | VIRTIO_F_VERSION_1;
            let ok = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0
                && self.status & status::DRIVER != 0;
            if !ok {
                warn!(
                    "virtio-mmio: refusing driver features {:#x} (offered {offered:#x})",
                    self.driver_features
                );
                // Leave FEATURES_OK clear: the driver reads it back and gives up.
                self.status = v & !status::FEATURES_OK;
                return;
            }
            self.device.ack_features(self.driver_features);
        }
        self.status = v;
        if new_bits & status::DRIVER_OK != 0 && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        if self.status & status::FEATURES_OK == 0 {
            warn!("virtio-mmio: DRIVER_OK without FEATURES_OK");
            self.status |= status::NEEDS_RESET;
            return;
        }
        let mem = self.mem.as_ref();
        if let Some(i) = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(mem))
        {
            warn!("virtio-mmio: queue {i} is not valid (size or addresses)");
            self.status |= status::NEEDS_RESET;
            self.irq.trigger(INT_CONFIG);
            return;
        }
        let queues = std::mem::replace(&mut self.queues, Self::fresh_queues(self.device.as_ref()));
        match self.device.activate(self.mem.clone(), queues) {
            Ok(()) => {
                self.activated = true;
                // Buffers the driver queued before DRIVER_OK must not wait for a kick.
                for i in 0..self.queue_evts.len() {
                    self.notify_queue(i);
                }
            }
            Err(e) => {
                warn!("virtio-mmio: activation failed: {e}");
                self.status |= status::NEEDS_RESET;
                self.irq.trigger(INT_CONFIG);
            }
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        self.queues = Self::fresh_queues(self.device.as_ref());
        self.status = 0;
        self.activated = false;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.irq.ack(u32::MAX);
    }
}
