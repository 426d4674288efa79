//! skiff's test guest: booted by skiff-vmm like a kernel (ELF at 16 MiB, entered in
//! 64-bit mode with RSI = zero page), it plays a polled virtio driver for every
//! virtio-mmio device the command line announces:
//!
//! - virtio-blk: GET_ID, reads the first 4 KiB and checks the host's pattern
//!   (`SKIFFTST` then `(i*7+3) as u8`); on a writable disk writes `GUESTWRT` plus
//!   `(i*13+1) as u8` to bytes 4096..8192, flushes and reads it back; on a read-only
//!   disk checks that a write fails with IOERR.
//! - virtio-vsock: connects to host port 1234 (`<uds>_1234`), accepts a connection
//!   to its port 5000 (host `CONNECT 5000`), echoes every byte on both until the host
//!   closes them.
//!
//! - virtio-net: sends one broadcast frame (ethertype 0x88b5, payload
//!   `skiff-testguest`) and waits for a frame of the same type from the host, whose
//!   payload it prints.
//!
//! - virtio-fs: FUSE INIT, reads the file `testguest.fsfile=NAME` (LOOKUP, OPEN,
//!   READ; its text is printed) and creates `testguest.fswrite=NAME` with
//!   [`fs::GUEST_TEXT`] (CREATE, WRITE); `testguest.fsbadq` first checks that a queue
//!   outside RAM is refused (see `fs.rs`).
//!
//! `testguest.skipvsock` leaves a vsock device alone (when no host side listens).
//!
//! It reports through COM1 (`testguest: ...` lines), writes 0 (pass) or 1 (fail) to
//! port 0x501 and resets through the i8042. With `testguest.bench=N` it instead does
//! N random 4 KiB reads and `testguest.seqmib=M` 1 MiB sequential reads on the first
//! disk, writing markers 1, 2, 3 to port 0x503 around the phases. With
//! `testguest.crash` it executes `ud2` without an IDT (a triple fault).
//!
//! With `testguest.snapwork=N` (snapshot tests) it runs a long deterministic job on
//! the first disk instead: fills `testguest.snapmib=M` MiB (default 8) of RAM with a
//! pattern, prints `testguest: snapwork ready` (marker 10), then runs N steps, each
//! read-modify-writing 4096 pseudo-random words of that RAM and one 4 KiB disk block
//! (marker 11, `testguest: step K/N acc=...`), and ends with `testguest: snapwork
//! result=...` folded from the accumulator, every word of the RAM and every block read
//! back. In-place updates make any sharing of memory or disk between two restored
//! copies change the result. With `testguest.snapgate=G` it stops after step G,
//! prints `testguest: snapwork waiting at step G` and polls disk block 16 until it
//! starts with `SNAPGO!!` (the host opens the gate): a point where a test can
//! snapshot the job mid-run whatever the machine's speed. The gate changes nothing
//! in the result.

#![no_std]
#![no_main]

mod hw;
mod virtq;

use core::panic::PanicInfo;

use hw::{finish, outb, read32, read8, write32};
use virtq::{Mmio, Vq, F_NEXT, F_WRITE, MAGIC};

const ZERO_PAGE: u64 = 0x7000;
const BOOT_TIMER: u64 = 0xd000_0000;
const MARKER_PORT: u16 = 0x503;
const MAX_DEVICES: usize = 8;
const QUEUE_RAM: u64 = 0x0200_0000;
const BLK_HDR: u64 = 0x0300_0000;
const BLK_STATUS: u64 = 0x0300_0800;
const BLK_DATA: u64 = 0x0400_0000; // up to 1 MiB
const RX_BUFS: u64 = 0x0310_0000;
const TX_BUF: u64 = 0x0320_0000;
const VERSION_1: u64 = 1 << 32;
const BLK_F_RO: u64 = 1 << 5;
const BLK_F_FLUSH: u64 = 1 << 9;

core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    // First thing: tell the VMM's boot timer the guest runs.
    "mov eax, {timer}",
    "mov dword ptr [rax], 123",
    "lea rsp, [rip + {stack} + {stack_size}]",
    "mov rdi, rsi",
    "call {main}",
    "2: hlt",
    "jmp 2b",
    timer = const BOOT_TIMER,
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    main = sym guest_main,
);

