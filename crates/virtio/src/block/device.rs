//! The virtio-blk device model: one request queue served synchronously against a
//! [`Disk`].

use std::sync::Arc;

use tracing::warn;
use virtio_queue::Queue;

use super::{Disk, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO};
use crate::device::{ActivateError, VirtioDevice};
use crate::queue::{complete, next_chain, wants_interrupt};
use crate::{device_type, GuestMemoryMmap, VIRTIO_F_VERSION_1};

/// Descriptors per request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Feature: `seg_max` in config space is valid.
const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];

/// A virtio block device.
#[derive(Debug)]
pub struct Block {
    disk: Disk,
    acked_features: u64,
    mem: Option<Arc<GuestMemoryMmap>>,
    queue: Option<Queue>,
    broken: bool,
}

impl Block {
    /// A block device serving `disk`.
    pub fn new(disk: Disk) -> Self {
        Self {
            disk,
            acked_features: 0,
            mem: None,
            queue: None,
            broken: false,
        }
    }

    /// Features for a disk with the given read-only flag.
    pub fn features_for(read_only: bool) -> u64 {
        let ro = if read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SEG_MAX | ro
    }

    /// Config space: capacity (u64), size_max (u32, unused), seg_max (u32).
    pub fn config_space(disk: &Disk) -> [u8; 16] {
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&disk.sectors().to_le_bytes());
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        config
    }

    /// Serves every available request of `queue`. Returns whether the driver wants an
    /// interrupt, or `Err` when the queue is corrupt and must not be used again.
    pub fn process_requests(
        disk: &mut Disk,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, virtio_queue::Error> {
        let mut used_any = false;
        while let Some(chain) = next_chain(queue, mem)? {
            let head = chain.head_index();
            let len = disk.execute(mem, chain);
            complete(queue, mem, head, len)?;
            used_any = true;
        }
        Ok(used_any && wants_interrupt(queue, mem))
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        Self::features_for(self.disk.read_only())
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&Self::config_space(&self.disk), offset, data);
    }

    fn activate(
        &mut self,
        mem: Arc<GuestMemoryMmap>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let Some(queue) = queues.into_iter().next() else {
            return Err(ActivateError::QueueCount { expected: 1, got });
        };
        self.queue = Some(queue);
        self.mem = Some(mem);
        self.broken = false;
        Ok(())
    }

    fn reset(&mut self) {
        self.queue = None;
        self.mem = None;
        self.acked_features = 0;
        self.broken = false;
    }

    fn process_queue(&mut self, index: usize) -> bool {
        let (Some(queue), Some(mem), 0) = (self.queue.as_mut(), self.mem.as_ref(), index) else {
            return false;
        };
        if self.broken {
            return false;
        }
        match Self::process_requests(&mut self.disk, queue, mem) {
            Ok(interrupt) => interrupt,
            Err(e) => {
                warn!("virtio-blk: request queue unusable: {e}");
                self.broken = true;
                true
            }
        }
    }

    fn is_broken(&self) -> bool {
        self.broken
    }

    // The disk is reopened by path on restore; all request handling is synchronous,
    // so the queue indices are the whole device state.
    fn snapshot_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        Some(self.queue.iter().map(virtio_queue::Queue::state).collect())
    }
}

