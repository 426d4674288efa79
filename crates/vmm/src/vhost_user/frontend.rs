//! The front end side of vhost-user: a virtio-mmio device whose queues another process
//! (the backend, e.g. `virtiofsd`) serves. skiff-vmm keeps the transport (registers,
//! feature negotiation, queue configuration, config space) and relays only addresses:
//!
//! - guest RAM is a shared memfd; the backend receives it with `SET_MEM_TABLE` and
//!   does all descriptor walking and I/O itself, bounds-checked against that table;
//! - queue addresses are checked by the transport (inside guest RAM) and here (each
//!   ring inside one memory region) before they are translated and sent;
//! - kicks: the transport's queue-notify eventfds (KVM ioeventfds) are the backend's
//!   kick fds, so a notification reaches the backend without this process;
//! - calls: the backend signals our call eventfds; the device thread relays them as a
//!   used-ring interrupt, because virtio-mmio's InterruptStatus must say why.
//!
//! Generic over the device type; [`fs_device`] builds virtio-fs (device ID 26).

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use skiff_virtio::{ActivateError, GuestMemoryMmap, VirtioDevice, VIRTIO_F_VERSION_1};
use tracing::{debug, warn};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::protocol_feature_bit;

/// virtio-fs device ID (virtio 1.2, 5.11).
pub const DEVICE_FS: u32 = 26;
/// Length of virtio-fs's tag field in config space.
pub const FS_TAG_LEN: usize = 36;
/// Entries per queue the guest may configure.
pub const QUEUE_SIZE: u16 = 256;

const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// Features relayed from the backend to the guest: only split-ring features this
/// transport understands (no packed ring, no IOMMU platform).
const RELAYED_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;

/// Why a vhost-user device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("vhost-user backend {path}: {message}")]
    Backend { path: String, message: String },
    #[error("virtio-fs tag {0:?} must be 1..=36 bytes")]
    Tag(String),
    #[error("vhost-user device: {0}")]
    Io(#[from] std::io::Error),
}

/// A virtio-fs device served by the vhost-user backend listening on `socket`, with
/// `tag` as its mount tag and one request queue.
pub fn fs_device(tag: &str, socket: &Path) -> Result<VhostUserDevice, FrontendError> {
    if tag.is_empty() || tag.len() > FS_TAG_LEN {
        return Err(FrontendError::Tag(tag.to_owned()));
    }
    let num_request_queues: u32 = 1;
    let mut config = vec![0u8; FS_TAG_LEN + 4];
    config[..tag.len()].copy_from_slice(tag.as_bytes());
    config[FS_TAG_LEN..].copy_from_slice(&num_request_queues.to_le_bytes());
    // Queue 0 is the high-priority queue, then the request queues.
    let queues = vec![QUEUE_SIZE; 1 + num_request_queues as usize];
    VhostUserDevice::connect(DEVICE_FS, queues, config, socket)
}

/// A virtio device whose queues a vhost-user backend process serves.
pub struct VhostUserDevice {
    frontend: Frontend,
    socket: String,
    device_type: u32,
    queue_sizes: Vec<u16>,
    config: Vec<u8>,
    /// Features offered to the guest (backend's, filtered).
    offered: u64,
    /// Whether the backend speaks VHOST_USER_F_PROTOCOL_FEATURES.
    protocol: bool,
    acked: u64,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    /// Readable when any call eventfd is.
    call_epoll: Epoll,
    /// Queues handed to the backend (to stop them on reset).
    started: Vec<usize>,
    broken: bool,
}

fn backend_err(socket: &str) -> impl Fn(vhost::Error) -> FrontendError {
    let path = socket.to_owned();
    move |e| FrontendError::Backend {
        path: path.clone(),
        message: e.to_string(),
    }
}

