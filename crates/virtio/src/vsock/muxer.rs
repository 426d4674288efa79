//! Routes vsock packets between the guest and host UNIX sockets.
//!
//! The muxer owns a listening socket at `uds_path` (host-initiated connections, which
//! start with a `CONNECT <port>\n` line) and one stream per connection; all of them sit
//! in the muxer's own epoll set, whose fd the event loop watches. Streams are only
//! polled for reading while the guest has credit and receive buffers, so a slow guest
//! never makes the VMM spin.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use tracing::{debug, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{ConnState, Connection, HostRead, BUF_ALLOC};
use super::packet::{op, PacketHeader, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::HOST_CID;

/// Most simultaneous connections per device.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host clients that connected but have not sent their CONNECT line yet.
const MAX_PENDING_ACCEPTS: usize = 64;
/// Most control packets waiting for guest receive buffers; more are dropped.
const MAX_CONTROL: usize = 4096;
/// Longest accepted `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// First host port handed out for host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
const LISTENER_TOKEN: u64 = 0;

/// (host port, guest port)
type ConnKey = (u32, u32);

#[derive(Debug, Clone, Copy)]
enum Owner {
    Accept,
    Conn(ConnKey),
}

#[derive(Debug)]
struct PendingAccept {
    stream: UnixStream,
    line: Vec<u8>,
}

/// The host side of one vsock device.
#[derive(Debug)]
pub struct VsockMuxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<ConnKey, Connection>,
    owners: HashMap<u64, Owner>,
    accepts: HashMap<u64, PendingAccept>,
    control: VecDeque<(ConnKey, u16, u32)>,
    ready: VecDeque<ConnKey>,
    next_token: u64,
    next_local_port: u32,
    rx_starved: bool,
}

