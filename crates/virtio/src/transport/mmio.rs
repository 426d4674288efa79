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

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use virtio_queue::{Queue, QueueState, QueueT};
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
    #[cfg(test)]
    pub const ACKNOWLEDGE_FOR_TEST: u32 = 1;
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

/// A split virtqueue's configuration and ring positions, as saved in a snapshot
/// (virtio-queue's `QueueState`, which has no serde support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx: bool,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> Self {
        Self {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
        }
    }
}

/// Register state of one virtio-mmio device plus its queues, as saved in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportState {
    pub device_type: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub status: u32,
    pub config_generation: u32,
    pub interrupt_status: u32,
    pub activated: bool,
    /// The device's queues once activated, else the transport's (being configured).
    pub queues: Vec<QueueSnapshot>,
}

/// Why a transport cannot be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum TransportStateError {
    #[error("virtio device type {0} does not support snapshots")]
    Unsupported(u32),
    #[error("saved device type {saved} does not match device type {actual}")]
    DeviceType { saved: u32, actual: u32 },
    #[error("saved state has {saved} queues, the device has {actual}")]
    QueueCount { saved: usize, actual: usize },
    #[error("queue {index}: {why}")]
    Queue { index: usize, why: String },
    #[error("re-activating the device: {0}")]
    Activate(#[from] crate::ActivateError),
}