impl VhostUserDevice {
    /// Connects to the backend on `socket` and learns its features. `config` is the
    /// device's config space as the guest reads it.
    pub fn connect(
        device_type: u32,
        queue_sizes: Vec<u16>,
        config: Vec<u8>,
        socket: &Path,
    ) -> Result<Self, FrontendError> {
        let name = socket.display().to_string();
        let err = backend_err(&name);
        let mut frontend = Frontend::connect(socket, queue_sizes.len() as u64).map_err(&err)?;
        frontend.set_owner().map_err(&err)?;
        let backend_features = frontend.get_features().map_err(&err)?;
        let protocol = backend_features & protocol_feature_bit() != 0;
        if protocol {
            // Nothing optional is needed: config space and queue count are ours.
            let offered = frontend.get_protocol_features().map_err(&err)?;
            frontend
                .set_protocol_features(offered & VhostUserProtocolFeatures::empty())
                .map_err(&err)?;
        }
        if backend_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(FrontendError::Backend {
                path: name,
                message: "the backend does not offer VIRTIO_F_VERSION_1".into(),
            });
        }
        let call_epoll = Epoll::new()?;
        let calls = queue_sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, call) in calls.iter().enumerate() {
            call_epoll.ctl(
                ControlOperation::Add,
                call.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        debug!("vhost-user {name}: backend features {backend_features:#x}");
        Ok(Self {
            frontend,
            socket: name,
            device_type,
            queue_sizes,
            config,
            offered: backend_features & RELAYED_FEATURES,
            protocol,
            acked: 0,
            kicks: Vec::new(),
            calls,
            call_epoll,
            started: Vec::new(),
            broken: false,
        })
    }

    /// Sends the memory table and every ready queue to the backend.
    fn start(&mut self, mem: &GuestMemoryMmap, queues: &[Queue]) -> Result<(), ActivateError> {
        let fail = |what: &str, e: vhost::Error| {
            ActivateError::Backend(std::io::Error::other(format!(
                "vhost-user {}: {what}: {e}",
                self.socket
            )))
        };
        let mut features = self.acked & self.offered;
        if self.protocol {
            features |= protocol_feature_bit();
        }
        self.frontend
            .set_features(features)
            .map_err(|e| fail("SET_FEATURES", e))?;
        let regions = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail("guest memory is not shareable", e))?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(|e| fail("SET_MEM_TABLE", e))?;
        for (i, q) in queues.iter().enumerate() {
            if !q.ready() {
                continue;
            }
            let size = q.size();
            let rings = [
                (q.desc_table(), 16 * usize::from(size)),
                (q.avail_ring(), 6 + 2 * usize::from(size)),
                (q.used_ring(), 6 + 8 * usize::from(size)),
            ];
            let mut host = [0u64; 3];
            for (slot, (gpa, len)) in host.iter_mut().zip(rings) {
                *slot = host_address(mem, gpa, len).ok_or_else(|| {
                    ActivateError::Backend(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "queue {i}: ring at {gpa:#x} (+{len}) is not inside one RAM region"
                        ),
                    ))
                })?;
            }
            let (Some(kick), Some(call)) = (self.kicks.get(i), self.calls.get(i)) else {
                return Err(ActivateError::QueueCount {
                    expected: self.kicks.len().min(self.calls.len()),
                    got: i + 1,
                });
            };
            let vring = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: size,
                flags: 0,
                desc_table_addr: host[0],
                avail_ring_addr: host[1],
                used_ring_addr: host[2],
                log_addr: None,
            };
            self.started.push(i);
            self.frontend
                .set_vring_num(i, size)
                .map_err(|e| fail("SET_VRING_NUM", e))?;
            self.frontend
                .set_vring_addr(i, &vring)
                .map_err(|e| fail("SET_VRING_ADDR", e))?;
            self.frontend
                .set_vring_base(i, q.next_avail())
                .map_err(|e| fail("SET_VRING_BASE", e))?;
            self.frontend
                .set_vring_call(i, call)
                .map_err(|e| fail("SET_VRING_CALL", e))?;
            self.frontend
                .set_vring_kick(i, kick)
                .map_err(|e| fail("SET_VRING_KICK", e))?;
            if self.protocol {
                self.frontend
                    .set_vring_enable(i, true)
                    .map_err(|e| fail("SET_VRING_ENABLE", e))?;
            }
        }
        Ok(())
    }

    /// Stops the queues the backend is serving (GET_VRING_BASE stops a vring).
    fn stop(&mut self) {
        for i in std::mem::take(&mut self.started) {
            if let Err(e) = self.frontend.get_vring_base(i) {
                warn!("vhost-user {}: stopping queue {i}: {e}", self.socket);
                self.broken = true;
            }
        }
    }
}

/// The host address of guest range `[gpa, gpa+len)`, if it lies inside one region
/// (the backend maps regions separately, so a ring may not straddle two).
fn host_address(mem: &GuestMemoryMmap, gpa: u64, len: usize) -> Option<u64> {
    let slice = mem.get_slice(GuestAddress(gpa), len).ok()?;
    Some(slice.ptr_guard().as_ptr() as u64)
}

impl VirtioDevice for VhostUserDevice {
    fn device_type(&self) -> u32 {
        self.device_type
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.offered;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        skiff_virtio::block::device::read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: Arc<GuestMemoryMmap>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if queues.len() != self.queue_sizes.len() {
            return Err(ActivateError::QueueCount {
                expected: self.queue_sizes.len(),
                got: queues.len(),
            });
        }
        let result = self.start(&mem, &queues);
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn reset(&mut self) {
        self.stop();
        self.acked = 0;
    }

    fn process_queue(&mut self, _index: usize) -> bool {
        // Kicks go straight to the backend (see take_queue_events).
        false
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.call_epoll.as_raw_fd())
    }

