//! Raw hardware access: port I/O and volatile memory. Every address used here is
//! either a fixed PC port, the boot-timer/virtio-mmio windows the VMM announced, or
//! guest RAM this program owns (identity-mapped by the VMM's boot page tables).

use core::arch::asm;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects in this guest; the VMM handles the exit.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for outb.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack)) };
    value
}

pub fn read32(addr: u64) -> u32 {
    // SAFETY: callers pass MMIO registers or owned RAM, 4-byte aligned and mapped.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

pub fn write32(addr: u64, value: u32) {
    // SAFETY: as for read32.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

pub fn read16(addr: u64) -> u16 {
    // SAFETY: owned RAM, 2-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u16) }
}

pub fn write16(addr: u64, value: u16) {
    // SAFETY: owned RAM, 2-byte aligned.
    unsafe { core::ptr::write_volatile(addr as *mut u16, value) }
}

pub fn write64(addr: u64, value: u64) {
    // SAFETY: owned RAM, 8-byte aligned.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
}

pub fn read64(addr: u64) -> u64 {
    // SAFETY: owned RAM, 8-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

pub fn read8(addr: u64) -> u8 {
    // SAFETY: owned RAM or the zero page.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

pub fn write8(addr: u64, value: u8) {
    // SAFETY: owned RAM.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

pub fn fence() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

pub fn pause() {
    core::hint::spin_loop();
}

pub const COM1: u16 = 0x3f8;
pub const STATUS_PORT: u16 = 0x501;

pub fn putc(c: u8) {
    // Wait for THR empty (bounded: the VMM's UART is always ready).
    for _ in 0..1000 {
        if inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
    }
    outb(COM1, c);
}

pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                putc(b'\r');
            }
            putc(b);
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::hw::Console, $($arg)*);
    }};
}

/// Reports `status` through the status port and resets through the i8042.
pub fn finish(status: u8) -> ! {
    outb(STATUS_PORT, status);
    loop {
        outb(0x64, 0xfe);
        pause();
    }
}