/// One virtio-mmio device: registers, queue configuration, and the model behind them.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Arc<GuestMemoryMmap>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    /// The device consumes `queue_evts` itself (see [`VirtioDevice::take_queue_events`]).
    external_notify: bool,
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
        mut device: Box<dyn VirtioDevice>,
        mem: Arc<GuestMemoryMmap>,
        irq: Arc<IrqTrigger>,
    ) -> std::io::Result<Self> {
        let queue_evts = device
            .queue_max_sizes()
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        let queues = Self::fresh_queues(device.as_ref());
        let external_notify = device.take_queue_events(&queue_evts)?;
        Ok(Self {
            device,
            mem,
            queues,
            queue_evts,
            external_notify,
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

    /// Whether the device takes queue notifications itself (the event loop must not
    /// consume [`MmioTransport::queue_events`]).
    pub fn device_takes_notifications(&self) -> bool {
        self.external_notify
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

    /// Handles readiness of the device's backend fd. Always forwarded, even before
    /// activation or once broken: the device must consume or mute the readiness, or
    /// the event loop would spin.
    pub fn process_backend(&mut self) {
        let interrupt = self.device.process_backend();
        if self.activated && self.status & status::NEEDS_RESET == 0 {
            self.after_device_work(interrupt);
        }
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

    /// Saves registers and queue positions. Fails for a device model without
    /// snapshot support. The caller must hold the device still (no concurrent
    /// notifications) for the state to be consistent.
    pub fn save_state(&self) -> Result<TransportState, TransportStateError> {
        let device_type = self.device.device_type();
        let device_queues = self
            .device
            .snapshot_queues()
            .ok_or(TransportStateError::Unsupported(device_type))?;
        let queues = if self.activated {
            device_queues
        } else {
            self.queues.iter().map(Queue::state).collect()
        };
        Ok(TransportState {
            device_type,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            status: self.status,
            config_generation: self.config_generation,
            interrupt_status: self.irq.status(),
            activated: self.activated,
            queues: queues.into_iter().map(QueueSnapshot::from).collect(),
        })
    }

    /// Restores a freshly created transport from `state` (hostile: every queue is
    /// validated against the device's sizes and guest memory). An activated device is
    /// re-activated with its saved queues and told it was restored.
    pub fn restore_state(&mut self, state: &TransportState) -> Result<(), TransportStateError> {
        let actual = self.device.device_type();
        if state.device_type != actual {
            return Err(TransportStateError::DeviceType {
                saved: state.device_type,
                actual,
            });
        }
        let max_sizes = self.device.queue_max_sizes().to_vec();
        if state.queues.len() != max_sizes.len() {
            return Err(TransportStateError::QueueCount {
                saved: state.queues.len(),
                actual: max_sizes.len(),
            });
        }
        let mut queues = Vec::with_capacity(max_sizes.len());
        for (index, (saved, &max)) in state.queues.iter().zip(&max_sizes).enumerate() {
            let bad = |why: String| TransportStateError::Queue { index, why };
            if saved.max_size != max {
                return Err(bad(format!(
                    "maximum size {} differs from the device's {max}",
                    saved.max_size
                )));
            }
            let q = Queue::try_from(QueueState::from(*saved)).map_err(|e| bad(e.to_string()))?;
            if state.activated && q.ready() && !q.is_valid(self.mem.as_ref()) {
                return Err(bad("rings outside guest memory".into()));
            }
            queues.push(q);
        }
        let offered = self.device.features() | VIRTIO_F_VERSION_1;
        if state.driver_features & !offered != 0 {
            return Err(TransportStateError::Queue {
                index: 0,
                why: format!(
                    "driver features {:#x} were never offered ({offered:#x})",
                    state.driver_features
                ),
            });
        }
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.driver_features = state.driver_features;
        self.queue_sel = state.queue_sel;
        self.status = state.status;
        self.config_generation = state.config_generation;
        if state.status & status::FEATURES_OK != 0 {
            self.device.ack_features(state.driver_features);
        }
        if state.activated {
            self.device.activate(self.mem.clone(), queues)?;
            self.activated = true;
            if self.device.restored() {
                self.irq.trigger(INT_USED_RING);
            }
            // Requests the driver queued but the device had not yet taken.
            for evt in &self.queue_evts {
                let _ = evt.write(1);
            }
        } else {
            self.queues = queues;
        }
        // Not re-raised: the restored irqchip state says whether the line is pending.
        self.irq
            .status
            .fetch_or(state.interrupt_status, Ordering::SeqCst);
        Ok(())
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
                // Buffers the driver queued before DRIVER_OK must not wait for a kick;
                // the device thread picks them up (vCPU threads do no device I/O).
                for evt in &self.queue_evts {
                    let _ = evt.write(1);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use vm_memory::GuestAddress;

    use super::*;
    use crate::ActivateError;

    /// A device that counts activations and queue notifications.
    #[derive(Default)]
    struct Dummy {
        activations: Arc<AtomicUsize>,
        notified: Arc<AtomicUsize>,
        config: [u8; 8],
        queues: Vec<Queue>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1 << 3
        }
        fn ack_features(&mut self, _features: u64) {}
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            crate::block::device::read_config_bytes(&self.config, offset, data);
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            if let Some(dst) = self
                .config
                .get_mut(offset as usize..offset as usize + data.len())
            {
                dst.copy_from_slice(data);
            }
        }
        fn activate(
            &mut self,
            _mem: Arc<GuestMemoryMmap>,
            queues: Vec<Queue>,
        ) -> Result<(), ActivateError> {
            assert_eq!(queues.len(), 2);
            self.activations.fetch_add(1, Ordering::SeqCst);
            self.queues = queues;
            Ok(())
        }
        fn reset(&mut self) {
            self.queues.clear();
        }
        fn snapshot_queues(&self) -> Option<Vec<QueueState>> {
            Some(self.queues.iter().map(Queue::state).collect())
        }
        fn process_queue(&mut self, _index: usize) -> bool {
            self.notified.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    fn transport() -> (MmioTransport, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let dev = Dummy::default();
        let (a, n) = (dev.activations.clone(), dev.notified.clone());
        let irq = Arc::new(IrqTrigger::with_new_eventfd().unwrap());
        (MmioTransport::new(Box::new(dev), mem, irq).unwrap(), a, n)
    }

    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn setup_queue(t: &mut MmioTransport, q: u32, base: u64) {
        wr(t, 0x30, q);
        wr(t, 0x38, 16);
        wr(t, 0x80, base as u32);
        wr(t, 0x90, (base + 0x100) as u32);
        wr(t, 0xa0, (base + 0x200) as u32);
        wr(t, 0x44, 1);
    }

    fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
        wr(t, 0x70, status::ACKNOWLEDGE_FOR_TEST);
        wr(t, 0x70, status::ACKNOWLEDGE_FOR_TEST | status::DRIVER);
        wr(t, 0x24, 0);
        wr(t, 0x20, features as u32);
        wr(t, 0x24, 1);
        wr(t, 0x20, (features >> 32) as u32);
        wr(
            t,
            0x70,
            status::ACKNOWLEDGE_FOR_TEST | status::DRIVER | status::FEATURES_OK,
        );
        rd(t, 0x70)
    }

    fn activated() -> MmioTransport {
        let (mut t, _, _) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 0x1000);
        setup_queue(&mut t, 1, 0x2000);
        wr(
            &mut t,
            0x70,
            status::ACKNOWLEDGE_FOR_TEST | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert!(t.is_activated());
        t
    }

    #[test]
    fn saved_state_restores_into_a_fresh_transport() {
        let t = activated();
        t.irq().trigger(INT_USED_RING);
        let state = t.save_state().unwrap();
        assert!(state.activated);
        assert_eq!(state.queues.len(), 2);
        assert_eq!(state.queues[1].desc_table, 0x2000);
        let (mut fresh, activations, _) = transport();
        fresh.restore_state(&state).unwrap();
        assert!(fresh.is_activated());
        assert_eq!(activations.load(Ordering::SeqCst), 1);
        assert_eq!(fresh.save_state().unwrap(), state);
        assert_eq!(rd(&mut fresh, 0x60), INT_USED_RING);
        // Queues the driver queued before the snapshot are looked at again.
        assert_eq!(fresh.queue_events()[0].read().unwrap(), 1);
    }

    #[test]
    fn hostile_saved_state_is_refused() {
        let state = activated().save_state().unwrap();
        let refuse = |edit: &dyn Fn(&mut TransportState)| {
            let mut bad = state.clone();
            edit(&mut bad);
            let (mut fresh, activations, _) = transport();
            assert!(fresh.restore_state(&bad).is_err(), "{bad:?}");
            assert_eq!(activations.load(Ordering::SeqCst), 0);
        };
        refuse(&|s| s.device_type = 2);
        refuse(&|s| {
            s.queues.pop();
        });
        refuse(&|s| s.queues[0].max_size = 1024);
        refuse(&|s| s.queues[0].size = 3);
        refuse(&|s| s.queues[1].used_ring = 0xffff_f000);
        refuse(&|s| s.driver_features |= 1 << 40);
    }

    #[test]
    fn a_device_without_snapshot_support_is_named() {
        struct Plain;
        impl VirtioDevice for Plain {
            fn device_type(&self) -> u32 {
                7
            }
            fn queue_max_sizes(&self) -> &[u16] {
                &[4]
            }
            fn features(&self) -> u64 {
                0
            }
            fn ack_features(&mut self, _: u64) {}
            fn read_config(&self, _: u64, _: &mut [u8]) {}
            fn activate(
                &mut self,
                _: Arc<GuestMemoryMmap>,
                _: Vec<Queue>,
            ) -> Result<(), ActivateError> {
                Ok(())
            }
            fn reset(&mut self) {}
            fn process_queue(&mut self, _: usize) -> bool {
                false
            }
        }
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let irq = Arc::new(IrqTrigger::with_new_eventfd().unwrap());
        let t = MmioTransport::new(Box::new(Plain), mem, irq).unwrap();
        assert!(matches!(
            t.save_state(),
            Err(TransportStateError::Unsupported(7))
        ));
    }

    #[test]
    fn identifies_itself() {
        let (mut t, _, _) = transport();
        assert_eq!(rd(&mut t, 0x0), MAGIC);
        assert_eq!(rd(&mut t, 0x4), 2);
        assert_eq!(rd(&mut t, 0x8), 42);
        wr(&mut t, 0x14, 1);
        assert_eq!(rd(&mut t, 0x10), 1, "VERSION_1 is bit 32");
        wr(&mut t, 0x30, 1);
        assert_eq!(rd(&mut t, 0x34), 16);
        wr(&mut t, 0x30, 9);
        assert_eq!(rd(&mut t, 0x34), 0, "missing queue has size 0");
        // Odd sizes and offsets never panic.
        let mut one = [0xffu8; 1];
        t.read(0x3, &mut one);
        assert_eq!(one, [0]);
        t.write(0x70, &[1, 2]);
        let mut eight = [0u8; 8];
        t.read(u64::MAX - 3, &mut eight);
    }

    #[test]
    fn full_handshake_activates_and_forwards_notifications() {
        let (mut t, activations, notified) = transport();
        assert_ne!(
            negotiate(&mut t, VIRTIO_F_VERSION_1) & status::FEATURES_OK,
            0
        );
        setup_queue(&mut t, 0, 0x1000);
        setup_queue(&mut t, 1, 0x2000);
        wr(
            &mut t,
            0x70,
            status::ACKNOWLEDGE_FOR_TEST | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_eq!(activations.load(Ordering::SeqCst), 1);
        assert!(t.is_activated());
        let before = notified.load(Ordering::SeqCst);
        t.notify_queue(1);
        assert_eq!(notified.load(Ordering::SeqCst), before + 1);
        assert_ne!(rd(&mut t, 0x60) & INT_USED_RING, 0);
        wr(&mut t, 0x64, INT_USED_RING);
        assert_eq!(rd(&mut t, 0x60), 0);
        // Queue registers are frozen after DRIVER_OK.
        wr(&mut t, 0x30, 0);
        wr(&mut t, 0x38, 2);
        // Reset returns to the initial state.
        wr(&mut t, 0x70, 0);
        assert_eq!(rd(&mut t, 0x70), 0);
        assert!(!t.is_activated());
    }

    #[test]
    fn refuses_unoffered_features_and_legacy_drivers() {
        let (mut t, _, _) = transport();
        assert_eq!(
            negotiate(&mut t, VIRTIO_F_VERSION_1 | 1 << 20) & status::FEATURES_OK,
            0
        );
        let (mut t, _, _) = transport();
        assert_eq!(
            negotiate(&mut t, 1 << 3) & status::FEATURES_OK,
            0,
            "VERSION_1 required"
        );
    }

    #[test]
    fn invalid_queue_sets_needs_reset_instead_of_activating() {
        let (mut t, activations, _) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 0x1000);
        // Queue 1: descriptor table outside guest memory.
        setup_queue(&mut t, 1, 0x10_0000 - 0x80);
        wr(&mut t, 0x30, 1);
        wr(&mut t, 0x80, 0xffff_f000);
        wr(
            &mut t,
            0x70,
            status::ACKNOWLEDGE_FOR_TEST | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_eq!(activations.load(Ordering::SeqCst), 0);
        assert_ne!(rd(&mut t, 0x70) & status::NEEDS_RESET, 0);
        assert_ne!(rd(&mut t, 0x60) & INT_CONFIG, 0);
    }

    #[test]
    fn driver_ok_without_features_ok_is_refused() {
        let (mut t, activations, _) = transport();
        wr(
            &mut t,
            0x70,
            status::ACKNOWLEDGE_FOR_TEST | status::DRIVER | status::DRIVER_OK,
        );
        assert_eq!(activations.load(Ordering::SeqCst), 0);
        assert_ne!(rd(&mut t, 0x70) & status::NEEDS_RESET, 0);
    }

    #[test]
    fn config_space_round_trips_and_bumps_generation() {
        let (mut t, _, _) = transport();
        let gen = rd(&mut t, 0xfc);
        t.write(0x100 + 2, &[7, 8]);
        let mut b = [0u8; 4];
        t.read(0x100, &mut b);
        assert_eq!(b, [0, 0, 7, 8]);
        assert_ne!(rd(&mut t, 0xfc), gen);
    }

    #[test]
    fn notify_register_signals_queue_eventfd() {
        let (mut t, _, _) = transport();
        wr(&mut t, QUEUE_NOTIFY_OFFSET, 1);
        assert_eq!(t.queue_events()[1].read().unwrap(), 1);
        wr(&mut t, QUEUE_NOTIFY_OFFSET, 77); // no such queue: ignored
    }
}
