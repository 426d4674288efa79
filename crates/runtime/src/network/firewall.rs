//! skiff's nftables table (`ip skiff`): NAT to the uplink, published ports (DNAT, also
//! for traffic the host itself sends to 127.0.0.1), and isolation — no traffic between
//! the bridges of different networks, nothing from a container to the host's own
//! services, per-container egress off (`--egress deny`) — plus a `bridge skiff` table
//! that ties each TAP to its lease's MAC and address, so a container cannot pose as
//! another on its bridge (the egress rule and the DNS responder trust source addresses).
//! The whole rule set is rendered from the networks and leases and replaced in
//! one `nft -f` transaction, so applying it twice changes nothing and no half-applied
//! rule set is ever visible.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::ipam::Subnet;
use super::ports::PortMapping;
use super::Egress;
use crate::tools::find_program;
use crate::{Error, Result};

pub const TABLE: &str = "skiff";
/// Every skiff bridge is named `skiff<N>`.
pub const BRIDGE_GLOB: &str = "skiff*";
/// Every container's TAP is named `skt<12 hex>`.
pub const TAP_GLOB: &str = "skt*";

/// One network as the firewall sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    pub name: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// No route to the uplink (`network create --internal`).
    pub internal: bool,
    /// The network's DNS responder listens on the gateway (user-defined networks).
    pub dns: bool,
}

/// One container (lease) on a bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub tap: String,
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub egress: Egress,
}

/// One published port of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub mapping: PortMapping,
    pub container_ip: Ipv4Addr,
}

/// The complete rule set for these networks, containers and published ports.
pub fn render(bridges: &[Bridge], members: &[Member], publishes: &[Publish]) -> String {
    let mut s = String::new();
    // Declaring then deleting makes the replacement work whether or not they exist.
    for family in ["ip", "bridge"] {
        s.push_str(&format!(
            "table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"
        ));
    }
    render_bridge_table(&mut s, members);
    s.push_str(&format!("table ip {TABLE} {{\n"));

    s.push_str("  chain publish {\n");
    for p in publishes {
        let m = &p.mapping;
        let daddr = m
            .host_ip
            .map(|ip| format!("ip daddr {ip} "))
            .unwrap_or_default();
        s.push_str(&format!(
            "    {daddr}{proto} dport {hp} dnat to {ip}:{cp}\n",
            proto = m.proto,
            hp = m.host_port,
            ip = p.container_ip,
            cp = m.container_port
        ));
    }
    s.push_str("  }\n");

    s.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump publish\n  }\n",
    );
    // The host's own connections to a published port (including 127.0.0.1).
    s.push_str(
        "  chain output {\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump publish\n  }\n",
    );

    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for b in bridges.iter().filter(|b| !b.internal) {
        s.push_str(&format!(
            "    ip saddr {} oifname != \"{}\" masquerade\n",
            b.subnet, b.name
        ));
    }
    // Loopback-sourced traffic DNAT'd onto a bridge must look like it came from the
    // gateway, or the container's answer would go to its own loopback.
    s.push_str(&format!(
        "    ip saddr 127.0.0.0/8 oifname \"{BRIDGE_GLOB}\" masquerade\n  }}\n"
    ));

    s.push_str(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n    \
         ct state established,related accept\n",
    );
    // Egress off: nothing a container starts leaves its bridge (answers to
    // connections made to it, such as its published ports, are established above).
    for m in members.iter().filter(|m| m.egress == Egress::Deny) {
        s.push_str(&format!(
            "    iifname \"{b}\" ip saddr {ip} oifname != \"{b}\" drop\n",
            b = m.bridge,
            ip = m.ip
        ));
    }
    s.push_str(&format!(
        "    ct status dnat oifname \"{BRIDGE_GLOB}\" accept\n"
    ));
    for b in bridges {
        s.push_str(&format!(
            "    iifname \"{n}\" oifname \"{n}\" accept\n",
            n = b.name
        ));
        if b.internal {
            s.push_str(&format!("    iifname \"{}\" drop\n", b.name));
        }
    }
    s.push_str(&format!(
        "    iifname \"{g}\" oifname \"{g}\" drop\n    \
         oifname \"{g}\" drop\n    \
         iifname \"{g}\" accept\n  }}\n",
        g = BRIDGE_GLOB
    ));

    // Containers may not open connections to the host itself (answers to connections
    // the host opened, and published ports, which are forwarded, are unaffected).
    s.push_str(&format!(
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname \"{BRIDGE_GLOB}\" ct state established,related accept\n"
    ));
    // The network's own DNS responder, on its gateway only.
    for b in bridges.iter().filter(|b| b.dns) {
        s.push_str(&format!(
            "    iifname \"{}\" ip daddr {} udp dport 53 accept\n",
            b.name, b.gateway
        ));
    }
    s.push_str(&format!("    iifname \"{BRIDGE_GLOB}\" drop\n  }}\n}}\n"));
    s
}

