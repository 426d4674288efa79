//! The guest's network, set up before the container exists: loopback up, the
//! virtio-net interface the host named by MAC given its address and brought up, the
//! default route via the gateway; /etc/hosts and /etc/resolv.conf prepared in the
//! agent's /run for the container's mount namespace to bind over its own.
//!
//! Classic ioctls (SIOCSIFADDR, SIOCSIFNETMASK, SIOCSIFFLAGS, SIOCADDRT) do all of it:
//! one address and one route need no netlink.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use skiff_proto::{GuestInterface, GuestNetwork, MAX_NET_FILE};

use crate::sys::check;

/// Where the files for the container's /etc wait to be bound in.
const FILES_DIR: &str = "/run/skiff-net";

/// `struct ifreq` with a sockaddr in its union (40 bytes on x86_64).
#[repr(C)]
struct IfReqAddr {
    name: [u8; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

/// `struct ifreq` with `ifr_mtu`.
#[repr(C)]
struct IfReqMtu {
    name: [u8; libc::IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

/// `struct ifreq` with `ifr_flags`.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `struct rtentry` (linux/route.h), x86_64 layout.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr_in,
    rt_gateway: libc::sockaddr_in,
    rt_genmask: libc::sockaddr_in,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn ifname(name: &str) -> io::Result<[u8; libc::IFNAMSIZ]> {
    let mut out = [0u8; libc::IFNAMSIZ];
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
    // SAFETY: `arg` is a properly laid out request structure for `request` that lives
    // across the call.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, std::ptr::from_mut(arg)) };
    check(ret)
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

fn set_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let mut req = IfReqFlags {
        name: ifname(name)?,
        flags: 0,
        _pad: [0; 22],
    };
    ioctl(
        sock,
        libc::SIOCGIFFLAGS,
        &mut req,
        &format!("flags of {name}"),
    )?;
    req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(
        sock,
        libc::SIOCSIFFLAGS,
        &mut req,
        &format!("bring {name} up"),
    )
}

fn set_addr(
    sock: &OwnedFd,
    name: &str,
    request: libc::c_ulong,
    ip: Ipv4Addr,
    what: &str,
) -> io::Result<()> {
    let mut req = IfReqAddr {
        name: ifname(name)?,
        addr: sockaddr(ip),
        _pad: [0; 8],
    };
    ioctl(sock, request, &mut req, &format!("{what} {ip} on {name}"))
}

fn set_mtu(sock: &OwnedFd, name: &str, mtu: u32) -> io::Result<()> {
    let mtu = libc::c_int::try_from(mtu)
        .ok()
        .filter(|m| (68..=65535).contains(m))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad MTU {mtu}")))?;
    let mut req = IfReqMtu {
        name: ifname(name)?,
        mtu,
        _pad: [0; 20],
    };
    ioctl(
        sock,
        libc::SIOCSIFMTU,
        &mut req,
        &format!("MTU {mtu} on {name}"),
    )
}

fn default_route(sock: &OwnedFd, gateway: Ipv4Addr) -> io::Result<()> {
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(
        sock,
        libc::SIOCADDRT,
        &mut rt,
        &format!("default route via {gateway}"),
    )
}

/// The interface whose MAC is `mac` (case-insensitive), from sysfs.
fn interface_by_mac(mac: &str) -> io::Result<String> {
    for e in std::fs::read_dir("/sys/class/net")?.flatten() {
        let addr = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
        if addr.trim().eq_ignore_ascii_case(mac) {
            if let Some(n) = e.file_name().to_str() {
                return Ok(n.to_owned());
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no network interface with MAC {mac}"),
    ))
}

fn netmask(prefix: u8) -> io::Result<Ipv4Addr> {
    if prefix == 0 || prefix > 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad prefix length /{prefix}"),
        ));
    }
    Ok(Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix))))
}

fn parse_ip(s: &str) -> io::Result<Ipv4Addr> {
    s.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad IPv4 address {s:?}"),
        )
    })
}

fn configure_interface(sock: &OwnedFd, i: &GuestInterface) -> io::Result<()> {
    let name = interface_by_mac(&i.mac)?;
    let ip = parse_ip(&i.address)?;
    set_addr(sock, &name, libc::SIOCSIFADDR, ip, "address")?;
    set_addr(
        sock,
        &name,
        libc::SIOCSIFNETMASK,
        netmask(i.prefix_len)?,
        "netmask",
    )?;
    if let Some(mtu) = i.mtu {
        set_mtu(sock, &name, mtu)?;
    }
    set_up(sock, &name)?;
    if let Some(gw) = &i.gateway {
        default_route(sock, parse_ip(gw)?)?;
    }
    Ok(())
}

/// Brings the loopback interface up (every container has one, even without a network).
pub fn loopback_up() -> io::Result<()> {
    set_up(&control_socket()?, "lo")
}

/// Sets up the guest's network and returns the files to bind into the container's /etc.
pub fn configure(net: &GuestNetwork) -> io::Result<Vec<(PathBuf, &'static str)>> {
    let sock = control_socket()?;
    set_up(&sock, "lo")?;
    if let Some(i) = &net.interface {
        configure_interface(&sock, i)?;
    }
    let mut files = Vec::new();
    for (content, name) in [(&net.hosts, "hosts"), (&net.resolv_conf, "resolv.conf")] {
        if content.is_empty() {
            continue;
        }
        if content.len() > MAX_NET_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("/etc/{name} is larger than {MAX_NET_FILE} bytes"),
            ));
        }
        std::fs::create_dir_all(FILES_DIR)?;
        let path = Path::new(FILES_DIR).join(name);
        std::fs::write(&path, content)?;
        files.push((path, name));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<IfReqAddr>(), 40);
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert_eq!(std::mem::size_of::<IfReqMtu>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(netmask(24).unwrap(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(netmask(0).is_err() && netmask(33).is_err());
        assert!(ifname("eth0").is_ok() && ifname(&"x".repeat(16)).is_err());
    }
}
