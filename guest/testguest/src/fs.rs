//! A polled virtio-fs driver speaking just enough FUSE (protocol 7.31) to prove the
//! device end to end: INIT, LOOKUP + OPEN + READ of `testguest.fsfile=NAME`, then
//! CREATE + WRITE of `testguest.fswrite=NAME` (content [`GUEST_TEXT`]), RELEASE of both.
//! With `testguest.fsbadq` it first sets up a request queue whose descriptor table
//! lies outside RAM and checks that the device refuses it (DEVICE_NEEDS_RESET), then
//! resets the device and carries on normally.

use crate::hw::{self, finish, read32, read8, write32};
use crate::println;
use crate::virtq::{Mmio, Vq, F_NEXT, F_WRITE};

const FS_IN: u64 = 0x0340_0000;
const FS_OUT: u64 = 0x0341_0000;
const OUT_LEN: u32 = 0x8000;
const IN_HDR: u64 = 40;
const OUT_HDR: u64 = 16;
const ROOT: u64 = 1;
const VERSION_1: u64 = 1 << 32;
/// What the guest writes into the file it creates.
pub const GUEST_TEXT: &[u8] = b"written by the test guest over virtio-fs";

const LOOKUP: u32 = 1;
const OPEN: u32 = 14;
const READ: u32 = 15;
const WRITE: u32 = 16;
const RELEASE: u32 = 18;
const INIT: u32 = 26;
const CREATE: u32 = 35;

const O_WRONLY: u32 = 1;
const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;

struct Fs {
    vq: Vq,
    unique: u64,
}

impl Fs {
    /// Sends one request: header + `args` (already at FS_IN + 40, `args_len` bytes);
    /// returns (error, reply payload length) with the payload at FS_OUT + 16.
    fn call(&mut self, opcode: u32, nodeid: u64, args_len: u32) -> (i32, u32) {
        self.unique += 1;
        let len = IN_HDR as u32 + args_len;
        write32(FS_IN, len);
        write32(FS_IN + 4, opcode);
        hw::write64(FS_IN + 8, self.unique);
        hw::write64(FS_IN + 16, nodeid);
        write32(FS_IN + 24, 0); // uid
        write32(FS_IN + 28, 0); // gid
        write32(FS_IN + 32, 1); // pid
        write32(FS_IN + 36, 0);
        write32(FS_OUT, 0);
        self.vq.set_desc(0, FS_IN, len, F_NEXT, 1);
        self.vq.set_desc(1, FS_OUT, OUT_LEN, F_WRITE, 0);
        self.vq.push(0);
        self.vq.notify();
        let used = self.vq.wait_used();
        check!(used.is_some(), "fs: request {} timed out", opcode);
        let out_len = read32(FS_OUT);
        let error = read32(FS_OUT + 4) as i32;
        let unique = read32(FS_OUT + 8) as u64 | ((read32(FS_OUT + 12) as u64) << 32);
        check!(
            unique == self.unique,
            "fs: reply to {} has unique {}",
            opcode,
            unique
        );
        check!(
            out_len as u64 >= OUT_HDR && out_len <= OUT_LEN,
            "fs: reply length {}",
            out_len
        );
        (error, out_len - OUT_HDR as u32)
    }

    /// Writes `name` NUL-terminated at FS_IN + 40 + `at`; returns bytes written.
    fn put_name(at: u64, name: &[u8]) -> u32 {
        for (k, b) in name.iter().enumerate() {
            hw::write8(FS_IN + IN_HDR + at + k as u64, *b);
        }
        hw::write8(FS_IN + IN_HDR + at + name.len() as u64, 0);
        name.len() as u32 + 1
    }

    fn release(&mut self, nodeid: u64, fh: u64) {
        let a = FS_IN + IN_HDR;
        hw::write64(a, fh);
        write32(a + 8, 0);
        write32(a + 12, 0);
        hw::write64(a + 16, 0);
        let (err, _) = self.call(RELEASE, nodeid, 24);
        check!(err == 0, "fs: RELEASE error {}", err);
    }
}

fn read64(addr: u64) -> u64 {
    read32(addr) as u64 | ((read32(addr + 4) as u64) << 32)
}

/// Sets up the device with a descriptor table outside RAM and expects a refusal.
fn bad_queue_is_refused(mmio: Mmio, queue_ram: u64) {
    check!(
        mmio.negotiate(VERSION_1).is_some(),
        "fs: feature negotiation refused"
    );
    let hiprio = Vq::new(mmio, 0, 8, queue_ram);
    let req = Vq::new(mmio, 1, 8, queue_ram + 0x1_0000);
    check!(hiprio.is_some() && req.is_some(), "fs: queue setup failed");
    // Point queue 1's descriptor table far beyond guest RAM.
    mmio.write(0x30, 1);
    mmio.write(0x80, 0);
    mmio.write(0x84, 0x40);
    mmio.driver_ok();
    check!(
        mmio.status() & 0x40 != 0,
        "fs: a descriptor table outside RAM was accepted (status {:#x})",
        mmio.status()
    );
    println!("testguest: fs bad queue refused");
}

