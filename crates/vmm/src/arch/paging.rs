//! Identity page tables and a flat GDT so a vCPU can start directly in 64-bit mode.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::layout::{GDT_ADDR, IDT_ADDR, PD, PDPT, PML4};
use crate::GuestMemoryMmap;

/// Flat 64-bit code, data and TSS descriptors (null first).
pub const GDT: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff, // code: present, ring 0, long mode
    0x00cf_9300_0000_ffff, // data: present, ring 0, writable
    0x008f_8b00_0000_ffff, // TSS (busy)
];
/// Selector of the code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segments.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the task register.
pub const TSS_SELECTOR: u16 = 0x18;

/// Writes the GDT, an empty IDT and page tables identity-mapping the first 4 GiB with
/// 2 MiB pages (so guests reach the MMIO hole without building their own tables).
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), GuestMemoryError> {
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    mem.write_obj(PDPT | 0x3, GuestAddress(PML4))?;
    for gib in 0..4u64 {
        let pd = PD + gib * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(PDPT + gib * 8))?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            // present | writable | page size (2 MiB)
            mem.write_obj(phys | 0x83, GuestAddress(pd + i * 8))?;
        }
    }
    Ok(())
}