/// Copies `config[offset..]` into `data`, zero-filling what lies beyond it.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::FileExt;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::block::request::{STATUS_IOERR, STATUS_OK, STATUS_UNSUPP};
    use crate::block::DiskConfig;
    use crate::test_utils::*;

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    }

    fn image(sectors: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..sectors * 512 {
            f.write_all(&[(i % 251) as u8]).unwrap();
        }
        Fixture { _dir: dir, path }
    }

    fn disk(fx: &Fixture, read_only: bool) -> Disk {
        Disk::open(&DiskConfig {
            path: fx.path.clone(),
            read_only,
            serial: Some("skiff-serial-0123456789".into()),
        })
        .unwrap()
    }

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }

    fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    /// Runs one chain through a fresh queue; returns (interrupt, used len).
    fn run(disk: &mut Disk, mem: &GuestMemoryMmap, bufs: &[(u64, u32, bool)]) -> u32 {
        let mock = MockSplitQueue::new(mem, 16);
        add_chain(&mock, 0, bufs);
        let mut q: Queue = mock.create_queue().unwrap();
        Block::process_requests(disk, &mut q, mem).unwrap();
        assert_eq!(used_idx(&mock), 1);
        used(&mock, 0).1
    }

    #[test]
    fn reads_sectors() {
        let fx = image(8);
        let mut d = disk(&fx, true);
        let mem = memory();
        header(&mem, 0, 2);
        let len = run(
            &mut d,
            &mem,
            &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)],
        );
        assert_eq!(len, 1025);
        assert_eq!(status(&mem), STATUS_OK);
        let got = read_bytes(&mem, DATA, 1024);
        let want: Vec<u8> = (1024..2048u64).map(|i| (i % 251) as u8).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn writes_sectors_and_flushes() {
        let fx = image(8);
        let mut d = disk(&fx, false);
        let mem = memory();
        mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        header(&mem, 1, 7);
        let len = run(
            &mut d,
            &mem,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        assert_eq!((len, status(&mem)), (1, STATUS_OK));
        let mut back = [0u8; 512];
        std::fs::File::open(&fx.path)
            .unwrap()
            .read_exact_at(&mut back, 7 * 512)
            .unwrap();
        assert_eq!(back, [0xab; 512]);

        header(&mem, 4, 0);
        let len = run(&mut d, &mem, &[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!((len, status(&mem)), (1, STATUS_OK));
    }

    #[test]
    fn write_to_read_only_disk_is_ioerr() {
        let fx = image(8);
        let mut d = disk(&fx, true);
        let mem = memory();
        header(&mem, 1, 0);
        run(
            &mut d,
            &mem,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        assert_eq!(status(&mem), STATUS_IOERR);
        let mut back = [0u8; 1];
        std::fs::File::open(&fx.path)
            .unwrap()
            .read_exact_at(&mut back, 0)
            .unwrap();
        assert_eq!(back[0], 0);
        assert_ne!(Block::features_for(true) & VIRTIO_BLK_F_RO, 0);
    }

    #[test]
    fn out_of_range_and_unaligned_requests_are_ioerr() {
        let fx = image(8);
        let mut d = disk(&fx, false);
        let mem = memory();
        for (sector, len) in [
            (8, 512),
            (7, 1024),
            (u64::MAX, 512),
            (u64::MAX / 512, 512),
            (0, 100),
        ] {
            header(&mem, 0, sector);
            run(
                &mut d,
                &mem,
                &[(HDR, 16, false), (DATA, len, true), (STATUS, 1, true)],
            );
            assert_eq!(status(&mem), STATUS_IOERR, "sector {sector} len {len}");
        }
    }

    #[test]
    fn get_id_returns_serial_and_unknown_type_is_unsupp() {
        let fx = image(1);
        let mut d = disk(&fx, true);
        let mem = memory();
        header(&mem, 8, 0);
        let len = run(
            &mut d,
            &mem,
            &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
        );
        assert_eq!(len, 21);
        assert_eq!(read_bytes(&mem, DATA, 20), b"skiff-serial-0123456");
        header(&mem, 99, 0);
        run(&mut d, &mem, &[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!(status(&mem), STATUS_UNSUPP);
    }

    #[test]
    fn malformed_chains_get_zero_length_and_no_memory_access() {
        let fx = image(8);
        let mut d = disk(&fx, false);
        let mem = memory();
        let outside = MEM_SIZE as u64 + 0x1000;
        let cases: &[&[(u64, u32, bool)]] = &[
            // no writable status byte
            &[(HDR, 16, false)],
            // data buffer outside guest memory
            &[(HDR, 16, false), (outside, 512, true), (STATUS, 1, true)],
            // header outside guest memory
            &[(outside, 16, false), (STATUS, 1, true)],
            // huge length running past the end of memory
            &[(HDR, 16, false), (DATA, u32::MAX, true), (STATUS, 1, true)],
            // address that wraps around
            &[
                (HDR, 16, false),
                (u64::MAX - 10, 512, true),
                (STATUS, 1, true),
            ],
        ];
        for bufs in cases {
            header(&mem, 0, 0);
            assert_eq!(run(&mut d, &mem, bufs), 0, "{bufs:?}");
        }
        // zero-length header: short read, IOERR in the status byte
        header(&mem, 0, 0);
        run(&mut d, &mem, &[(HDR, 0, false), (STATUS, 1, true)]);
        assert_eq!(status(&mem), STATUS_IOERR);
    }

    #[test]
    fn descriptor_loop_terminates() {
        let fx = image(8);
        let mut d = disk(&fx, false);
        let mem = memory();
        header(&mem, 0, 0);
        let mock = MockSplitQueue::new(&mem, 16);
        // 0 -> 1 -> 0 -> ...: virtio-queue stops after queue-size descriptors.
        mock.add_desc_chains(
            &[
                desc(HDR, 16, F_NEXT, 1),
                desc(DATA, 512, F_NEXT | F_WRITE, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = mock.create_queue().unwrap();
        let _ = Block::process_requests(&mut d, &mut q, &mem);
    }

    #[test]
    fn corrupt_avail_index_breaks_the_device() {
        let fx = image(8);
        let mem = memory();
        let mock = MockSplitQueue::new(&mem, 16);
        let q: Queue = mock.create_queue().unwrap();
        // The driver claims 1000 new buffers in a 16-entry ring.
        mock.avail().idx().store(1000);
        let mut dev = Block::new(disk(&fx, false));
        dev.activate(Arc::new(mem.clone()), vec![q]).unwrap();
        assert!(dev.process_queue(0));
        assert!(dev.is_broken());
        // Once broken, further notifications are ignored.
        assert!(!dev.process_queue(0));
    }

    #[test]
    fn notification_flood_without_buffers_is_cheap_and_harmless() {
        let fx = image(8);
        let mem = memory();
        let mock = MockSplitQueue::new(&mem, 16);
        let q: Queue = mock.create_queue().unwrap();
        let mut dev = Block::new(disk(&fx, false));
        dev.activate(Arc::new(mem.clone()), vec![q]).unwrap();
        for _ in 0..100_000 {
            assert!(!dev.process_queue(0));
        }
        assert!(!dev.process_queue(7));
        assert_eq!(used_idx(&mock), 0);
        assert!(!dev.is_broken());
    }

    #[test]
    fn config_space_reports_capacity() {
        let fx = image(8);
        let dev = Block::new(disk(&fx, false));
        let mut cap = [0u8; 8];
        dev.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
        let mut beyond = [0xffu8; 4];
        dev.read_config(4096, &mut beyond);
        assert_eq!(beyond, [0; 4]);
    }
}