const STACK_SIZE: usize = 256 * 1024;
#[repr(align(16))]
struct Stack(#[allow(dead_code)] [u8; STACK_SIZE]);
static mut STACK: Stack = Stack([0; STACK_SIZE]);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("testguest: FAIL panic: {}", info.message());
    finish(1)
}

macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            println!("testguest: FAIL {}", format_args!($($arg)*));
            finish(1);
        }
    };
}

// After `check!`, which it uses.
mod fs;

/// The kernel command line from the zero page.
struct Cmdline {
    buf: [u8; 2048],
    len: usize,
}

impl Cmdline {
    fn read(zero_page: u64) -> Self {
        let ptr = read32(zero_page + 0x228) as u64;
        let mut buf = [0u8; 2048];
        let mut len = 0;
        while ptr != 0 && len < buf.len() {
            let b = read8(ptr + len as u64);
            if b == 0 {
                break;
            }
            buf[len] = b;
            len += 1;
        }
        Self { buf, len }
    }

    fn tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.buf[..self.len]
            .split(|b| *b == b' ')
            .filter(|t| !t.is_empty())
    }

    fn value(&self, key: &[u8]) -> Option<&[u8]> {
        self.tokens().find_map(|t| t.strip_prefix(key))
    }
}

fn parse_num(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix(b"0x") {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)? as u64;
        v = v.checked_mul(radix as u64)?.checked_add(d)?;
    }
    Some(v)
}

/// `virtio_mmio.device=4K@0xADDR:IRQ` -> ADDR
fn mmio_bases(cmdline: &Cmdline, out: &mut [u64; MAX_DEVICES]) -> usize {
    let mut n = 0;
    for tok in cmdline.tokens() {
        let Some(rest) = tok.strip_prefix(b"virtio_mmio.device=") else {
            continue;
        };
        let Some(at) = rest.iter().position(|b| *b == b'@') else {
            continue;
        };
        let addr = &rest[at + 1..];
        let end = addr.iter().position(|b| *b == b':').unwrap_or(addr.len());
        if let Some(base) = parse_num(&addr[..end]) {
            if n < out.len() {
                out[n] = base;
                n += 1;
            }
        }
    }
    n
}

extern "C" fn guest_main(zero_page: u64) -> ! {
    let zero_page = if zero_page == 0 { ZERO_PAGE } else { zero_page };
    println!("testguest: started");
    let cmdline = Cmdline::read(zero_page);
    let mut bases = [0u64; MAX_DEVICES];
    let n = mmio_bases(&cmdline, &mut bases);
    println!("testguest: {} virtio-mmio devices announced", n);
    if cmdline.tokens().any(|t| t == b"testguest.crash") {
        println!("testguest: crashing on purpose");
        // SAFETY: deliberately raises #UD with no IDT: the CPU triple-faults.
        unsafe { core::arch::asm!("ud2") };
    }
    if let Some(steps) = cmdline.value(b"testguest.snapwork=").and_then(parse_num) {
        let mib = cmdline
            .value(b"testguest.snapmib=")
            .and_then(parse_num)
            .unwrap_or(8);
        let gate = cmdline.value(b"testguest.snapgate=").and_then(parse_num);
        snapwork(&bases[..n], steps, mib, gate);
    }
    let bench = cmdline.value(b"testguest.bench=").and_then(parse_num);
    let seq_mib = cmdline
        .value(b"testguest.seqmib=")
        .and_then(parse_num)
        .unwrap_or(0);

    let fs_file = cmdline.value(b"testguest.fsfile=").unwrap_or(b"hello.txt");
    let fs_create = cmdline
        .value(b"testguest.fswrite=")
        .unwrap_or(b"from-guest.txt");
    let fs_bad_queue = cmdline.tokens().any(|t| t == b"testguest.fsbadq");
    let skip_vsock = cmdline.tokens().any(|t| t == b"testguest.skipvsock");

    let mut blk_index = 0;
    let mut vsock_seen = false;
    let mut net_seen = false;
    let mut fs_seen = 0;
    for (i, &base) in bases[..n].iter().enumerate() {
        let mmio = Mmio { base };
        check!(
            mmio.read(0) == MAGIC,
            "device {} at {:#x}: bad magic {:#x}",
            i,
            base,
            mmio.read(0)
        );
        check!(
            mmio.read(4) == 2,
            "device {}: version {} (want 2)",
            i,
            mmio.read(4)
        );
        let queue_ram = QUEUE_RAM + i as u64 * 0x4_0000;
        match mmio.device_id() {
            2 => {
                let mut blk = Blk::init(mmio, queue_ram, blk_index);
                if let Some(reads) = bench {
                    blk.bench(reads, seq_mib);
                    finish(0);
                }
                blk.selftest();
                blk_index += 1;
            }
            19 => {
                if bench.is_none() && !skip_vsock {
                    vsock_test(mmio, queue_ram);
                    vsock_seen = true;
                }
            }
            1 => {
                if bench.is_none() {
                    net_test(mmio, queue_ram);
                    net_seen = true;
                }
            }
            26 => {
                if bench.is_none() {
                    fs::fs_test(mmio, queue_ram, fs_file, fs_create, fs_bad_queue);
                    fs_seen += 1;
                }
            }
            0 => println!("testguest: device {} is a placeholder", i),
            other => println!("testguest: device {} has unknown id {}", i, other),
        }
    }
    if fs_seen > 0 {
        println!("testguest: {} virtio-fs devices ok", fs_seen);
    }
    println!(
        "testguest: PASS ({} disks, vsock {}, net {})",
        blk_index, vsock_seen, net_seen
    );
    finish(0)
}

