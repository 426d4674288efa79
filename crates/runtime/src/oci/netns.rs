//! A spec's network namespace (containerd's CNI, Podman): the runtime's caller made it
//! and put an interface in it (a veth with an address and routes). The supervisor
//! joins it, so the VM's host processes live there; the microVM's TAP is created in
//! it and joined to that interface with tc mirred redirects both ways (as Kata
//! does), and the guest's interface takes the veth's MAC, address, gateway and MTU,
//! so CNI networking works unchanged.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::Deserialize;

use crate::tools::find_program;
use crate::{Error, Result};

/// The TAP the microVM's virtio-net device uses, inside the namespace.
pub const TAP: &str = "skiff-tap0";
/// Largest `ip -j` output read.
const MAX_JSON: usize = 1 << 20;

/// The path of the network namespace the spec asks to join, if any.
pub fn path(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?
        .path()
        .clone()
}

/// Moves the calling thread (and the processes it starts afterwards) into the network
/// namespace at `path`.
pub fn enter(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).map_err(Error::io(format!(
        "open network namespace {}",
        path.display()
    )))?;
    // SAFETY: setns on a descriptor we own; affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::io(format!(
            "join network namespace {}",
            path.display()
        ))(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// What the guest's interface takes over from the namespace's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub ifname: String,
    pub mac: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
}

#[derive(Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Deserialize)]
struct Route {
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
}

fn bad(msg: String) -> Error {
    Error::Network(msg)
}

/// The first Ethernet interface with an IPv4 address in `ip -j addr` output, with the
/// default route's gateway through it from `ip -j -4 route show default`.
fn parse_uplink(addrs: &str, routes: &str) -> Result<Option<Uplink>> {
    let links: Vec<Link> =
        serde_json::from_str(addrs).map_err(|e| bad(format!("ip -j addr: {e}")))?;
    let routes: Vec<Route> =
        serde_json::from_str(routes).map_err(|e| bad(format!("ip -j route: {e}")))?;
    for l in links {
        if l.link_type != "ether" || l.ifname == TAP {
            continue;
        }
        let Some(a) = l.addr_info.iter().find(|a| a.family == "inet") else {
            continue;
        };
        let address: Ipv4Addr = a
            .local
            .parse()
            .map_err(|_| bad(format!("{}: bad address {:?}", l.ifname, a.local)))?;
        if a.prefixlen > 32 || !skiff_sys::net::valid_ifname(&l.ifname) {
            return Err(bad(format!("{}: unusable interface", l.ifname)));
        }
        if !skiff_sys::net::valid_mac(&l.address) {
            return Err(bad(format!("{}: bad MAC {:?}", l.ifname, l.address)));
        }
        let gateway = routes
            .iter()
            .find(|r| r.dev.as_deref() == Some(l.ifname.as_str()))
            .and_then(|r| r.gateway.as_deref())
            .and_then(|g| g.parse().ok());
        return Ok(Some(Uplink {
            mac: l.address.to_ascii_lowercase(),
            address,
            prefix_len: a.prefixlen,
            gateway,
            mtu: if l.mtu == 0 { 1500 } else { l.mtu },
            ifname: l.ifname,
        }));
    }
    Ok(None)
}

fn run(tool: &str, env: &str, args: &[&str]) -> Result<String> {
    let bin = find_program(tool, env).map_err(|looked| Error::MissingTool {
        tool: if tool == "ip" { "ip" } else { "tc" },
        looked,
        hint: "install it with `apt-get install iproute2`",
    })?;
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(Error::io(format!("run {tool}")))?;
    if !out.status.success() {
        return Err(bad(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if out.stdout.len() > MAX_JSON {
        return Err(bad(format!("{tool} {}: output too large", args.join(" "))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// In the current network namespace: finds the interface the caller set up, makes the
/// TAP and redirects every frame between the two. `None` when the namespace has no
/// such interface (`--network none`): the guest then has only loopback.
pub fn plumb() -> Result<Option<Uplink>> {
    let addrs = run("ip", "SKIFF_IP", &["-j", "addr", "show"])?;
    let routes = run("ip", "SKIFF_IP", &["-j", "-4", "route", "show", "default"])?;
    let Some(up) = parse_uplink(&addrs, &routes)? else {
        return Ok(None);
    };
    let ip = |args: &[&str]| run("ip", "SKIFF_IP", args).map(drop);
    let tc = |args: &[&str]| run("tc", "SKIFF_TC", args).map(drop);
    // (Not /sys/class/net: that shows the namespace /sys was mounted in, not ours.)
    if ip(&["link", "show", "dev", TAP]).is_err() {
        ip(&["tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"])?;
    }
    let mtu = up.mtu.to_string();
    ip(&["link", "set", "dev", TAP, "mtu", &mtu, "up"])?;
    for (from, to) in [(up.ifname.as_str(), TAP), (TAP, up.ifname.as_str())] {
        // A supervisor that crashed may have left the qdisc; start clean.
        let _ = tc(&["qdisc", "del", "dev", from, "ingress"]);
        tc(&["qdisc", "add", "dev", from, "handle", "ffff:", "ingress"])?;
        tc(&[
            "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ])?;
    }
    tracing::debug!(?up, "joined the namespace's interface to the microVM's TAP");
    Ok(Some(up))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRS: &str = r#"[
      {"ifindex":1,"ifname":"lo","mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00",
       "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
      {"ifindex":2,"ifname":"eth0","mtu":1450,"link_type":"ether","address":"7A:1B:00:11:22:33",
       "addr_info":[{"family":"inet6","local":"fe80::1","prefixlen":64},
                    {"family":"inet","local":"10.88.0.7","prefixlen":16}]}]"#;

    #[test]
    fn the_uplink_is_the_ethernet_interface_with_an_address() {
        let routes = r#"[{"dst":"default","gateway":"10.88.0.1","dev":"eth0","flags":[]}]"#;
        let up = parse_uplink(ADDRS, routes).unwrap().unwrap();
        assert_eq!(
            up,
            Uplink {
                ifname: "eth0".into(),
                mac: "7a:1b:00:11:22:33".into(),
                address: Ipv4Addr::new(10, 88, 0, 7),
                prefix_len: 16,
                gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
                mtu: 1450,
            }
        );
        assert_eq!(parse_uplink(ADDRS, "[]").unwrap().unwrap().gateway, None);
    }

    #[test]
    fn loopback_only_namespaces_and_junk_are_told_apart() {
        let lo_only = r#"[{"ifname":"lo","link_type":"loopback","addr_info":[]}]"#;
        assert_eq!(parse_uplink(lo_only, "[]").unwrap(), None);
        assert!(parse_uplink("not json", "[]").is_err());
        let bad_mac = ADDRS.replace("7A:1B:00:11:22:33", "7A:1B");
        assert!(parse_uplink(&bad_mac, "[]").is_err());
        let bad_name = ADDRS.replace("\"eth0\"", "\"eth0;rm -rf\"");
        assert!(parse_uplink(&bad_name, "[]").is_err());
    }
}
