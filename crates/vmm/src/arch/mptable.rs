//! A minimal Intel MultiProcessor table, so a guest without ACPI finds every vCPU and
//! the IOAPIC (Linux reads it when booted with `acpi=off` or without ACPI support).

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::layout::EBDA_START;
use crate::GuestMemoryMmap;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_ID_OFFSET: u8 = 1; // IOAPIC id = number of CPUs
const IOAPIC_ADDR: u32 = 0xfec0_0000;
const LAPIC_ADDR: u32 = 0xfee0_0000;
const IRQ_LINES: u8 = 24;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Writes the floating pointer and configuration table at the start of the EBDA.
pub fn write_mptable(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), GuestMemoryError> {
    let base = EBDA_START;
    let table_addr = base + 16;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        // processor entry: type 0, id, version, flags (enabled, BSP), signature, features
        let flags = 1 | if id == 0 { 2 } else { 0 };
        entries.extend_from_slice(&[0, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes());
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU | APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // bus entry: ISA bus 0
    entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    count += 1;
    let ioapic_id = cpus.saturating_add(IOAPIC_ID_OFFSET);
    entries.extend_from_slice(&[2, ioapic_id, APIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..IRQ_LINES {
        // I/O interrupt entry: INT, conforming polarity/trigger, ISA bus, irq -> pin irq
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // local interrupt entries: ExtINT on LINT0, NMI on LINT1
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    let length = u16::try_from(44 + entries.len()).unwrap_or(u16::MAX);
    header.extend_from_slice(&length.to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, fixed below
    header.extend_from_slice(b"SKIFF   ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended length, checksum, reserved
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    // EBDA_START + 16 is below 1 MiB.
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(4); // revision
    floating.push(0); // checksum
    floating.extend_from_slice(&[0; 5]); // feature bytes: config table present
    floating[10] = checksum(&floating);

    mem.write_slice(&floating, GuestAddress(base))?;
    mem.write_slice(&table, GuestAddress(table_addr))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_checksum_to_zero() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_mptable(&mem, 4).unwrap();
        let mut fp = [0u8; 16];
        mem.read_slice(&mut fp, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(fp.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let mut hdr = [0u8; 44];
        mem.read_slice(&mut hdr, GuestAddress(EBDA_START + 16))
            .unwrap();
        let len = u16::from_le_bytes([hdr[4], hdr[5]]) as usize;
        let mut table = vec![0u8; len];
        mem.read_slice(&mut table, GuestAddress(EBDA_START + 16))
            .unwrap();
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }
}