const SNAP_BUF: u64 = 0x0500_0000;
const SNAP_BLOCKS: u64 = 16;
/// Disk block (4 KiB) the gate polls.
const SNAP_GATE_BLOCK: u64 = SNAP_BLOCKS;
/// Words of RAM each step read-modify-writes.
const SNAP_WORDS_PER_STEP: u64 = 4096;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn snapwork(bases: &[u64], steps: u64, mib: u64, gate: Option<u64>) -> ! {
    check!((1..=32).contains(&mib), "snapwork: snapmib must be 1..=32");
    let disk = bases
        .iter()
        .map(|&base| Mmio { base })
        .find(|m| m.device_id() == 2);
    check!(disk.is_some(), "snapwork: needs a disk");
    let Some(mmio) = disk else { finish(1) };
    let mut blk = Blk::init(mmio, QUEUE_RAM, 0);
    check!(
        !blk.read_only && blk.sectors >= (SNAP_GATE_BLOCK + 1) * 8,
        "snapwork: needs a writable disk of at least {} KiB",
        (SNAP_GATE_BLOCK + 1) * 4
    );
    let words = mib * (1 << 20) / 8;
    for i in 0..words {
        hw::write64(SNAP_BUF + i * 8, splitmix(i));
    }
    println!("testguest: snapwork ready ({} MiB, {} steps)", mib, steps);
    outb(MARKER_PORT, 10);
    let mut acc: u64 = 0x5eed;
    for k in 0..steps {
        outb(MARKER_PORT, 11);
        for j in 0..SNAP_WORDS_PER_STEP {
            let addr = SNAP_BUF + (splitmix(acc ^ j) % words) * 8;
            let w = hw::read64(addr)
                .wrapping_mul(0x5851_f42d_4c95_7f2d)
                .wrapping_add(k ^ j);
            hw::write64(addr, w);
            acc = acc.rotate_left(5) ^ w;
        }
        let sector = (k % SNAP_BLOCKS) * 8;
        let st = blk.request(REQ_IN, sector, 4096);
        check!(st == 0, "snapwork: read status {}", st);
        for j in 0..512u64 {
            let addr = BLK_DATA + j * 8;
            let w = hw::read64(addr).rotate_left(3) ^ splitmix(acc ^ j);
            hw::write64(addr, w);
        }
        let st = blk.request(REQ_OUT, sector, 4096);
        check!(st == 0, "snapwork: write status {}", st);
        println!("testguest: step {}/{} acc={:016x}", k + 1, steps, acc);
        if gate == Some(k + 1) {
            println!("testguest: snapwork waiting at step {}", k + 1);
            wait_for_gate(&mut blk);
            println!("testguest: snapwork gate open");
        }
    }
    for b in 0..SNAP_BLOCKS {
        let st = blk.request(REQ_IN, b * 8, 4096);
        check!(st == 0, "snapwork: final read status {}", st);
        for j in 0..512u64 {
            acc = acc.rotate_left(7) ^ hw::read64(BLK_DATA + j * 8);
        }
    }
    for i in 0..words {
        acc = acc.rotate_left(3) ^ hw::read64(SNAP_BUF + i * 8);
    }
    println!("testguest: snapwork result={:016x}", acc);
    println!("testguest: PASS (snapwork)");
    finish(0)
}

