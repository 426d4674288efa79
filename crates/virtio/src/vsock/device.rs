//! The virtio-vsock device model: moves packets between the guest's rx/tx queues and
//! the [`VsockMuxer`].

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use tracing::{debug, warn};
use virtio_queue::{Queue, QueueOwnedT, Reader, Writer};

use super::packet::{PacketHeader, HEADER_LEN, MAX_PAYLOAD};
use super::VsockMuxer;
use crate::block::device::read_config_bytes;
use crate::device::{ActivateError, VirtioDevice};
use crate::queue::{complete, next_chain, wants_interrupt};
use crate::{device_type, GuestMemoryMmap, VIRTIO_F_VERSION_1};

/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];
/// Queue indices.
pub const RX_QUEUE: usize = 0;
/// Guest-to-host packets.
pub const TX_QUEUE: usize = 1;
/// Transport events (only the reset after a snapshot restore).
pub const EVENT_QUEUE: usize = 2;

/// Consumes every packet the guest queued on `tx`. Malformed packets (short header,
/// payload longer than announced buffers or [`MAX_PAYLOAD`], memory outside the guest)
/// are dropped. Returns whether the driver wants an interrupt.
pub fn process_tx(
    muxer: &mut VsockMuxer,
    tx: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<bool, virtio_queue::Error> {
    let mut used_any = false;
    let mut payload = Vec::new();
    while let Some(chain) = next_chain(tx, mem)? {
        let head = chain.head_index();
        match Reader::new(mem, chain) {
            Ok(mut reader) => {
                if let Some(hdr) = read_packet(&mut reader, &mut payload) {
                    muxer.handle_guest_packet(&hdr, &payload);
                }
            }
            Err(e) => debug!("vsock: tx chain outside guest memory: {e}"),
        }
        complete(tx, mem, head, 0)?;
        used_any = true;
    }
    Ok(used_any && wants_interrupt(tx, mem))
}

fn read_packet(reader: &mut Reader<'_>, payload: &mut Vec<u8>) -> Option<PacketHeader> {
    let mut raw = [0u8; HEADER_LEN];
    if reader.read_exact(&mut raw).is_err() {
        debug!("vsock: short tx header");
        return None;
    }
    let hdr = PacketHeader::decode(&raw);
    let len = hdr.len as usize;
    if len > MAX_PAYLOAD || len > reader.available_bytes() {
        debug!("vsock: tx payload of {len} bytes does not fit");
        return None;
    }
    payload.resize(len, 0);
    reader.read_exact(payload).ok()?;
    Some(hdr)
}

/// Fills guest receive buffers with whatever the muxer has for the guest. Returns
/// whether the driver wants an interrupt.
pub fn fill_rx(
    muxer: &mut VsockMuxer,
    rx: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<bool, virtio_queue::Error> {
    let mut used_any = false;
    let mut payload = Vec::new();
    while muxer.has_rx_work() {
        let Some(chain) = next_chain(rx, mem)? else {
            muxer.set_rx_starved(true);
            break;
        };
        let head = chain.head_index();
        let mut writer = match Writer::new(mem, chain) {
            Ok(w) if w.available_bytes() >= HEADER_LEN => w,
            Ok(_) | Err(_) => {
                debug!("vsock: unusable rx buffer");
                complete(rx, mem, head, 0)?;
                used_any = true;
                continue;
            }
        };
        let room = (writer.available_bytes() - HEADER_LEN).min(MAX_PAYLOAD);
        let Some(hdr) = muxer.next_packet(room, &mut payload) else {
            rx.go_to_previous_position();
            break;
        };
        let written = writer
            .write_all(&hdr.encode())
            .and_then(|()| writer.write_all(&payload));
        if written.is_err() {
            warn!("vsock: rx buffer write failed, packet lost");
        }
        let len = u32::try_from(writer.bytes_written()).unwrap_or(u32::MAX);
        complete(rx, mem, head, len)?;
        used_any = true;
    }
    Ok(used_any && wants_interrupt(rx, mem))
}

/// A virtio-vsock device whose host side is a [`VsockMuxer`].
#[derive(Debug)]
pub struct Vsock {
    muxer: VsockMuxer,
    mem: Option<Arc<GuestMemoryMmap>>,
    queues: Vec<Queue>,
    broken: bool,
}

impl Vsock {
    /// A device for the guest behind `muxer`.
    pub fn new(muxer: VsockMuxer) -> Self {
        Self {
            muxer,
            mem: None,
            queues: Vec::new(),
            broken: false,
        }
    }

    /// The host side.
    pub fn muxer(&self) -> &VsockMuxer {
        &self.muxer
    }

    fn run(
        &mut self,
        f: impl FnOnce(
            &mut VsockMuxer,
            &mut [Queue],
            &GuestMemoryMmap,
        ) -> Result<bool, virtio_queue::Error>,
    ) -> bool {
        if self.broken || self.queues.len() < 2 {
            return false;
        }
        let Some(mem) = self.mem.as_ref() else {
            return false;
        };
        match f(&mut self.muxer, &mut self.queues, mem) {
            Ok(interrupt) => interrupt,
            Err(e) => {
                warn!("vsock: queue unusable: {e}");
                self.broken = true;
                true
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.muxer.guest_cid().to_le_bytes(), offset, data);
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
        self.muxer.set_rx_starved(false);
        Ok(())
    }

    fn reset(&mut self) {
        self.queues.clear();
        self.mem = None;
        self.broken = false;
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match index {
            RX_QUEUE => self.run(|muxer, queues, mem| {
                muxer.set_rx_starved(false);
                fill_rx(muxer, &mut queues[RX_QUEUE], mem)
            }),
            TX_QUEUE => self.run(|muxer, queues, mem| {
                let tx = process_tx(muxer, &mut queues[TX_QUEUE], mem)?;
                let rx = fill_rx(muxer, &mut queues[RX_QUEUE], mem)?;
                Ok(tx || rx)
            }),
            _ => false,
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.muxer.epoll_fd())
    }

    fn process_backend(&mut self) -> bool {
        // Accept clients and read CONNECT lines even while the driver is not ready.
        self.muxer.process_host_events();
        if self.broken || self.queues.len() < 2 || self.mem.is_none() {
            // Nowhere to deliver: stop polling streams until the driver is back.
            self.muxer.set_rx_starved(true);
            return false;
        }
        self.run(|muxer, queues, mem| fill_rx(muxer, &mut queues[RX_QUEUE], mem))
    }

    fn is_broken(&self) -> bool {
        self.broken
    }

    // Host-side connections (UNIX sockets) cannot survive into another process: the
    // restored device starts with none and tells the driver so with a transport reset.
    fn snapshot_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        Some(self.queues.iter().map(Queue::state).collect())
    }

    fn restored(&mut self) -> bool {
        let Some(mem) = self.mem.clone() else {
            return false;
        };
        let Some(evq) = self.queues.get_mut(EVENT_QUEUE) else {
            return false;
        };
        send_transport_reset(evq, &mem)
    }
}

/// Posts `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` (id 0) to the event queue, if the driver
/// left a buffer there; returns whether to interrupt.
fn send_transport_reset(evq: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    const TRANSPORT_RESET: u32 = 0;
    let chain = match next_chain(evq, mem) {
        Ok(Some(chain)) => chain,
        Ok(None) => {
            warn!("vsock: no event buffer for the transport reset after restore");
            return false;
        }
        Err(e) => {
            warn!("vsock: event queue unusable: {e}");
            return false;
        }
    };
    let head = chain.head_index();
    let mut len = 0;
    if let Ok(mut writer) = Writer::new(mem, chain) {
        if writer.write_all(&TRANSPORT_RESET.to_le_bytes()).is_ok() {
            len = 4;
        }
    }
    if complete(evq, mem, head, len).is_err() {
        return false;
    }
    wants_interrupt(evq, mem)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::time::Duration;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::test_utils::*;
    use crate::vsock::packet::{op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
    use crate::vsock::HOST_CID;

    const CID: u64 = 3;

    struct Guest<'a> {
        mem: &'a GuestMemoryMmap,
        rx: MockSplitQueue<'a, GuestMemoryMmap>,
        tx: MockSplitQueue<'a, GuestMemoryMmap>,
        rxq: Queue,
        txq: Queue,
        rx_next: u16,
        tx_next: u16,
        rx_seen: u16,
        rx_bufs: HashMap<u32, u64>,
        next_buf: u64,
    }

    #[allow(clippy::too_many_arguments)]
    impl<'a> Guest<'a> {
        fn new(mem: &'a GuestMemoryMmap) -> Self {
            let rx = MockSplitQueue::create(mem, GuestAddress(0), 64);
            let tx = MockSplitQueue::create(mem, GuestAddress(0x8000), 64);
            let rxq = rx.create_queue().unwrap();
            let txq = tx.create_queue().unwrap();
            Self {
                mem,
                rx,
                tx,
                rxq,
                txq,
                rx_next: 0,
                tx_next: 0,
                rx_seen: 0,
                rx_bufs: HashMap::new(),
                next_buf: 0x10_0000,
            }
        }

        fn buf(&mut self, len: u64) -> u64 {
            let addr = self.next_buf;
            self.next_buf += len.max(4096);
            addr
        }

        fn post_rx(&mut self, count: usize, len: u32) {
            for _ in 0..count {
                let addr = self.buf(u64::from(len));
                add_chain(&self.rx, self.rx_next, &[(addr, len, true)]);
                self.rx_bufs.insert(u32::from(self.rx_next), addr);
                self.rx_next += 1;
            }
        }

        fn send_raw(&mut self, m: &mut VsockMuxer, bytes: &[u8], chain_len: u32) {
            let addr = self.buf(bytes.len() as u64);
            self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
            add_chain(&self.tx, self.tx_next, &[(addr, chain_len, false)]);
            self.tx_next += 1;
            process_tx(m, &mut self.txq, self.mem).unwrap();
            fill_rx(m, &mut self.rxq, self.mem).unwrap();
        }

        fn send(
            &mut self,
            m: &mut VsockMuxer,
            op: u16,
            ports: (u32, u32),
            flags: u32,
            data: &[u8],
            buf_alloc: u32,
            fwd_cnt: u32,
        ) {
            let hdr = PacketHeader {
                src_cid: CID,
                dst_cid: HOST_CID,
                src_port: ports.0,
                dst_port: ports.1,
                len: data.len() as u32,
                kind: TYPE_STREAM,
                op,
                flags,
                buf_alloc,
                fwd_cnt,
            };
            let mut bytes = hdr.encode().to_vec();
            bytes.extend_from_slice(data);
            let len = bytes.len() as u32;
            self.send_raw(m, &bytes, len);
        }

        fn host_events(&mut self, m: &mut VsockMuxer) {
            m.set_rx_starved(false);
            m.process_host_events();
            fill_rx(m, &mut self.rxq, self.mem).unwrap();
        }

        fn recv(&mut self) -> Vec<(PacketHeader, Vec<u8>)> {
            let mut out = Vec::new();
            while self.rx_seen < used_idx(&self.rx) {
                let (id, len) = used(&self.rx, usize::from(self.rx_seen));
                self.rx_seen += 1;
                let addr = self.rx_bufs[&id];
                let bytes = read_bytes(self.mem, addr, len as usize);
                if bytes.len() < HEADER_LEN {
                    out.push((PacketHeader::default(), bytes));
                    continue;
                }
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(&bytes[..HEADER_LEN]);
                out.push((PacketHeader::decode(&raw), bytes[HEADER_LEN..].to_vec()));
            }
            out
        }
    }

    fn muxer() -> (tempfile::TempDir, PathBuf, VsockMuxer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let m = VsockMuxer::new(CID, &path).unwrap();
        (dir, path, m)
    }

    fn ops(pkts: &[(PacketHeader, Vec<u8>)]) -> Vec<u16> {
        pkts.iter().map(|(h, _)| h.op).collect()
    }

    #[test]
    fn guest_initiated_stream_carries_data_both_ways() {
        let (_dir, path, mut m) = muxer();
        let listener = UnixListener::bind(format!("{}_1234", path.display())).unwrap();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(8, 4096);
        g.send(&mut m, op::REQUEST, (5000, 1234), 0, b"", 65536, 0);
        let pkts = g.recv();
        assert_eq!(ops(&pkts), [op::RESPONSE]);
        assert_eq!(
            (pkts[0].0.src_port, pkts[0].0.dst_port, pkts[0].0.dst_cid),
            (1234, 5000, CID)
        );
        let (mut host, _) = listener.accept().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        g.send(&mut m, op::RW, (5000, 1234), 0, b"hello", 65536, 0);
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");

        host.write_all(b"world").unwrap();
        g.host_events(&mut m);
        let pkts = g.recv();
        let rw: Vec<_> = pkts.iter().filter(|(h, _)| h.op == op::RW).collect();
        assert_eq!(rw.len(), 1);
        assert_eq!(rw[0].1, b"world");

        g.send(
            &mut m,
            op::SHUTDOWN,
            (5000, 1234),
            SHUTDOWN_RCV | SHUTDOWN_SEND,
            b"",
            65536,
            5,
        );
        assert!(ops(&g.recv()).contains(&op::RST));
        assert_eq!(m.connection_count(), 0);
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn host_initiated_connect_handshake() {
        let (_dir, path, mut m) = muxer();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(8, 4096);
        let mut host = UnixStream::connect(&path).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        host.write_all(b"CONNECT 77\n").unwrap();
        g.host_events(&mut m);
        let pkts = g.recv();
        assert_eq!(ops(&pkts), [op::REQUEST]);
        let local = pkts[0].0.src_port;
        assert_eq!(pkts[0].0.dst_port, 77);

        g.send(&mut m, op::RESPONSE, (77, local), 0, b"", 65536, 0);
        let mut line = [0u8; 14];
        host.read_exact(&mut line).unwrap();
        assert_eq!(std::str::from_utf8(&line).unwrap(), format!("OK {local}\n"));

        host.write_all(b"ping").unwrap();
        g.host_events(&mut m);
        let pkts = g.recv();
        assert_eq!(ops(&pkts), [op::RW]);
        assert_eq!(pkts[0].1, b"ping");
    }

    #[test]
    fn bad_connect_line_is_dropped() {
        let (_dir, path, mut m) = muxer();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(2, 4096);
        let mut host = UnixStream::connect(&path).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        host.write_all(b"CONNECT nope\n").unwrap();
        g.host_events(&mut m);
        assert!(g.recv().is_empty());
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn connect_to_missing_listener_is_reset() {
        let (_dir, _path, mut m) = muxer();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(2, 4096);
        g.send(&mut m, op::REQUEST, (5000, 9), 0, b"", 65536, 0);
        assert_eq!(ops(&g.recv()), [op::RST]);
        assert_eq!(m.connection_count(), 0);
    }

    #[test]
    fn host_data_respects_guest_credit() {
        let (_dir, path, mut m) = muxer();
        let listener = UnixListener::bind(format!("{}_80", path.display())).unwrap();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(8, 4096);
        g.send(&mut m, op::REQUEST, (6000, 80), 0, b"", 4, 0);
        assert_eq!(ops(&g.recv()), [op::RESPONSE]);
        let (mut host, _) = listener.accept().unwrap();
        host.write_all(b"0123456789").unwrap();
        g.host_events(&mut m);
        let pkts = g.recv();
        assert_eq!(ops(&pkts), [op::RW]);
        assert_eq!(pkts[0].1, b"0123");
        // No credit left: nothing more, however often the host side is polled.
        for _ in 0..10 {
            g.host_events(&mut m);
        }
        assert!(g.recv().is_empty());
        g.send(&mut m, op::CREDIT_UPDATE, (6000, 80), 0, b"", 4, 4);
        g.host_events(&mut m);
        let pkts = g.recv();
        assert_eq!(ops(&pkts), [op::RW]);
        assert_eq!(pkts[0].1, b"4567");
    }

    #[test]
    fn credit_request_gets_update() {
        let (_dir, path, mut m) = muxer();
        let _listener = UnixListener::bind(format!("{}_81", path.display())).unwrap();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(4, 4096);
        g.send(&mut m, op::REQUEST, (6000, 81), 0, b"", 4096, 0);
        g.send(&mut m, op::CREDIT_REQUEST, (6000, 81), 0, b"", 4096, 0);
        let pkts = g.recv();
        assert_eq!(ops(&pkts), [op::RESPONSE, op::CREDIT_UPDATE]);
        assert_eq!(pkts[1].0.buf_alloc, crate::vsock::connection::BUF_ALLOC);
    }

    #[test]
    fn malformed_tx_packets_are_dropped() {
        let (_dir, path, mut m) = muxer();
        let _listener = UnixListener::bind(format!("{}_82", path.display())).unwrap();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(8, 4096);
        // Short header.
        g.send_raw(&mut m, &[1, 2, 3], 3);
        // Length field larger than the buffer / than MAX_PAYLOAD.
        let mut hdr = PacketHeader {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: 1,
            dst_port: 82,
            len: 1 << 30,
            kind: TYPE_STREAM,
            op: op::REQUEST,
            ..Default::default()
        };
        g.send_raw(&mut m, &hdr.encode(), HEADER_LEN as u32);
        // Spoofed source CID.
        hdr.len = 0;
        hdr.src_cid = 7;
        g.send_raw(&mut m, &hdr.encode(), HEADER_LEN as u32);
        // Zero-length and out-of-memory descriptors.
        g.send_raw(&mut m, &[], 0);
        let outside = MEM_SIZE as u64 * 2;
        add_chain(&g.tx, g.tx_next, &[(outside, 44, false)]);
        process_tx(&mut m, &mut g.txq, &mem).unwrap();
        assert!(g.recv().is_empty());
        assert_eq!(m.connection_count(), 0);
        assert_eq!(used_idx(&g.tx), 5);
        // Unsupported socket type: refused.
        hdr.src_cid = CID;
        hdr.kind = 2;
        let bytes = hdr.encode();
        g.send_raw(&mut m, &bytes, HEADER_LEN as u32);
        assert_eq!(ops(&g.recv()), [op::RST]);
    }

    #[test]
    fn tiny_rx_buffer_is_returned_empty_and_packet_waits() {
        let (_dir, _path, mut m) = muxer();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(1, 8);
        g.send(&mut m, op::REQUEST, (5000, 9), 0, b"", 65536, 0);
        let pkts = g.recv();
        assert_eq!(pkts.len(), 1);
        assert!(pkts[0].1.is_empty() && pkts[0].0 == PacketHeader::default());
        g.post_rx(1, 4096);
        fill_rx(&mut m, &mut g.rxq, &mem).unwrap();
        assert_eq!(ops(&g.recv()), [op::RST]);
    }

    fn readable(fd: std::os::fd::RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn host_clients_before_driver_start_do_not_spin_and_are_served_later() {
        let (_dir, path, m) = muxer();
        let mut dev = Vsock::new(m);
        let mut host = UnixStream::connect(&path).unwrap();
        host.write_all(b"CONNECT 99\n").unwrap();
        let fd = dev.backend_fd().unwrap();
        assert!(readable(fd));
        assert!(!dev.process_backend());
        assert!(
            !readable(fd),
            "backend still readable: the event loop would spin"
        );

        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(2, 4096);
        let queues = vec![
            g.rx.create_queue().unwrap(),
            g.tx.create_queue().unwrap(),
            <Queue as virtio_queue::QueueT>::new(4).unwrap(),
        ];
        dev.activate(Arc::new(mem.clone()), queues).unwrap();
        assert!(dev.process_queue(RX_QUEUE));
        let pkts = g.recv();
        assert_eq!(ops(&pkts), [op::REQUEST]);
        assert_eq!(pkts[0].0.dst_port, 99);
    }

    #[test]
    fn data_for_unknown_connection_is_reset() {
        let (_dir, _path, mut m) = muxer();
        let mem = memory();
        let mut g = Guest::new(&mem);
        g.post_rx(2, 4096);
        g.send(&mut m, op::RW, (5000, 1), 0, b"x", 65536, 0);
        assert_eq!(ops(&g.recv()), [op::RST]);
    }
}
