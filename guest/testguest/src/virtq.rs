//! A polled split virtqueue and the virtio-mmio (v2) register interface.

use crate::hw::{fence, pause, read16, read32, write16, write32, write64};

pub const MAGIC: u32 = 0x7472_6976;
pub const STATUS_ACK: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
/// Spin iterations before a wait gives up.
pub const TIMEOUT_SPINS: u64 = 400_000_000;

/// A device's register window.
#[derive(Clone, Copy)]
pub struct Mmio {
    pub base: u64,
}

impl Mmio {
    pub fn read(&self, off: u64) -> u32 {
        read32(self.base + off)
    }
    pub fn write(&self, off: u64, v: u32) {
        write32(self.base + off, v)
    }
    pub fn device_id(&self) -> u32 {
        self.read(0x8)
    }

    /// Resets and negotiates `wanted` features (must include VERSION_1). Returns the
    /// device's offered features, or None if the device refused.
    pub fn negotiate(&self, wanted: u64) -> Option<u64> {
        self.write(0x70, 0);
        self.write(0x70, STATUS_ACK);
        self.write(0x70, STATUS_ACK | STATUS_DRIVER);
        self.write(0x14, 0);
        let lo = self.read(0x10) as u64;
        self.write(0x14, 1);
        let hi = self.read(0x10) as u64;
        let offered = lo | (hi << 32);
        let accept = offered & wanted;
        self.write(0x24, 0);
        self.write(0x20, accept as u32);
        self.write(0x24, 1);
        self.write(0x20, (accept >> 32) as u32);
        self.write(0x70, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK);
        if self.read(0x70) & STATUS_FEATURES_OK == 0 {
            return None;
        }
        Some(offered)
    }

    pub fn driver_ok(&self) {
        self.write(
            0x70,
            STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
    }

    pub fn status(&self) -> u32 {
        self.read(0x70)
    }
}

/// A split virtqueue in guest RAM at `base` (desc table, avail ring, used ring).
pub struct Vq {
    pub mmio: Mmio,
    pub index: u32,
    pub size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
}

impl Vq {
    /// Sets up queue `index` of `mmio` with `size` entries in RAM at `base` (64 KiB).
    pub fn new(mmio: Mmio, index: u32, size: u16, base: u64) -> Option<Self> {
        mmio.write(0x30, index);
        let max = mmio.read(0x34);
        if max == 0 || (size as u32) > max {
            return None;
        }
        let desc = base;
        let avail = base + 16 * size as u64;
        let used = (avail + 6 + 2 * size as u64 + 4095) & !4095;
        for a in (base..used + 6 + 8 * size as u64).step_by(4) {
            write32(a, 0);
        }
        mmio.write(0x38, size as u32);
        mmio.write(0x80, desc as u32);
        mmio.write(0x84, (desc >> 32) as u32);
        mmio.write(0x90, avail as u32);
        mmio.write(0x94, (avail >> 32) as u32);
        mmio.write(0xa0, used as u32);
        mmio.write(0xa4, (used >> 32) as u32);
        mmio.write(0x44, 1);
        if mmio.read(0x44) != 1 {
            return None;
        }
        Some(Self {
            mmio,
            index,
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Writes descriptor `i`.
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc + 16 * i as u64;
        write64(d, addr);
        write32(d + 8, len);
        write16(d + 12, flags);
        write16(d + 14, next);
    }

    /// Makes the chain starting at `head` available (without notifying).
    pub fn push(&mut self, head: u16) {
        let slot = self.avail_idx % self.size;
        write16(self.avail + 4 + 2 * slot as u64, head);
        fence();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        write16(self.avail + 2, self.avail_idx);
        fence();
    }

    pub fn notify(&self) {
        self.mmio.write(0x50, self.index);
    }

    /// Next used element (id, len), if any.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        fence();
        let idx = read16(self.used + 2);
        if idx == self.last_used {
            return None;
        }
        let slot = self.last_used % self.size;
        let e = self.used + 4 + 8 * slot as u64;
        let id = read32(e);
        let len = read32(e + 4);
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }

    /// Waits for the next used element.
    pub fn wait_used(&mut self) -> Option<(u32, u32)> {
        for _ in 0..TIMEOUT_SPINS {
            if let Some(u) = self.pop_used() {
                return Some(u);
            }
            pause();
        }
        None
    }
}