/// Polls the gate block until the host wrote `SNAPGO!!` at its start. Only the
/// request buffer changes, and every step reads a block into it before using it.
fn wait_for_gate(blk: &mut Blk) {
    loop {
        let st = blk.request(REQ_IN, SNAP_GATE_BLOCK * 8, 4096);
        check!(st == 0, "snapwork: gate read status {}", st);
        if (0..8).all(|k| read8(BLK_DATA + k) == b"SNAPGO!!"[k as usize]) {
            return;
        }
        for _ in 0..10_000 {
            hw::pause();
        }
    }
}

struct Blk {
    vq: Vq,
    index: usize,
    read_only: bool,
    sectors: u64,
}

const REQ_IN: u32 = 0;
const REQ_OUT: u32 = 1;
const REQ_FLUSH: u32 = 4;
const REQ_GET_ID: u32 = 8;

impl Blk {
    fn init(mmio: Mmio, queue_ram: u64, index: usize) -> Self {
        let offered = mmio.negotiate(VERSION_1 | BLK_F_RO | BLK_F_FLUSH);
        check!(
            offered.is_some(),
            "blk{}: feature negotiation refused",
            index
        );
        let offered = offered.unwrap_or(0);
        let vq = Vq::new(mmio, 0, 16, queue_ram);
        check!(vq.is_some(), "blk{}: queue setup failed", index);
        let Some(vq) = vq else { finish(1) };
        mmio.driver_ok();
        check!(
            mmio.status() & 0x40 == 0,
            "blk{}: device needs reset",
            index
        );
        let sectors = mmio.read(0x100) as u64 | ((mmio.read(0x104) as u64) << 32);
        Self {
            vq,
            index,
            read_only: offered & BLK_F_RO != 0,
            sectors,
        }
    }

    /// Runs one request; returns the status byte.
    fn request(&mut self, kind: u32, sector: u64, len: u32) -> u8 {
        write32(BLK_HDR, kind);
        write32(BLK_HDR + 4, 0);
        hw::write64(BLK_HDR + 8, sector);
        hw::write8(BLK_STATUS, 0xff);
        let data_flags = if kind == REQ_OUT {
            F_NEXT
        } else {
            F_NEXT | F_WRITE
        };
        self.vq.set_desc(0, BLK_HDR, 16, F_NEXT, 1);
        if len > 0 {
            self.vq.set_desc(1, BLK_DATA, len, data_flags, 2);
            self.vq.set_desc(2, BLK_STATUS, 1, F_WRITE, 0);
        } else {
            self.vq.set_desc(1, BLK_STATUS, 1, F_WRITE, 0);
        }
        self.vq.push(0);
        self.vq.notify();
        let used = self.vq.wait_used();
        check!(
            used.is_some(),
            "blk{}: request {} timed out",
            self.index,
            kind
        );
        read8(BLK_STATUS)
    }

