//! One guest<->host stream: its UNIX socket, its state and both directions' credit.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use super::packet::PacketHeader;

/// Bytes of guest data the host side buffers per connection (advertised as buf_alloc).
pub const BUF_ALLOC: u32 = 256 * 1024;

/// The guest sent more than the buffer space it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest overran its vsock credit")]
pub struct CreditOverrun;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: REQUEST sent to the guest, waiting for RESPONSE.
    AwaitingResponse,
    /// Data flows both ways.
    Established,
}

/// What reading the host stream for the guest produced.
#[derive(Debug, PartialEq, Eq)]
pub enum HostRead {
    /// `n` bytes were read.
    Data(usize),
    /// Nothing to read right now.
    WouldBlock,
    /// The host closed its sending side (or the socket failed).
    Eof,
}

/// A vsock stream connection mediated by a host UNIX socket.
#[derive(Debug)]
pub struct Connection {
    pub(crate) stream: UnixStream,
    pub(crate) state: ConnState,
    pub(crate) token: u64,
    /// The interest currently registered with epoll (empty = not registered).
    pub(crate) registered: u32,
    /// The host side stopped sending (EOF seen); no more reads.
    pub(crate) host_eof: bool,
    /// The guest promised to send no more: shut the host stream's write side once drained.
    pub(crate) guest_send_shut: bool,
    /// A CREDIT_UPDATE for this connection waits in the control queue.
    pub(crate) credit_update_queued: bool,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    fwd_cnt_announced: Wrapping<u32>,
    to_host: VecDeque<u8>,
}

impl Connection {
    /// A connection over `stream` (already non-blocking).
    pub fn new(stream: UnixStream, state: ConnState, token: u64) -> Self {
        Self {
            stream,
            state,
            token,
            registered: 0,
            host_eof: false,
            guest_send_shut: false,
            credit_update_queued: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_announced: Wrapping(0),
            to_host: VecDeque::new(),
        }
    }

    /// Bytes the guest can still accept (its buffer minus what is in flight).
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        // A guest claiming to have consumed more than we sent gets no credit at all.
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Takes the guest's credit information from any packet it sent.
    pub fn update_peer_credit(&mut self, hdr: &PacketHeader) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
    }

    /// Our credit fields for a packet about to go to the guest.
    pub fn credit_for_packet(&mut self) -> (u32, u32) {
        self.fwd_cnt_announced = self.fwd_cnt;
        self.credit_update_queued = false;
        (BUF_ALLOC, self.fwd_cnt.0)
    }

    /// Whether the guest should hear about buffer space we freed.
    pub fn needs_credit_update(&self) -> bool {
        let unannounced = (self.fwd_cnt - self.fwd_cnt_announced).0;
        unannounced >= BUF_ALLOC / 4 || (unannounced > 0 && self.to_host.is_empty())
    }

    /// Queues guest data for the host stream. `Err` if the guest overran the credit we
    /// granted (the connection must be reset).
    pub fn push_guest_data(&mut self, data: &[u8]) -> Result<(), CreditOverrun> {
        if self.to_host.len() + data.len() > BUF_ALLOC as usize {
            return Err(CreditOverrun);
        }
        self.to_host.extend(data);
        Ok(())
    }

    /// Whether guest data waits to be written to the host stream.
    pub fn has_host_backlog(&self) -> bool {
        !self.to_host.is_empty()
    }

    /// Writes as much queued guest data to the host stream as it takes without
    /// blocking. `Err` means the host side is gone.
    pub fn flush_to_host(&mut self) -> io::Result<()> {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    // n <= BUF_ALLOC, so it fits
                    self.fwd_cnt += Wrapping(u32::try_from(n).unwrap_or(u32::MAX));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.to_host.is_empty() && self.guest_send_shut {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Reads host data for the guest into `buf` (at most the guest's credit).
    pub fn read_for_guest(&mut self, buf: &mut [u8]) -> HostRead {
        let n = buf.len().min(self.peer_credit() as usize);
        if n == 0 {
            return HostRead::WouldBlock;
        }
        loop {
            match self.stream.read(&mut buf[..n]) {
                Ok(0) => return HostRead::Eof,
                Ok(k) => {
                    self.rx_cnt += Wrapping(u32::try_from(k).unwrap_or(u32::MAX));
                    return HostRead::Data(k);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HostRead::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return HostRead::Eof,
            }
        }
    }

    /// The epoll interest this connection needs now.
    pub fn desired_interest(&self, rx_starved: bool) -> u32 {
        let mut events = 0;
        if self.state == ConnState::Established
            && !self.host_eof
            && !rx_starved
            && self.peer_credit() > 0
        {
            events |= libc::EPOLLIN as u32;
        }
        if self.has_host_backlog() {
            events |= libc::EPOLLOUT as u32;
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_cannot_overrun_granted_buffer() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(a, ConnState::Established, 1);
        conn.push_guest_data(&vec![0u8; BUF_ALLOC as usize])
            .unwrap();
        assert!(conn.push_guest_data(&[0]).is_err());
    }

    #[test]
    fn lying_fwd_cnt_gives_no_credit() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(a, ConnState::Established, 1);
        conn.update_peer_credit(&PacketHeader {
            buf_alloc: 100,
            fwd_cnt: 50,
            ..Default::default()
        });
        assert_eq!(conn.peer_credit(), 0);
        conn.update_peer_credit(&PacketHeader {
            buf_alloc: 100,
            fwd_cnt: 0,
            ..Default::default()
        });
        assert_eq!(conn.peer_credit(), 100);
    }
}
