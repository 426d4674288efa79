//! Devices on the port-I/O and MMIO buses, and the dispatch of vCPU exits to them.
//!
//! Port I/O: COM1 8250 serial at 0x3f8 (output only), the i8042 controller at
//! 0x60/0x64 (writing 0xfe to 0x64 resets = ends the VM), and the guest status port
//! at 0x501 (a byte written there becomes the VMM's exit status), and a benchmark
//! marker port at 0x503 (timestamped on stderr with `--report-boot-time`). MMIO: the boot timer
//! at the start of the MMIO hole, then one 4 KiB virtio-mmio window per device.

pub mod boot_timer;
pub mod legacy;

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};

use skiff_virtio::transport::{MmioTransport, MMIO_WINDOW_SIZE};
use tracing::debug;

use crate::arch::layout::BOOT_TIMER_ADDR;
use crate::exit::GuestExit;
pub use boot_timer::BootTimer;
pub use legacy::{ConsoleOut, IrqLine, SerialConsole, I8042};

/// Port a guest writes its result byte to (QEMU's isa-debug-exit default port).
pub const STATUS_PORT: u16 = 0x501;
/// Port where a guest marks benchmark phases (logged with a timestamp).
pub const MARKER_PORT: u16 = 0x503;
const COM1: u16 = 0x3f8;
const I8042_DATA: u16 = 0x60;
const I8042_COMMAND: u16 = 0x64;

/// A virtio-mmio device at its window.
#[derive(Clone)]
pub struct MmioSlot {
    /// Base of the 4 KiB window.
    pub base: u64,
    /// Interrupt line (GSI).
    pub irq: u32,
    /// The transport and model.
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// Every device a vCPU can reach, plus the VM's exit signal.
pub struct Devices {
    serial: Mutex<SerialConsole>,
    i8042: Mutex<I8042>,
    boot_timer: BootTimer,
    virtio: Vec<MmioSlot>,
    /// 0x100 | status once the guest reported one.
    status: AtomicU16,
    exiting: AtomicBool,
    exit_tx: Mutex<Sender<GuestExit>>,
}

impl Devices {
    /// Assembles the device set.
    pub fn new(
        serial: SerialConsole,
        i8042: I8042,
        boot_timer: BootTimer,
        virtio: Vec<MmioSlot>,
        exit_tx: Sender<GuestExit>,
    ) -> Self {
        Self {
            serial: Mutex::new(serial),
            i8042: Mutex::new(i8042),
            boot_timer,
            virtio,
            status: AtomicU16::new(0),
            exiting: AtomicBool::new(false),
            exit_tx: Mutex::new(exit_tx),
        }
    }

    /// The status byte the guest reported, if any.
    pub fn reported_status(&self) -> Option<u8> {
        let v = self.status.load(Ordering::SeqCst);
        (v & 0x100 != 0).then_some((v & 0xff) as u8)
    }

    /// Ends the VM (first caller wins).
    pub fn request_exit(&self, reason: GuestExit) {
        if !self.exiting.swap(true, Ordering::SeqCst) {
            let tx = self.exit_tx.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = tx.send(reason);
        }
    }

    /// Whether the VM is ending.
    pub fn exit_requested(&self) -> bool {
        self.exiting.load(Ordering::SeqCst)
    }

    /// Serial registers and the reported status, for a snapshot.
    pub fn save_legacy(&self) -> (crate::snapshot::state::SerialRegs, Option<u8>) {
        let serial = self
            .serial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .save();
        (serial, self.reported_status())
    }

    /// Sets the status byte a restored guest had reported before its snapshot.
    pub fn restore_status(&self, status: Option<u8>) {
        if let Some(value) = status {
            self.status
                .store(0x100 | u16::from(value), Ordering::SeqCst);
        }
    }

    /// The virtio-mmio devices, in bus order.
    pub fn virtio_slots(&self) -> &[MmioSlot] {
        &self.virtio
    }

    /// Flushes console output.
    pub fn flush_console(&self) {
        self.serial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }

    /// Guest `out` to `port`.
    pub fn pio_write(&self, port: u16, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match port {
            COM1..=0x3ff => {
                let mut serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
                serial.write(port - COM1, value);
            }
            I8042_DATA | I8042_COMMAND => {
                let reset = self
                    .i8042
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write(port - I8042_DATA, value);
                if reset {
                    self.request_exit(GuestExit::Reset);
                }
            }
            STATUS_PORT => {
                self.status
                    .store(0x100 | u16::from(value), Ordering::SeqCst);
            }
            MARKER_PORT => self.boot_timer.marker(value),
            _ => debug!("pio: ignoring write of {value:#x} to port {port:#x}"),
        }
    }

    /// Guest `in` from `port`; unknown ports read as all ones.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let value = match port {
            COM1..=0x3ff => self
                .serial
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .read(port - COM1),
            I8042_DATA | I8042_COMMAND => self
                .i8042
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .read(port - I8042_DATA),
            _ => return,
        };
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn virtio_at(&self, addr: u64) -> Option<(&MmioSlot, u64)> {
        self.virtio
            .iter()
            .find(|s| addr >= s.base && addr - s.base < MMIO_WINDOW_SIZE)
            .map(|s| (s, addr - s.base))
    }

    /// Guest MMIO read.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if let Some((slot, offset)) = self.virtio_at(addr) {
            slot.transport
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .read(offset, data);
            return;
        }
        data.fill(0);
        if !(BOOT_TIMER_ADDR..BOOT_TIMER_ADDR + 0x1000).contains(&addr) {
            debug!("mmio: read of unmapped {addr:#x}");
        }
    }

    /// Guest MMIO write.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((slot, offset)) = self.virtio_at(addr) {
            slot.transport
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write(offset, data);
        } else if (BOOT_TIMER_ADDR..BOOT_TIMER_ADDR + 0x1000).contains(&addr) {
            self.boot_timer.signal();
        } else {
            debug!("mmio: write to unmapped {addr:#x}");
        }
    }
}