    fn selftest(&mut self) {
        let i = self.index;
        check!(
            self.sectors >= 16,
            "blk{}: disk too small ({} sectors)",
            i,
            self.sectors
        );
        let st = self.request(REQ_GET_ID, 0, 20);
        check!(st == 0, "blk{}: GET_ID status {}", i, st);
        let mut serial = [0u8; 20];
        for (k, b) in serial.iter_mut().enumerate() {
            *b = read8(BLK_DATA + k as u64);
        }
        let end = serial.iter().position(|b| *b == 0).unwrap_or(20);
        let serial = core::str::from_utf8(&serial[..end]).unwrap_or("?");
        println!(
            "testguest: blk{} serial={} sectors={} ro={}",
            i, serial, self.sectors, self.read_only
        );

        let st = self.request(REQ_IN, 0, 4096);
        check!(st == 0, "blk{}: read status {}", i, st);
        for k in 0..4096u64 {
            let want = if k < 8 {
                b"SKIFFTST"[k as usize]
            } else {
                (k * 7 + 3) as u8
            };
            let got = read8(BLK_DATA + k);
            check!(
                got == want,
                "blk{}: byte {} is {:#x}, want {:#x}",
                i,
                k,
                got,
                want
            );
        }
        println!("testguest: blk{} read ok", i);

        for k in 0..4096u64 {
            let b = if k < 8 {
                b"GUESTWRT"[k as usize]
            } else {
                (k * 13 + 1) as u8
            };
            hw::write8(BLK_DATA + k, b);
        }
        let st = self.request(REQ_OUT, 8, 4096);
        if self.read_only {
            check!(
                st == 1,
                "blk{}: write to read-only disk gave status {}",
                i,
                st
            );
            println!("testguest: blk{} ro write refused ok", i);
            return;
        }
        check!(st == 0, "blk{}: write status {}", i, st);
        let st = self.request(REQ_FLUSH, 0, 0);
        check!(st == 0, "blk{}: flush status {}", i, st);
        for k in 0..4096u64 {
            hw::write8(BLK_DATA + k, 0);
        }
        let st = self.request(REQ_IN, 8, 4096);
        check!(st == 0, "blk{}: read-back status {}", i, st);
        for k in 0..4096u64 {
            let want = if k < 8 {
                b"GUESTWRT"[k as usize]
            } else {
                (k * 13 + 1) as u8
            };
            check!(
                read8(BLK_DATA + k) == want,
                "blk{}: read-back byte {} differs",
                i,
                k
            );
        }
        // Out-of-range read must fail cleanly.
        let st = self.request(REQ_IN, self.sectors, 512);
        check!(st == 1, "blk{}: out-of-range read gave status {}", i, st);
        println!("testguest: blk{} write ok", i);
    }

    fn bench(&mut self, reads: u64, seq_mib: u64) {
        let blocks = self.sectors / 8;
        check!(blocks > 0, "bench: disk too small");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        outb(MARKER_PORT, 1);
        for _ in 0..reads {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let st = self.request(REQ_IN, (x % blocks) * 8, 4096);
            check!(st == 0, "bench: read status {}", st);
        }
        outb(MARKER_PORT, 2);
        let mib_sectors = 2048;
        let chunks = self.sectors / mib_sectors;
        for k in 0..seq_mib {
            if chunks == 0 {
                break;
            }
            let st = self.request(REQ_IN, (k % chunks) * mib_sectors, 1 << 20);
            check!(st == 0, "bench: sequential read status {}", st);
        }
        outb(MARKER_PORT, 3);
    }
}

mod vsock {
    pub const HDR: usize = 44;
    pub const OP_REQUEST: u16 = 1;
    pub const OP_RESPONSE: u16 = 2;
    pub const OP_RST: u16 = 3;
    pub const OP_SHUTDOWN: u16 = 4;
    pub const OP_RW: u16 = 5;
    pub const OP_CREDIT_UPDATE: u16 = 6;
    pub const OP_CREDIT_REQUEST: u16 = 7;
    pub const HOST_CID: u64 = 2;
    pub const BUF_ALLOC: u32 = 64 * 1024;
    pub const RX_COUNT: u16 = 8;
    pub const RX_LEN: u32 = 4096;
}

struct Packet {
    src_port: u32,
    dst_port: u32,
    op: u16,
    len: u32,
    addr: u64,
}

struct VsockDriver {
    rx: Vq,
    tx: Vq,
    cid: u64,
    /// bytes received per tracked connection: [guest-initiated, host-initiated]
    fwd: [u32; 2],
}

impl VsockDriver {
    fn send(
        &mut self,
        src_port: u32,
        dst_port: u32,
        op: u16,
        payload_from: Option<(u64, u32)>,
        conn: usize,
    ) {
        let len = payload_from.map_or(0, |p| p.1);
        hw::write64(TX_BUF, self.cid);
        hw::write64(TX_BUF + 8, vsock::HOST_CID);
        write32(TX_BUF + 16, src_port);
        write32(TX_BUF + 20, dst_port);
        write32(TX_BUF + 24, len);
        hw::write16(TX_BUF + 28, 1);
        hw::write16(TX_BUF + 30, op);
        write32(TX_BUF + 32, 0);
        write32(TX_BUF + 36, vsock::BUF_ALLOC);
        write32(TX_BUF + 40, self.fwd[conn]);
        if let Some((addr, n)) = payload_from {
            for k in 0..n as u64 {
                hw::write8(TX_BUF + vsock::HDR as u64 + k, read8(addr + k));
            }
        }
        self.tx.set_desc(0, TX_BUF, vsock::HDR as u32 + len, 0, 0);
        self.tx.push(0);
        self.tx.notify();
        check!(self.tx.wait_used().is_some(), "vsock: tx timed out");
    }