    fn process_backend(&mut self) -> bool {
        let mut any = false;
        for call in &self.calls {
            // Nonblocking: Err(WouldBlock) when this queue had no call.
            if call.read().is_ok() {
                any = true;
            }
        }
        any
    }

    fn is_broken(&self) -> bool {
        self.broken
    }

    fn take_queue_events(&mut self, events: &[EventFd]) -> std::io::Result<bool> {
        self.kicks = events
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_must_sit_inside_one_region() {
        let mem = crate::vstate::memory::create_guest_memory_with(
            4,
            crate::vstate::memory::Backing::SharedMemfd,
        )
        .unwrap();
        assert!(host_address(&mem, 0x1000, 4096).is_some());
        assert!(
            host_address(&mem, (4 << 20) - 8, 16).is_none(),
            "past the end"
        );
        assert!(host_address(&mem, u64::MAX - 4, 16).is_none(), "wraps");
    }

    /// The front end against skiff's own vhost-user-blk backend (another device type):
    /// queue setup crosses the socket, the kick reaches the backend without us, and
    /// its call comes back as an interrupt to relay.
    #[test]
    fn drives_a_vhost_user_blk_backend_and_relays_its_call() {
        use vm_memory::Bytes;
        use vmm_sys_util::epoll::EpollEvent;

        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.img");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let socket = dir.path().join("blk.sock");
        let config = crate::vmm_config::DiskConfig {
            path: disk,
            read_only: false,
            serial: Some("front-end-test".into()),
        };
        let sock = socket.clone();
        let backend = std::thread::spawn(move || super::super::serve_block(&sock, config, false));
        while !socket.exists() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut dev =
            VhostUserDevice::connect(skiff_virtio::device_type::BLOCK, vec![16], vec![], &socket)
                .unwrap();
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        assert!(dev.take_queue_events(std::slice::from_ref(&kick)).unwrap());
        assert_ne!(dev.features() & VIRTIO_F_VERSION_1, 0);
        dev.ack_features(VIRTIO_F_VERSION_1);

        let mem = Arc::new(
            crate::vstate::memory::create_guest_memory_with(
                4,
                crate::vstate::memory::Backing::SharedMemfd,
            )
            .unwrap(),
        );
        // GET_ID: header (type 8) -> 20-byte id buffer -> status byte.
        let (desc, avail, used) = (0x1000u64, 0x2000u64, 0x3000u64);
        let (hdr, id, status) = (0x10000u64, 0x11000u64, 0x12000u64);
        let put_desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            let d = desc + 16 * i;
            mem.write_obj(addr, GuestAddress(d)).unwrap();
            mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            mem.write_obj(next, GuestAddress(d + 14)).unwrap();
        };
        mem.write_obj(8u32, GuestAddress(hdr)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        put_desc(0, hdr, 16, 1, 1);
        put_desc(1, id, 20, 1 | 2, 2);
        put_desc(2, status, 1, 2, 0);
        mem.write_obj(0u16, GuestAddress(avail + 4)).unwrap(); // ring[0] = head 0
        mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap(); // idx = 1
        let mut q = Queue::new(16).unwrap();
        q.set_desc_table_address(Some(desc as u32), Some(0));
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        q.set_used_ring_address(Some(used as u32), Some(0));
        q.set_ready(true);
        dev.activate(mem.clone(), vec![q]).unwrap();
        kick.write(1).unwrap();

        let epoll = Epoll::new().unwrap();
        let fd = dev.backend_fd().unwrap();
        epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
            .unwrap();
        let mut events = [EpollEvent::default(); 1];
        assert_eq!(epoll.wait(10_000, &mut events).unwrap(), 1, "no call");
        assert!(dev.process_backend(), "the call must become an interrupt");
        assert!(!dev.process_backend(), "calls are drained");
        assert_eq!(mem.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), 1);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(status)).unwrap(), 0);
        let mut got = [0u8; 14];
        mem.read_slice(&mut got, GuestAddress(id)).unwrap();
        assert_eq!(&got, b"front-end-test");

        dev.reset();
        drop(dev); // disconnects: the backend returns
        assert!(backend.join().is_ok());
    }

    #[test]
    fn bad_tags_and_missing_backends_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        assert!(matches!(fs_device("", &sock), Err(FrontendError::Tag(_))));
        assert!(matches!(
            fs_device(&"x".repeat(37), &sock),
            Err(FrontendError::Tag(_))
        ));
        let e = fs_device("t", &sock).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("none.sock")));
    }
}
