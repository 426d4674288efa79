//! The virtio-net device model: an rx and a tx queue bridged to a [`Tap`].

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use tracing::{debug, warn};
use virtio_queue::{Queue, Reader, Writer};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::{Tap, MAX_FRAME, VIRTIO_NET_F_MAC, VNET_HDR_LEN};
use crate::block::device::read_config_bytes;
use crate::device::{ActivateError, VirtioDevice};
use crate::queue::{complete, next_chain, wants_interrupt};
use crate::{device_type, GuestMemoryMmap, VIRTIO_F_VERSION_1};

/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];
/// Frames to the guest.
pub const RX_QUEUE: usize = 0;
/// Frames from the guest.
pub const TX_QUEUE: usize = 1;

/// A virtio network device backed by a TAP interface.
pub struct Net {
    tap: Tap,
    mac: [u8; 6],
    /// Holds the TAP fd only while the guest has receive buffers, so an unread TAP
    /// never wakes the event loop in vain.
    epoll: Epoll,
    tap_polled: bool,
    mem: Option<Arc<GuestMemoryMmap>>,
    queues: Vec<Queue>,
    frame: Vec<u8>,
    pending: Option<usize>,
    broken: bool,
}

impl Net {
    /// A device with MAC `mac` on `tap`.
    pub fn new(tap: Tap, mac: [u8; 6]) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        Ok(Self {
            tap,
            mac,
            epoll,
            tap_polled: false,
            mem: None,
            queues: Vec::new(),
            frame: vec![0; MAX_FRAME],
            pending: None,
            broken: false,
        })
    }

    fn poll_tap(&mut self, on: bool) {
        if self.tap_polled == on {
            return;
        }
        let op = if on {
            ControlOperation::Add
        } else {
            ControlOperation::Delete
        };
        match self
            .epoll
            .ctl(op, self.tap.as_raw_fd(), EpollEvent::new(EventSet::IN, 0))
        {
            Ok(()) => self.tap_polled = on,
            Err(e) => warn!("virtio-net: epoll on {}: {e}", self.tap.name()),
        }
    }

    /// Moves frames from the TAP into guest receive buffers.
    fn fill_rx(&mut self, mem: &GuestMemoryMmap) -> Result<bool, virtio_queue::Error> {
        let mut used_any = false;
        loop {
            let len = match self.pending {
                Some(n) => n,
                None => match self.tap.read_frame(&mut self.frame) {
                    Ok(n) if n >= VNET_HDR_LEN => n,
                    Ok(_) => continue, // runt: drop it
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn!("virtio-net: reading {}: {e}", self.tap.name());
                        self.poll_tap(false);
                        break;
                    }
                },
            };
            self.pending = Some(len);
            let Some(rx) = self.queues.get_mut(RX_QUEUE) else {
                break;
            };
            let Some(chain) = next_chain(rx, mem)? else {
                // No buffers: stop watching the TAP until the driver adds some.
                self.poll_tap(false);
                break;
            };
            let head = chain.head_index();
            let mut writer = match Writer::new(mem, chain) {
                Ok(w) if w.available_bytes() >= len => w,
                _ => {
                    // Give the unusable buffer back empty; the frame waits for the next.
                    debug!("virtio-net: receive buffer too small for {len} bytes or invalid");
                    complete(rx, mem, head, 0)?;
                    used_any = true;
                    continue;
                }
            };
            self.pending = None;
            // num_buffers: always one buffer (no VIRTIO_NET_F_MRG_RXBUF).
            self.frame[10..12].copy_from_slice(&1u16.to_le_bytes());
            let written = writer
                .write_all(&self.frame[..len])
                .map(|()| len)
                .unwrap_or(0);
            complete(rx, mem, head, u32::try_from(written).unwrap_or(0))?;
            used_any = true;
        }
        let rx_wants = match self.queues.get_mut(RX_QUEUE) {
            Some(rx) => used_any && wants_interrupt(rx, mem),
            None => false,
        };
        Ok(rx_wants)
    }

    /// Sends every frame the guest queued.
    fn drain_tx(&mut self, mem: &GuestMemoryMmap) -> Result<bool, virtio_queue::Error> {
        let Some(tx) = self.queues.get_mut(TX_QUEUE) else {
            return Ok(false);
        };
        let mut used_any = false;
        let mut frame = Vec::new();
        while let Some(chain) = next_chain(tx, mem)? {
            let head = chain.head_index();
            match Reader::new(mem, chain) {
                Ok(mut reader) => {
                    let len = reader.available_bytes();
                    if (VNET_HDR_LEN..=MAX_FRAME).contains(&len) {
                        frame.resize(len, 0);
                        if reader.read_exact(&mut frame).is_ok() {
                            if let Err(e) = self.tap.write_frame(&frame) {
                                debug!("virtio-net: frame dropped by {}: {e}", self.tap.name());
                            }
                        }
                    } else {
                        debug!("virtio-net: dropping tx chain of {len} bytes");
                    }
                }
                Err(e) => debug!("virtio-net: tx chain outside guest memory: {e}"),
            }
            complete(tx, mem, head, 0)?;
            used_any = true;
        }
        Ok(used_any && wants_interrupt(tx, mem))
    }

    fn run(
        &mut self,
        f: impl FnOnce(&mut Self, &GuestMemoryMmap) -> Result<bool, virtio_queue::Error>,
    ) -> bool {
        if self.broken || self.queues.len() < QUEUE_SIZES.len() {
            return false;
        }
        let Some(mem) = self.mem.clone() else {
            return false;
        };
        match f(self, &mem) {
            Ok(interrupt) => interrupt,
            Err(e) => {
                warn!("virtio-net: queue unusable: {e}");
                self.broken = true;
                true
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.mac, offset, data);
    }

    fn activate(
        &mut self,
        mem: Arc<GuestMemoryMmap>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if queues.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount {
                expected: QUEUE_SIZES.len(),
                got: queues.len(),
            });
        }
        self.queues = queues;
        self.mem = Some(mem);
        self.broken = false;
        self.poll_tap(true);
        Ok(())
    }

    fn reset(&mut self) {
        self.queues.clear();
        self.mem = None;
        self.pending = None;
        self.broken = false;
        self.poll_tap(false);
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match index {
            RX_QUEUE => self.run(|net, mem| {
                net.poll_tap(true);
                net.fill_rx(mem)
            }),
            TX_QUEUE => self.run(|net, mem| net.drain_tx(mem)),
            _ => false,
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn process_backend(&mut self) -> bool {
        if self.queues.is_empty() || self.broken {
            // Not started or given up: keep the TAP's frames but stop the wake-ups.
            self.poll_tap(false);
            return false;
        }
        let mut events = [EpollEvent::default(); 4];
        let _ = self.epoll.wait(0, &mut events);
        self.run(|net, mem| net.fill_rx(mem))
    }

    fn is_broken(&self) -> bool {
        self.broken
    }

    // Frames in flight on the TAP are not part of the state: a network may drop them.
    fn snapshot_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        Some(self.queues.iter().map(Queue::state).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::test_utils::*;

    /// A fresh TAP, or None (with a loud skip) where TAP devices cannot be created.
    fn tap(tag: &str) -> Option<Tap> {
        let name = format!("skt{}{tag}", std::process::id() % 100_000);
        match Tap::open(&name) {
            Ok(t) => Some(t),
            Err(e) => {
                if std::env::var("SKIFF_REQUIRE_ALL").is_ok_and(|v| v == "1") {
                    panic!("SKIFF_REQUIRE_ALL=1 but no TAP: {e}");
                }
                eprintln!("SKIPPED: cannot create a TAP device (needs root and /dev/net/tun): {e}");
                None
            }
        }
    }

    fn link_up(name: &str) -> bool {
        Command::new("ip")
            .args(["link", "set", "dev", name, "up"])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn stat(name: &str, what: &str) -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/{what}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    const FRAME: [u8; 60] = {
        let mut f = [0u8; 60];
        let mut i = 0;
        while i < 6 {
            f[i] = 0xff; // broadcast destination
            f[6 + i] = 0x02; // locally administered source
            i += 1;
        }
        f[12] = 0x88; // ethertype 0x88b5: local experimental
        f[13] = 0xb5;
        let mut j = 14;
        while j < 60 {
            f[j] = j as u8;
            j += 1;
        }
        f
    };

    fn device(
        tap: Tap,
        mem: &GuestMemoryMmap,
        rx: &MockSplitQueue<'_, GuestMemoryMmap>,
        tx: &MockSplitQueue<'_, GuestMemoryMmap>,
    ) -> Net {
        let mut net = Net::new(tap, [2, 0x53, 0x4b, 0x49, 0x46, 1]).unwrap();
        net.activate(
            Arc::new(mem.clone()),
            vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()],
        )
        .unwrap();
        net
    }

    #[test]
    fn guest_frames_reach_the_tap() {
        let Some(tap) = tap("t") else { return };
        let name = tap.name().to_string();
        assert!(link_up(&name), "ip link set up failed");
        let mem = memory();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
        let mut net = device(tap, &mem, &rx, &tx);
        let before = stat(&name, "rx_packets");
        let mut bytes = vec![0u8; VNET_HDR_LEN];
        bytes.extend_from_slice(&FRAME);
        mem.write_slice(&bytes, GuestAddress(0x10_0000)).unwrap();
        add_chain(
            &tx,
            0,
            &[
                (0x10_0000, VNET_HDR_LEN as u32, false),
                (0x10_0000 + VNET_HDR_LEN as u64, 60, false),
            ],
        );
        // Oversized and out-of-memory chains are dropped, not sent.
        add_chain(&tx, 2, &[(0x10_0000, 5, false)]);
        add_chain(&tx, 3, &[(MEM_SIZE as u64 * 4, 100, false)]);
        net.process_queue(TX_QUEUE);
        assert_eq!(used_idx(&tx), 3);
        assert_eq!(
            stat(&name, "rx_packets"),
            before + 1,
            "the host saw exactly one frame"
        );
    }

    #[test]
    fn host_frames_reach_guest_buffers() {
        let Some(tap) = tap("r") else { return };
        let name = tap.name().to_string();
        assert!(link_up(&name), "ip link set up failed");
        let mem = memory();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
        let mut net = device(tap, &mem, &rx, &tx);
        // One buffer too small for any frame, then good ones.
        add_chain(&rx, 0, &[(0x20_0000, 20, true)]);
        for i in 1..8u16 {
            add_chain(&rx, i, &[(0x20_0000 + u64::from(i) * 0x1000, 2048, true)]);
        }
        net.process_queue(RX_QUEUE);

        // Send FRAME out of the interface with a packet socket: it arrives on the TAP.
        // SAFETY: plain socket(2); checked below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0);
        let ifname = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        // SAFETY: all-zero sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: FRAME and addr are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                fd,
                FRAME.as_ptr().cast(),
                FRAME.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        assert_eq!(sent, 60);

        let mut found = false;
        for _ in 0..100 {
            net.process_backend();
            for i in 0..used_idx(&rx) {
                let (id, len) = used(&rx, usize::from(i));
                if len as usize == VNET_HDR_LEN + 60 {
                    let got = read_bytes(&mem, 0x20_0000 + u64::from(id) * 0x1000, len as usize);
                    assert_eq!(&got[10..12], &[1, 0], "num_buffers");
                    found |= got[VNET_HDR_LEN..] == FRAME[..];
                }
            }
            if found {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(found, "frame sent on {name} never reached the guest");
        // The 20-byte buffer came back empty instead of holding a truncated frame.
        assert_eq!(used(&rx, 0), (0, 0));
    }

    #[test]
    fn bad_tap_names_are_refused() {
        for name in ["", "a/b", "0123456789abcdef", "x y"] {
            assert!(
                matches!(Tap::open(name), Err(super::super::tap::TapError::Name(_))),
                "{name:?}"
            );
        }
    }
}