/// Anti-spoofing at L2: frames from a container's TAP must carry its MAC, and its IPv4
/// and ARP its address; a TAP skiff knows nothing about sends nothing.
fn render_bridge_table(s: &mut String, members: &[Member]) {
    s.push_str(&format!(
        "table bridge {TABLE} {{\n  chain prerouting {{\n    \
         type filter hook prerouting priority -200; policy accept;\n"
    ));
    for m in members {
        if !skiff_sys::net::valid_mac(&m.mac) || !skiff_sys::net::valid_ifname(&m.tap) {
            tracing::warn!("lease with a malformed MAC or TAP name skipped: {m:?}");
            continue;
        }
        s.push_str(&format!(
            "    iifname \"{t}\" ether saddr != {mac} drop\n    \
             iifname \"{t}\" ether type ip ip saddr != {ip} drop\n    \
             iifname \"{t}\" ether type arp arp saddr ip != {ip} drop\n",
            t = m.tap,
            mac = m.mac,
            ip = m.ip
        ));
    }
    s.push_str(&format!(
        "    iifname \"{TAP_GLOB}\" ether type != {{ ip, arp }} drop\n  }}\n}}\n"
    ));
}

fn nft_binary() -> Result<std::path::PathBuf> {
    find_program("nft", "SKIFF_NFT").map_err(|looked| Error::MissingTool {
        tool: "nft",
        looked,
        hint: "install it with `apt-get install nftables`",
    })
}

/// Replaces skiff's table with `ruleset` (from [`render`]).
pub fn apply(ruleset: &str) -> Result<()> {
    nft_stdin(ruleset)
}

/// Removes skiff's tables (no networks left).
pub fn clear() -> Result<()> {
    nft_stdin(&format!(
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\n\
         table bridge {TABLE} {{}}\ndelete table bridge {TABLE}\n"
    ))
}

fn nft_stdin(script: &str) -> Result<()> {
    let mut child = Command::new(nft_binary()?)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("run nft"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(Error::io("write the nft rule set"))?;
    }
    let out = child.wait_with_output().map_err(Error::io("run nft"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or("failed").trim().to_owned();
    Err(Error::Network(format!("nft: {first}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ports::PortMapping;

    #[test]
    fn table_holds_nat_publish_and_isolation() {
        let bridges = [
            Bridge {
                name: "skiff0".into(),
                subnet: "10.89.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 89, 0, 1),
                internal: false,
                dns: false,
            },
            Bridge {
                name: "skiff1".into(),
                subnet: "10.89.1.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 89, 1, 1),
                internal: true,
                dns: true,
            },
        ];
        let members = [
            Member {
                tap: "sktaaaa".into(),
                bridge: "skiff0".into(),
                ip: Ipv4Addr::new(10, 89, 0, 2),
                mac: "02:42:0a:59:00:02".into(),
                egress: Egress::Allow,
            },
            Member {
                tap: "sktbbbb".into(),
                bridge: "skiff1".into(),
                ip: Ipv4Addr::new(10, 89, 1, 2),
                mac: "02:42:0a:59:01:02".into(),
                egress: Egress::Deny,
            },
        ];
        let publishes = [Publish {
            mapping: PortMapping::parse("127.0.0.1:8080:80").unwrap(),
            container_ip: Ipv4Addr::new(10, 89, 0, 2),
        }];
        let t = render(&bridges, &members, &publishes);
        assert!(t.starts_with("table ip skiff {}\ndelete table ip skiff\n"));
        assert!(t.contains("table bridge skiff {}\ndelete table bridge skiff\n"));
        // Each TAP speaks only with its lease's MAC and address.
        assert!(t.contains("iifname \"sktaaaa\" ether saddr != 02:42:0a:59:00:02 drop"));
        assert!(t.contains("iifname \"sktbbbb\" ether type ip ip saddr != 10.89.1.2 drop"));
        // Egress off for b only, before published (DNAT'd) traffic is let through.
        let deny = "iifname \"skiff1\" ip saddr 10.89.1.2 oifname != \"skiff1\" drop";
        assert!(t.find(deny).unwrap() < t.find("ct status dnat").unwrap());
        assert!(!t.contains("ip saddr 10.89.0.2 oifname"));
        // DNS on the user network's gateway only.
        assert!(t.contains("iifname \"skiff1\" ip daddr 10.89.1.1 udp dport 53 accept"));
        assert!(!t.contains("ip daddr 10.89.0.1 udp dport 53"));
        assert!(t.contains("ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.89.0.2:80"));
        assert!(t.contains("ip saddr 10.89.0.0/24 oifname != \"skiff0\" masquerade"));
        // The internal network is not masqueraded and may not leave its bridge.
        assert!(!t.contains("ip saddr 10.89.1.0/24"));
        assert!(t.contains("iifname \"skiff1\" drop"));
        assert!(t.contains("iifname \"skiff*\" oifname \"skiff*\" drop"));
        assert!(t.ends_with("iifname \"skiff*\" drop\n  }\n}\n"));
        // Braces balance (a cheap syntax check; CI applies the real thing).
        assert_eq!(t.matches('{').count(), t.matches('}').count());
    }
}