    fn recv(&mut self) -> Option<(Packet, u16)> {
        let (id, len) = self.rx.wait_used()?;
        let id = id as u16;
        let addr = RX_BUFS + id as u64 * 0x2000;
        check!(
            len as usize >= vsock::HDR,
            "vsock: short rx packet ({} bytes)",
            len
        );
        let p = Packet {
            src_port: read32(addr + 16),
            dst_port: read32(addr + 20),
            len: read32(addr + 24),
            op: hw::read16(addr + 30),
            addr: addr + vsock::HDR as u64,
        };
        check!(
            read32(addr) == 2 && read32(addr + 8) as u64 == self.cid,
            "vsock: bad cids"
        );
        check!(
            p.len + vsock::HDR as u32 <= len,
            "vsock: payload longer than used length"
        );
        Some((p, id))
    }

    fn repost(&mut self, id: u16) {
        self.rx.push(id);
        self.rx.notify();
    }
}

const GUEST_PORT: u32 = 1025;
const HOST_PORT: u32 = 1234;
const LISTEN_PORT: u32 = 5000;

fn vsock_test(mmio: Mmio, queue_ram: u64) {
    check!(
        mmio.negotiate(VERSION_1).is_some(),
        "vsock: feature negotiation refused"
    );
    let rx = Vq::new(mmio, 0, vsock::RX_COUNT, queue_ram);
    let tx = Vq::new(mmio, 1, 4, queue_ram + 0x1_0000);
    let ev = Vq::new(mmio, 2, 4, queue_ram + 0x2_0000);
    check!(
        rx.is_some() && tx.is_some() && ev.is_some(),
        "vsock: queue setup failed"
    );
    let (Some(rx), Some(tx)) = (rx, tx) else {
        finish(1)
    };
    mmio.driver_ok();
    let cid = mmio.read(0x100) as u64 | ((mmio.read(0x104) as u64) << 32);
    println!("testguest: vsock cid={}", cid);
    let mut d = VsockDriver {
        rx,
        tx,
        cid,
        fwd: [0, 0],
    };
    for i in 0..vsock::RX_COUNT {
        d.rx.set_desc(i, RX_BUFS + i as u64 * 0x2000, vsock::RX_LEN, F_WRITE, 0);
        d.rx.push(i);
    }
    d.rx.notify();

    d.send(GUEST_PORT, HOST_PORT, vsock::OP_REQUEST, None, 0);
    // conn 0: guest -> host:1234; conn 1: host -> guest:5000 (host port learned on REQUEST)
    let mut connected = false;
    let mut done = [false, false];
    let mut echoed = [0u32, 0];
    while !(done[0] && done[1]) {
        let Some((p, id)) = d.recv() else {
            println!(
                "testguest: FAIL vsock: timed out (connected {}, done {:?}, echoed {:?})",
                connected, done, echoed
            );
            finish(1);
        };
        let conn = if p.dst_port == GUEST_PORT && p.src_port == HOST_PORT {
            0
        } else if p.dst_port == LISTEN_PORT {
            1
        } else {
            println!(
                "testguest: vsock: packet for unknown port {} from {}",
                p.dst_port, p.src_port
            );
            d.repost(id);
            continue;
        };
        let (local, remote) = if conn == 0 {
            (GUEST_PORT, HOST_PORT)
        } else {
            (LISTEN_PORT, p.src_port)
        };
        match p.op {
            vsock::OP_RESPONSE if conn == 0 => connected = true,
            vsock::OP_REQUEST if conn == 1 => {
                d.send(local, remote, vsock::OP_RESPONSE, None, 1);
                println!("testguest: vsock accepted host port {}", p.src_port);
            }
            vsock::OP_RW => {
                d.fwd[conn] = d.fwd[conn].wrapping_add(p.len);
                echoed[conn] += p.len;
                d.send(local, remote, vsock::OP_RW, Some((p.addr, p.len)), conn);
            }
            vsock::OP_SHUTDOWN => {
                d.send(local, remote, vsock::OP_RST, None, conn);
                done[conn] = true;
            }
            vsock::OP_RST => {
                check!(
                    conn != 0 || connected,
                    "vsock: connection to host port {} refused",
                    HOST_PORT
                );
                done[conn] = true;
            }
            vsock::OP_CREDIT_REQUEST => d.send(local, remote, vsock::OP_CREDIT_UPDATE, None, conn),
            vsock::OP_CREDIT_UPDATE => {}
            other => println!("testguest: vsock: unexpected op {}", other),
        }
        d.repost(id);
    }
    check!(
        echoed[0] > 0 && echoed[1] > 0,
        "vsock: nothing echoed ({:?})",
        echoed
    );
    println!(
        "testguest: vsock echo ok ({} and {} bytes)",
        echoed[0], echoed[1]
    );
}

