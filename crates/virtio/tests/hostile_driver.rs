//! A hostile driver: random register traffic on the virtio-mmio transport and random
//! bytes in guest memory where the rings live, for both device models. Nothing may
//! panic, hang, or touch memory outside the guest (vm-memory would refuse it).

use std::sync::Arc;

use skiff_virtio::block::{Block, Disk, DiskConfig};
use skiff_virtio::transport::{IrqTrigger, MmioTransport};
use skiff_virtio::vsock::{Vsock, VsockMuxer};
use skiff_virtio::{GuestMemoryMmap, VirtioDevice};
use vm_memory::{Bytes, GuestAddress};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const MEM: usize = 1 << 20;

/// Returns in how many rounds the device was active (so the test cannot pass idly).
fn hammer(device: Box<dyn VirtioDevice>, seed: u64) -> u32 {
    let mem =
        Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).expect("guest memory"));
    let irq = Arc::new(IrqTrigger::with_new_eventfd().expect("eventfd"));
    let mut t = MmioTransport::new(device, mem.clone(), irq).expect("transport");
    let mut rng = Rng(seed);
    let registers = [
        0x14u64, 0x20, 0x24, 0x30, 0x38, 0x44, 0x50, 0x64, 0x70, 0x80, 0x84, 0x90, 0x94, 0xa0,
        0xa4, 0x100, 0x104,
    ];
    let mut active = 0;
    for round in 0..20_000u32 {
        active += u32::from(t.is_activated());
        let r = rng.next();
        match r % 8 {
            // A plausible driver: small queue sizes, ring addresses inside memory.
            0 => {
                let q = (r >> 8) % 4;
                t.write(0x30, &(q as u32).to_le_bytes());
                t.write(0x38, &[16, 0, 0, 0]);
                let base = ((r >> 16) % (MEM as u64 - 0x1000)) & !0xfff;
                t.write(0x80, &(base as u32).to_le_bytes());
                t.write(0x90, &((base + 0x100) as u32).to_le_bytes());
                t.write(0xa0, &((base + 0x200) as u32).to_le_bytes());
                t.write(0x44, &[1, 0, 0, 0]);
            }
            1 => {
                for status in [1u32, 3, 0xb, 0xf] {
                    if status == 0xb {
                        t.write(0x24, &[1, 0, 0, 0]);
                        t.write(0x20, &[1, 0, 0, 0]);
                    }
                    t.write(0x70, &status.to_le_bytes());
                }
            }
            // Scribble over memory where rings and buffers live.
            2 | 3 => {
                let addr = (r >> 8) % (MEM as u64 - 8);
                let _ = mem.write_obj(rng.next(), GuestAddress(addr));
            }
            4 => t.notify_queue(((r >> 8) % 5) as usize),
            5 => t.process_backend(),
            // Arbitrary register access of arbitrary size.
            _ => {
                let reg = registers[((r >> 8) as usize) % registers.len()];
                let len = [1usize, 2, 4, 8][((r >> 20) % 4) as usize];
                let value = rng.next().to_le_bytes();
                if r & 1 == 0 {
                    t.write(reg, &value[..len]);
                } else {
                    let mut buf = [0u8; 8];
                    t.read(reg, &mut buf[..len]);
                }
            }
        }
        if round % 5000 == 0 {
            t.write(0x70, &[0, 0, 0, 0]); // reset now and then
        }
    }
    active
}

#[test]
fn block_survives_a_hostile_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.img");
    std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
    for seed in 1..=4 {
        let disk = Disk::open(&DiskConfig {
            path: path.clone(),
            read_only: seed % 2 == 0,
            serial: None,
        })
        .unwrap();
        assert!(hammer(Box::new(Block::new(disk)), seed * 0x9e37_79b9) > 0);
    }
}

#[test]
fn vsock_survives_a_hostile_driver() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..=4 {
        let muxer = VsockMuxer::new(3, &dir.path().join(format!("v{seed}.sock"))).unwrap();
        assert!(hammer(Box::new(Vsock::new(muxer)), seed * 0x85eb_ca6b) > 0);
    }
}
