//! Where things live in guest physical memory (the Firecracker / rust-vmm layout).

/// GDT used for 64-bit entry.
pub const GDT_ADDR: u64 = 0x500;
/// Empty IDT (the guest installs its own).
pub const IDT_ADDR: u64 = 0x520;
/// Linux `boot_params` (zero page); RSI points here at entry.
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, PDPT, then four page directories (4 GiB).
pub const PML4: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPT: u64 = 0xa000;
/// First of four page directories.
pub const PD: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Longest command line (Linux's COMMAND_LINE_SIZE on x86_64).
pub const CMDLINE_MAX: usize = 2048;
/// End of usable low memory (EBDA above).
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of high memory; kernels load at or above it.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO hole below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the MMIO hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Boot-timer register (first page of the MMIO hole).
pub const BOOT_TIMER_ADDR: u64 = MMIO_GAP_START;
/// First virtio-mmio window; device `i` is at `VIRTIO_MMIO_BASE + i * 4 KiB`.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START + 0x1000;
/// IRQ (GSI) of the first virtio device; device `i` gets `VIRTIO_IRQ_BASE + i`.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Most virtio devices (IRQs 5..=23 on the IOAPIC).
pub const MAX_VIRTIO_DEVICES: usize = 19;
/// Serial IRQ (COM1).
pub const SERIAL_IRQ: u32 = 4;
/// Highest address an initramfs may end at (conservative initrd_addr_max).
pub const INITRD_ADDR_MAX: u64 = 0x3800_0000;
/// KVM's TSS area (three pages just below the 4 GiB boundary, inside the MMIO hole).
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// Guest RAM ranges for `size` bytes, split around the MMIO hole.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_hole() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        let big = 4u64 << 30;
        assert_eq!(
            ram_ranges(big),
            vec![(0, MMIO_GAP_START), (MMIO_GAP_END, big - MMIO_GAP_START)]
        );
    }
}