const NET_RX_BUF: u64 = 0x0330_0000;
const NET_TX_BUF: u64 = 0x0331_0000;
const ETHERTYPE_TEST: [u8; 2] = [0x88, 0xb5];

fn net_test(mmio: Mmio, queue_ram: u64) {
    const F_MAC: u64 = 1 << 5;
    check!(
        mmio.negotiate(VERSION_1 | F_MAC).is_some(),
        "net: feature negotiation refused"
    );
    let rx = Vq::new(mmio, 0, 8, queue_ram);
    let tx = Vq::new(mmio, 1, 4, queue_ram + 0x1_0000);
    check!(rx.is_some() && tx.is_some(), "net: queue setup failed");
    let (Some(mut rx), Some(mut tx)) = (rx, tx) else {
        finish(1)
    };
    mmio.driver_ok();
    let mut mac = [0u8; 6];
    for (k, b) in mac.iter_mut().enumerate() {
        *b = read8(mmio.base + 0x100 + k as u64);
    }
    println!(
        "testguest: net mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    );
    for i in 0..8u16 {
        rx.set_desc(i, NET_RX_BUF + i as u64 * 0x1000, 2048, F_WRITE, 0);
        rx.push(i);
    }
    rx.notify();
    // 12-byte virtio-net header (all zero), then the Ethernet frame.
    let payload = b"skiff-testguest";
    let frame_len = 12 + 14 + payload.len() as u64;
    for k in 0..frame_len.max(12 + 60) {
        hw::write8(NET_TX_BUF + k, 0);
    }
    for k in 0..6 {
        hw::write8(NET_TX_BUF + 12 + k, 0xff);
        hw::write8(NET_TX_BUF + 12 + 6 + k, mac[k as usize]);
    }
    hw::write8(NET_TX_BUF + 24, ETHERTYPE_TEST[0]);
    hw::write8(NET_TX_BUF + 25, ETHERTYPE_TEST[1]);
    for (k, b) in payload.iter().enumerate() {
        hw::write8(NET_TX_BUF + 26 + k as u64, *b);
    }
    tx.set_desc(0, NET_TX_BUF, (12 + 60) as u32, 0, 0);
    tx.push(0);
    tx.notify();
    check!(tx.wait_used().is_some(), "net: tx timed out");
    println!("testguest: net frame sent");
    loop {
        let Some((id, len)) = rx.wait_used() else {
            println!("testguest: FAIL net: no frame from the host");
            finish(1);
        };
        let buf = NET_RX_BUF + id as u64 * 0x1000;
        let is_test = len >= 12 + 14
            && read8(buf + 24) == ETHERTYPE_TEST[0]
            && read8(buf + 25) == ETHERTYPE_TEST[1];
        if is_test {
            let mut text = [0u8; 32];
            let n = ((len as usize) - 26).min(text.len());
            for (k, b) in text[..n].iter_mut().enumerate() {
                *b = read8(buf + 26 + k as u64);
            }
            let end = text[..n].iter().position(|b| *b == 0).unwrap_or(n);
            println!(
                "testguest: net got {}",
                core::str::from_utf8(&text[..end]).unwrap_or("?")
            );
            return;
        }
        // Something else the host stack sent (IPv6 ND, ...): recycle the buffer.
        rx.push(id as u16);
        rx.notify();
    }
}
