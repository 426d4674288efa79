//! Sockets std cannot make (a UDP socket several processes bind to the same address,
//! `SO_REUSEPORT` set before the bind as the option requires), and the syntax of the
//! interface names and MAC addresses skiff hands to QEMU, ip and nft.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The longest interface name the kernel takes (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Is `name` usable as an interface name skiff made?
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `xx:xx:xx:xx:xx:xx` in hex: safe to hand to QEMU and nft.
pub fn valid_mac(mac: &str) -> bool {
    mac.len() == 17
        && mac.split(':').count() == 6
        && mac
            .split(':')
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT`, so other processes of the same
/// user may bind it too (the kernel spreads datagrams among them); close-on-exec.
pub fn udp_bind_shared(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: fd is open; the option value is a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            owned.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: fd is open; sin is a valid sockaddr_in of the length given.
    let rc = unsafe {
        libc::bind(
            owned.as_raw_fd(),
            std::ptr::addr_of!(sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UdpSocket::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn two_sockets_share_a_port_and_receive() {
        let a = udp_bind_shared(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = a.local_addr().unwrap().port();
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let b = udp_bind_shared(addr).unwrap();
        assert!(
            UdpSocket::bind(addr).is_err(),
            "without the option it is taken"
        );
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        tx.send_to(b"q", addr).unwrap();
        let mut buf = [0u8; 4];
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let got = loop {
            if let Ok(n) = a.recv(&mut buf).or_else(|_| b.recv(&mut buf)) {
                break n;
            }
            assert!(std::time::Instant::now() < deadline, "nothing arrived");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(&buf[..got], b"q");
    }
}