pub fn fs_test(mmio: Mmio, queue_ram: u64, file: &[u8], create: &[u8], bad_queue: bool) {
    if bad_queue {
        bad_queue_is_refused(mmio, queue_ram);
    }
    // negotiate() resets the device first.
    check!(
        mmio.negotiate(VERSION_1).is_some(),
        "fs: feature negotiation refused"
    );
    let mut tag = [0u8; 36];
    for (k, b) in tag.iter_mut().enumerate() {
        *b = read8(mmio.base + 0x100 + k as u64);
    }
    let tag_len = tag.iter().position(|b| *b == 0).unwrap_or(36);
    let queues = mmio.read(0x100 + 36);
    println!(
        "testguest: fs tag={} request_queues={}",
        core::str::from_utf8(&tag[..tag_len]).unwrap_or("?"),
        queues
    );
    let hiprio = Vq::new(mmio, 0, 8, queue_ram);
    let req = Vq::new(mmio, 1, 8, queue_ram + 0x1_0000);
    check!(hiprio.is_some() && req.is_some(), "fs: queue setup failed");
    let Some(vq) = req else { finish(1) };
    mmio.driver_ok();
    check!(mmio.status() & 0x40 == 0, "fs: device needs reset");
    let mut fs = Fs { vq, unique: 0 };

    // INIT: major 7, minor 31, max_readahead 0, flags 0.
    let a = FS_IN + IN_HDR;
    write32(a, 7);
    write32(a + 4, 31);
    write32(a + 8, 0);
    write32(a + 12, 0);
    let (err, len) = fs.call(INIT, 0, 16);
    check!(err == 0 && len >= 8, "fs: INIT error {} len {}", err, len);
    println!(
        "testguest: fs init ok (FUSE {}.{})",
        read32(FS_OUT + OUT_HDR),
        read32(FS_OUT + OUT_HDR + 4)
    );

    // LOOKUP + OPEN + READ.
    let n = Fs::put_name(0, file);
    let (err, len) = fs.call(LOOKUP, ROOT, n);
    check!(err == 0 && len >= 128, "fs: LOOKUP error {}", err);
    let node = read64(FS_OUT + OUT_HDR);
    let size = read64(FS_OUT + OUT_HDR + 48);
    write32(a, 0); // O_RDONLY
    write32(a + 4, 0);
    let (err, len) = fs.call(OPEN, node, 8);
    check!(err == 0 && len >= 16, "fs: OPEN error {}", err);
    let fh = read64(FS_OUT + OUT_HDR);
    let want = size.min(4096) as u32;
    hw::write64(a, fh);
    hw::write64(a + 8, 0);
    write32(a + 16, want);
    write32(a + 20, 0);
    hw::write64(a + 24, 0);
    write32(a + 32, 0);
    write32(a + 36, 0);
    let (err, got) = fs.call(READ, node, 40);
    check!(err == 0, "fs: READ error {}", err);
    let mut text = [0u8; 128];
    let shown = (got as usize).min(text.len());
    for (k, b) in text[..shown].iter_mut().enumerate() {
        *b = read8(FS_OUT + OUT_HDR + k as u64);
    }
    println!(
        "testguest: fs read {} bytes (size {}): {}",
        got,
        size,
        core::str::from_utf8(&text[..shown]).unwrap_or("<not utf-8>")
    );
    fs.release(node, fh);

    // CREATE + WRITE.
    write32(a, O_WRONLY | O_CREAT | O_EXCL);
    write32(a + 4, 0o100644);
    write32(a + 8, 0o022);
    write32(a + 12, 0);
    let n = Fs::put_name(16, create);
    let (err, len) = fs.call(CREATE, ROOT, 16 + n);
    check!(err == 0 && len >= 144, "fs: CREATE error {}", err);
    let node = read64(FS_OUT + OUT_HDR);
    let fh = read64(FS_OUT + OUT_HDR + 128);
    hw::write64(a, fh);
    hw::write64(a + 8, 0);
    write32(a + 16, GUEST_TEXT.len() as u32);
    write32(a + 20, 0);
    hw::write64(a + 24, 0);
    write32(a + 32, 0);
    write32(a + 36, 0);
    for (k, b) in GUEST_TEXT.iter().enumerate() {
        hw::write8(a + 40 + k as u64, *b);
    }
    let (err, len) = fs.call(WRITE, node, 40 + GUEST_TEXT.len() as u32);
    check!(err == 0 && len >= 8, "fs: WRITE error {}", err);
    let written = read32(FS_OUT + OUT_HDR);
    check!(
        written as usize == GUEST_TEXT.len(),
        "fs: WRITE wrote {} bytes",
        written
    );
    fs.release(node, fh);
    println!("testguest: fs wrote {} bytes", written);
}
