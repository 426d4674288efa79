//! skiff's nftables table (`ip skiff`): NAT to the uplink, published ports (DNAT, also
//! for traffic the host itself sends to 127.0.0.1), and isolation — no traffic between
//! the bridges of different networks, nothing from a container to the host's own
//! services. The whole table is rendered from the networks and leases and replaced in
//! one `nft -f` transaction, so applying it twice changes nothing and no half-applied
//! rule set is ever visible.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::ipam::Subnet;
use super::ports::PortMapping;
use crate::tools::find_program;
use crate::{Error, Result};

pub const TABLE: &str = "skiff";
/// Every skiff bridge is named `skiff<N>`.
pub const BRIDGE_GLOB: &str = "skiff*";

/// One network as the firewall sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    pub name: String,
    pub subnet: Subnet,
    /// No route to the uplink (`network create --internal`).
    pub internal: bool,
}

/// One published port of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub mapping: PortMapping,
    pub container_ip: Ipv4Addr,
}

/// The complete table for these networks and published ports.
pub fn render(bridges: &[Bridge], publishes: &[Publish]) -> String {
    let mut s = String::new();
    // Declaring then deleting makes the replacement work whether or not it exists.
    s.push_str(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"));
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

    s.push_str(&format!(
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         ct state established,related accept\n    \
         ct status dnat oifname \"{BRIDGE_GLOB}\" accept\n"
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
         iifname \"{g}\" ct state established,related accept\n    \
         iifname \"{g}\" drop\n  }}\n}}\n",
        g = BRIDGE_GLOB
    ));
    s
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

/// Removes skiff's table (no networks left).
pub fn clear() -> Result<()> {
    nft_stdin(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))
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
                internal: false,
            },
            Bridge {
                name: "skiff1".into(),
                subnet: "10.89.1.0/24".parse().unwrap(),
                internal: true,
            },
        ];
        let publishes = [Publish {
            mapping: PortMapping::parse("127.0.0.1:8080:80").unwrap(),
            container_ip: Ipv4Addr::new(10, 89, 0, 2),
        }];
        let t = render(&bridges, &publishes);
        assert!(t.starts_with("table ip skiff {}\ndelete table ip skiff\n"));
        assert!(t.contains("ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.89.0.2:80"));
        assert!(t.contains("ip saddr 10.89.0.0/24 oifname != \"skiff0\" masquerade"));
        // The internal network is not masqueraded and may not leave its bridge.
        assert!(!t.contains("ip saddr 10.89.1.0/24"));
        assert!(t.contains("iifname \"skiff1\" drop"));
        assert!(t.contains("iifname \"skiff*\" oifname \"skiff*\" drop"));
        assert!(t.contains("iifname \"skiff*\" drop\n  }\n}\n"));
        // Braces balance (a cheap syntax check; CI applies the real thing).
        assert_eq!(t.matches('{').count(), t.matches('}').count());
    }
}
