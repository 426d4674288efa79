//! `--network passt`: user-mode networking without root, bridges or nftables. passt
//! (Debian package `passt`) translates the guest's frames into ordinary sockets of the
//! host process; QEMU reaches it through `-netdev stream` on a UNIX socket (QEMU 7.2).
//!
//! The guest always sees the same small network: itself at 10.0.2.15/24, the gateway
//! 10.0.2.2, and a DNS forwarder at 10.0.2.3 that passt relays to the host's first
//! resolver. The gateway is *not* mapped to the host's loopback (`--no-map-gw`), so a
//! container cannot reach services that listen only on 127.0.0.1; published ports are
//! passt's `-t`/`-u` forwards, bound on the host by passt itself. One passt serves one
//! VM: the supervisor kills it when the VM is gone, and it gets a parent-death signal
//! should the supervisor die first. (`--one-off` would be the natural choice, but the
//! passt in Debian 12 exits at once with it, before any client connects.)

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_proto::{GuestInterface, GuestNetwork};

use super::ports::{PortMapping, Proto};
use super::{dns, ipam};
use crate::tools::find_program;
use crate::{Error, Result};

pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
const PREFIX: u8 = 24;
/// Guest kernel parameters for a passt VM: send a gratuitous ARP when an interface
/// comes up, so passt knows the guest's MAC before a published port is used.
pub const GUEST_CMDLINE: &str = "sysctl.net.ipv4.conf.all.arp_notify=1";

/// The user passt runs as when started by root (`nobody` on Debian).
const NOBODY: u32 = 65534;
/// How long passt may take to create its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn guest_mac() -> String {
    ipam::mac_for(GUEST_IP)
}

/// passt's arguments for a socket at `socket` forwarding `ports`.
pub fn args(socket: &Path, ports: &[PortMapping]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--foreground",
        "--ipv4-only",
        "--quiet",
        "--no-map-gw",
        "--no-dhcp",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.extend([
        "--socket".into(),
        socket.display().to_string(),
        "--address".into(),
        GUEST_IP.to_string(),
        "--netmask".into(),
        PREFIX.to_string(),
        "--gateway".into(),
        GATEWAY.to_string(),
        "--dns-forward".into(),
        DNS.to_string(),
    ]);
    for p in ports {
        let flag = match p.proto {
            Proto::Tcp => "--tcp-ports",
            Proto::Udp => "--udp-ports",
        };
        let addr = p.host_ip.map(|ip| format!("{ip}/")).unwrap_or_default();
        a.push(flag.into());
        a.push(format!("{addr}{}:{}", p.host_port, p.container_port));
    }
    a
}

/// A running passt; killed (and its socket directory removed) on drop.
pub struct Passt {
    child: Child,
    dir: tempfile::TempDir,
}

impl Passt {
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("s")
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn passt_binary() -> Result<PathBuf> {
    find_program("passt", "SKIFF_PASST").map_err(|looked| Error::MissingTool {
        tool: "passt",
        looked,
        hint: "install it with `apt-get install passt`",
    })
}

/// Starts passt for one VM and waits for its socket.
pub fn start(ports: &[PortMapping]) -> Result<Passt> {
    let bin = passt_binary()?;
    // A private directory (0700) keeps other users away from the socket.
    let dir = tempfile::Builder::new()
        .prefix("skiff-passt")
        .tempdir()
        .map_err(Error::io("create passt's socket directory"))?;
    let socket = dir.path().join("s");
    let mut cmd = Command::new(&bin);
    cmd.args(args(&socket, ports));
    if skiff_sys::ids::is_root() {
        // passt refuses to stay root and creates its socket after switching user: the
        // directory belongs to that user (QEMU, as root, still connects).
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))
            .map_err(Error::io("hand passt's socket directory to nobody"))?;
        cmd.args(["--runas", &format!("{NOBODY}:{NOBODY}")]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closures only call prctl and setrlimit, both async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(skiff_sys::confine::vm_process);
        cmd.pre_exec(skiff_sys::confine::die_with_parent);
    }
    let mut child = cmd.spawn().map_err(Error::io("run passt"))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while !socket.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.by_ref().take(4096).read_to_string(&mut err);
            }
            let why = err
                .lines()
                .rfind(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
                .unwrap_or("no message")
                .trim()
                .to_owned();
            return Err(Error::Network(format!("passt exited ({status}): {why}")));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Network("passt did not create its socket".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its stderr is not read any more; passt's messages go nowhere rather than block.
    drop(child.stderr.take());
    Ok(Passt { child, dir })
}

/// What the agent configures for a passt container.
pub fn guest_config(own_names: &[&str], host_resolv: &str) -> GuestNetwork {
    let search: String = host_resolv
        .lines()
        .filter(|l| l.trim_start().starts_with("search "))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    GuestNetwork {
        interface: Some(GuestInterface {
            mac: guest_mac(),
            address: GUEST_IP.to_string(),
            prefix_len: PREFIX,
            gateway: Some(GATEWAY.to_string()),
            mtu: None,
        }),
        hosts: dns::hosts(GUEST_IP, own_names, &[]),
        resolv_conf: format!("nameserver {DNS}\n{search}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_become_passt_forwards() {
        let p = |s| PortMapping::parse(s).unwrap();
        let a = args(
            Path::new("/run/x/s"),
            &[p("127.0.0.1:8080:80"), p("5353:53/udp")],
        );
        let joined = a.join(" ");
        assert!(joined.contains("--no-map-gw"), "{joined}");
        assert!(joined.contains("--socket /run/x/s"), "{joined}");
        assert!(joined.contains("--tcp-ports 127.0.0.1/8080:80"), "{joined}");
        assert!(joined.contains("--udp-ports 5353:53"), "{joined}");
        let g = guest_config(&["c1"], "nameserver 127.0.0.53\nsearch lan\n");
        assert_eq!(g.resolv_conf, "nameserver 10.0.2.3\nsearch lan\n");
        assert!(g.hosts.contains("10.0.2.15\tc1\n"));
    }
}