impl VsockMuxer {
    /// Listens on `uds_path` for host clients of guest `guest_cid`. A stale socket file
    /// at that path is replaced; any other file is an error.
    pub fn new(guest_cid: u64, uds_path: &Path) -> io::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(uds_path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(uds_path)?;
            }
        }
        let listener = UnixListener::bind(uds_path)?;
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
        )?;
        Ok(Self {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            epoll,
            conns: HashMap::new(),
            owners: HashMap::new(),
            accepts: HashMap::new(),
            control: VecDeque::new(),
            ready: VecDeque::new(),
            next_token: LISTENER_TOKEN + 1,
            next_local_port: FIRST_LOCAL_PORT,
            rx_starved: false,
        })
    }

    /// The guest's context ID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The epoll fd that becomes readable when a host socket needs attention.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether packets wait for guest receive buffers.
    pub fn has_rx_work(&self) -> bool {
        !self.control.is_empty() || !self.ready.is_empty()
    }

    /// Records whether the guest's receive queue ran dry; while it is, host sockets are
    /// not polled for reading.
    pub fn set_rx_starved(&mut self, starved: bool) {
        if self.rx_starved != starved {
            self.rx_starved = starved;
            let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
            for key in keys {
                self.refresh_interest(key);
            }
        }
    }

    fn push_control(&mut self, key: ConnKey, op: u16, flags: u32) {
        if self.control.len() >= MAX_CONTROL {
            debug!("vsock: control queue full, dropping op {op}");
            return;
        }
        self.control.push_back((key, op, flags));
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(LISTENER_TOKEN + 1);
        t
    }

    fn refresh_interest(&mut self, key: ConnKey) {
        let starved = self.rx_starved;
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let want = conn.desired_interest(starved);
        if want == conn.registered {
            return;
        }
        let fd = conn.stream.as_raw_fd();
        let event = EpollEvent::new(EventSet::from_bits_truncate(want), conn.token);
        // Unregistered while idle so hang-ups cannot wake the loop over and over.
        let result = match (conn.registered, want) {
            (0, _) => self.epoll.ctl(ControlOperation::Add, fd, event),
            (_, 0) => self.epoll.ctl(ControlOperation::Delete, fd, event),
            _ => self.epoll.ctl(ControlOperation::Modify, fd, event),
        };
        match result {
            Ok(()) => conn.registered = want,
            Err(e) => warn!("vsock: epoll update failed: {e}"),
        }
    }

    fn remove(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            if conn.registered != 0 {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    conn.stream.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
            self.owners.remove(&conn.token);
        }
    }

    fn reset(&mut self, key: ConnKey) {
        self.remove(key);
        self.push_control(key, op::RST, 0);
    }

    /// Handles one packet the guest sent (`data` is its payload, already bounded).
    pub fn handle_guest_packet(&mut self, hdr: &PacketHeader, data: &[u8]) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            debug!("vsock: dropping packet {} -> {}", hdr.src_cid, hdr.dst_cid);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.kind != TYPE_STREAM {
            if hdr.op != op::RST {
                self.push_control(key, op::RST, 0);
            }
            return;
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.update_peer_credit(hdr);
        }
        match hdr.op {
            op::REQUEST => self.guest_connect(key, hdr),
            op::RESPONSE => self.guest_accepted(key),
            op::RST => self.remove(key),
            op::SHUTDOWN => self.guest_shutdown(key, hdr.flags),
            op::RW => self.guest_data(key, data),
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    self.push_control(key, op::CREDIT_UPDATE, 0);
                } else {
                    self.push_control(key, op::RST, 0);
                }
            }
            other => {
                debug!("vsock: unknown op {other}");
                self.reset(key);
            }
        }
        self.refresh_interest(key);
    }

    fn guest_connect(&mut self, key: ConnKey, hdr: &PacketHeader) {
        if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNECTIONS {
            self.push_control(key, op::RST, 0);
            return;
        }
        let mut target = self.uds_path.clone().into_os_string();
        target.push(format!("_{}", key.0));
        let stream = match UnixStream::connect(&target) {
            Ok(s) => s,
            Err(e) => {
                debug!("vsock: guest connect to port {} refused: {e}", key.0);
                self.push_control(key, op::RST, 0);
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            self.push_control(key, op::RST, 0);
            return;
        }
        let token = self.token();
        let mut conn = Connection::new(stream, ConnState::Established, token);
        conn.update_peer_credit(hdr);
        self.conns.insert(key, conn);
        self.owners.insert(token, Owner::Conn(key));
        self.push_control(key, op::RESPONSE, 0);
    }

    fn guest_accepted(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            self.push_control(key, op::RST, 0);
            return;
        };
        if conn.state != ConnState::AwaitingResponse {
            self.reset(key);
            return;
        }
        // The stream is fresh, so a dozen bytes never block.
        let reply = format!("OK {}\n", key.0);
        if conn.stream.write_all(reply.as_bytes()).is_err() {
            self.reset(key);
            return;
        }
        conn.state = ConnState::Established;
    }

    fn guest_shutdown(&mut self, key: ConnKey, flags: u32) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if flags & SHUTDOWN_RCV != 0 {
            // The guest will not read anymore: deliver what it sent and close.
            let _ = conn.flush_to_host();
            self.reset(key);
            return;
        }
        if flags & SHUTDOWN_SEND != 0 {
            conn.guest_send_shut = true;
            if conn.flush_to_host().is_err() {
                self.reset(key);
            }
        }
    }

    fn guest_data(&mut self, key: ConnKey, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&key) else {
            self.push_control(key, op::RST, 0);
            return;
        };
        if conn.state != ConnState::Established || conn.guest_send_shut {
            self.reset(key);
            return;
        }
        if conn.push_guest_data(data).is_err() {
            warn!(
                "vsock: guest overran its credit on port {}, resetting",
                key.0
            );
            self.reset(key);
            return;
        }
        if conn.flush_to_host().is_err() {
            self.reset(key);
            return;
        }
        self.maybe_credit_update(key);
    }

    fn maybe_credit_update(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.needs_credit_update() && !conn.credit_update_queued {
            conn.credit_update_queued = true;
            self.push_control(key, op::CREDIT_UPDATE, 0);
        }
    }

    /// Handles whatever the host sockets reported, without blocking.
    pub fn process_host_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        // Bounded rounds: a busy host cannot keep the caller here forever.
        for _ in 0..4 {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("vsock: epoll_wait: {e}");
                    return;
                }
            };
            for event in &events[..n] {
                self.handle_event(event.data(), event.event_set());
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn handle_event(&mut self, token: u64, set: EventSet) {
        if token == LISTENER_TOKEN {
            self.accept_clients();
            return;
        }
        match self.owners.get(&token).copied() {
            Some(Owner::Accept) => self.read_connect_line(token),
            Some(Owner::Conn(key)) => {
                if set.intersects(EventSet::OUT) {
                    if let Some(conn) = self.conns.get_mut(&key) {
                        if conn.flush_to_host().is_err() {
                            self.reset(key);
                            return;
                        }
                    }
                    self.maybe_credit_update(key);
                }
                if set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR)
                    && !self.ready.contains(&key)
                {
                    self.ready.push_back(key);
                }
                self.refresh_interest(key);
            }
            None => debug!("vsock: event for unknown token {token}"),
        }
    }

    fn accept_clients(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("vsock: accept: {e}");
                    return;
                }
            };
            if self.accepts.len() >= MAX_PENDING_ACCEPTS || stream.set_nonblocking(true).is_err() {
                continue; // dropped: the client sees EOF
            }
            let token = self.token();
            let event = EpollEvent::new(EventSet::IN, token);
            if self
                .epoll
                .ctl(ControlOperation::Add, stream.as_raw_fd(), event)
                .is_err()
            {
                continue;
            }
            self.owners.insert(token, Owner::Accept);
            self.accepts.insert(
                token,
                PendingAccept {
                    stream,
                    line: Vec::new(),
                },
            );
            // Clients usually send their CONNECT line right away.
            self.read_connect_line(token);
        }
    }

    fn drop_accept(&mut self, token: u64) -> Option<PendingAccept> {
        self.owners.remove(&token);
        let pending = self.accepts.remove(&token)?;
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            pending.stream.as_raw_fd(),
            EpollEvent::default(),
        );
        Some(pending)
    }

    fn read_connect_line(&mut self, token: u64) {
        let Some(pending) = self.accepts.get_mut(&token) else {
            return;
        };
        // Byte by byte: whatever follows the line belongs to the guest.
        let mut byte = [0u8; 1];
        let complete = loop {
            match pending.stream.read(&mut byte) {
                Ok(0) => {
                    self.drop_accept(token);
                    return;
                }
                Ok(_) if byte[0] == b'\n' => break true,
                Ok(_) => {
                    pending.line.push(byte[0]);
                    if pending.line.len() > MAX_CONNECT_LINE {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        let Some(pending) = self.drop_accept(token) else {
            return;
        };
        let port = complete.then(|| parse_connect(&pending.line)).flatten();
        let Some(port) = port else {
            debug!("vsock: bad CONNECT line from host client");
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            return;
        }
        let Some(local_port) = self.allocate_local_port(port) else {
            return;
        };
        let key = (local_port, port);
        let token = self.token();
        self.conns.insert(
            key,
            Connection::new(pending.stream, ConnState::AwaitingResponse, token),
        );
        self.owners.insert(token, Owner::Conn(key));
        self.push_control(key, op::REQUEST, 0);
    }

    fn allocate_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..MAX_CONNECTIONS + 1 {
            let port = self.next_local_port;
            self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(port, peer_port)) {
                return Some(port);
            }
        }
        None
    }

    /// The next packet for the guest, with its payload (at most `max_payload` bytes) in
    /// `payload`. `None` when there is nothing to send.
    pub fn next_packet(
        &mut self,
        max_payload: usize,
        payload: &mut Vec<u8>,
    ) -> Option<PacketHeader> {
        payload.clear();
        if let Some((key, op, flags)) = self.control.pop_front() {
            let (buf_alloc, fwd_cnt) = match self.conns.get_mut(&key) {
                Some(conn) => conn.credit_for_packet(),
                None => (0, 0),
            };
            let buf_alloc = if op == op::RST {
                0
            } else {
                buf_alloc.max(BUF_ALLOC)
            };
            return Some(self.header(key, op, flags, 0, buf_alloc, fwd_cnt));
        }
        while let Some(key) = self.ready.pop_front() {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            if conn.state != ConnState::Established || conn.host_eof {
                continue;
            }
            payload.resize(max_payload, 0);
            match conn.read_for_guest(payload) {
                HostRead::Data(n) => {
                    payload.truncate(n);
                    let (buf_alloc, fwd_cnt) = conn.credit_for_packet();
                    // More may be waiting: stay in line behind the others.
                    self.ready.push_back(key);
                    let len = u32::try_from(n).unwrap_or(u32::MAX);
                    return Some(self.header(key, op::RW, 0, len, buf_alloc, fwd_cnt));
                }
                HostRead::WouldBlock => {
                    payload.clear();
                    self.refresh_interest(key);
                }
                HostRead::Eof => {
                    payload.clear();
                    conn.host_eof = true;
                    let (buf_alloc, fwd_cnt) = conn.credit_for_packet();
                    self.refresh_interest(key);
                    return Some(self.header(
                        key,
                        op::SHUTDOWN,
                        SHUTDOWN_SEND | SHUTDOWN_RCV,
                        0,
                        buf_alloc,
                        fwd_cnt,
                    ));
                }
            }
        }
        None
    }

    fn header(
        &self,
        key: ConnKey,
        op: u16,
        flags: u32,
        len: u32,
        buf_alloc: u32,
        fwd_cnt: u32,
    ) -> PacketHeader {
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            len,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }
}

/// Parses `CONNECT <port>` (the newline already stripped).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let port = text.strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_line_parsing() {
        assert_eq!(parse_connect(b"CONNECT 1234"), Some(1234));
        assert_eq!(parse_connect(b"CONNECT 1234\r"), Some(1234));
        assert_eq!(parse_connect(b"CONNECT x"), None);
        assert_eq!(parse_connect(b"connect 1"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
    }
}
