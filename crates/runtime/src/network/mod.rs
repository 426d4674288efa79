//! Container networks on the host, without Docker: each network is a Linux bridge
//! (`skiff<N>`) with the host as gateway, containers get addresses from the network's
//! IPAM and a TAP on the bridge while they run, and one nftables table (`ip skiff`)
//! does NAT to the uplink, published ports and isolation (docs/networking.md).
//!
//! Bridges and the nft table are host-wide, so the network records are too: they live
//! in `/var/lib/skiff/networks` (or `$SKIFF_NETWORK_STATE`) whatever store `--root`
//! names, one JSON file per network holding its settings and its leases, replaced
//! atomically under one lock. A lease names its container's record directory; a lease
//! whose record is gone (a deleted store) is dropped the next time leases change.

pub mod dns;
pub mod dns_wire;
pub mod firewall;
pub mod ipam;
pub mod link;
pub mod passt;
pub mod ports;
pub mod resolver;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use skiff_proto::{GuestInterface, GuestNetwork};

use crate::names::{is_valid_name, new_id};
use crate::owner_only::{read_json, write_json};
use crate::{Error, Result};
pub use ipam::Subnet;
pub use ports::{PortMapping, Proto};
use skiff_sys::time::now_ms;

/// The network containers join by default (`--network bridge`).
pub const DEFAULT_NETWORK: &str = "bridge";
/// Its bridge and subnet (10.88/16 is Podman's default; stay clear of it).
const DEFAULT_BRIDGE: &str = "skiff0";
const DEFAULT_SUBNET: &str = "10.89.0.0/24";
/// User networks get `10.89.<N>.0/24` on bridge `skiff<N>` unless given a subnet.
const MAX_BRIDGES: u32 = 255;

/// How a container is networked, as chosen at create time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "network")]
pub enum NetworkMode {
    /// Only a loopback interface.
    #[default]
    None,
    /// Attached to the named network (`bridge` is the default one).
    Network(String),
    /// User-mode networking through passt: no root, no bridge, no nftables.
    Passt,
}

/// Whether a container may reach anything beyond its network (`--egress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// The uplink through NAT (unless the network is `--internal`).
    #[default]
    Allow,
    /// Only the container's network peers and its published ports, enforced by the
    /// host's nftables table.
    Deny,
}

impl Egress {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            other => Err(Error::Invalid(format!(
                "invalid --egress {other:?}: expected allow or deny"
            ))),
        }
    }

    pub fn is_allow(&self) -> bool {
        *self == Self::Allow
    }
}

impl std::fmt::Display for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

impl NetworkMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "host" => Err(Error::Invalid(
                "--network host is not possible: each container has its own kernel".into(),
            )),
            "passt" => Ok(Self::Passt),
            other => {
                validate_name(other)?;
                Ok(Self::Network(other.to_owned()))
            }
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::None => "none",
            Self::Network(n) => n,
            Self::Passt => "passt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// No route to the uplink.
    #[serde(default)]
    pub internal: bool,
    pub created_ms: u64,
}

impl Network {
    /// User-defined networks resolve container names; the default one does not (as
    /// Docker's default bridge).
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_NETWORK
    }
}

/// A container's address on a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub container_id: String,
    pub container_name: String,
    /// The container's record directory; the lease dies with it.
    pub record: PathBuf,
    pub ip: Ipv4Addr,
    pub mac: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Egress::is_allow")]
    pub egress: Egress,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NetworkFile {
    network: Network,
    #[serde(default)]
    leases: Vec<Lease>,
}

/// A container's place on a network: what the supervisor plugs in and the agent
/// configures.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub network: Network,
    pub lease: Lease,
    pub tap: String,
}

pub struct Networks {
    dir: PathBuf,
}

pub fn validate_name(name: &str) -> Result<()> {
    if is_valid_name(name, 64) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid network name {name:?}: use 1-64 characters of [a-zA-Z0-9_.-], starting with a letter or digit"
        )))
    }
}

impl Networks {
    /// The host's network records (see the module comment).
    pub fn open() -> Result<Self> {
        let dir = std::env::var_os("SKIFF_NETWORK_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/skiff/networks"));
        Self::open_at(&dir)
    }

    pub fn open_at(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn lock(&self) -> Result<skiff_sys::files::FileLock> {
        crate::owner_only::lock(&self.dir.join(".lock"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn read(&self, name: &str) -> Result<Option<NetworkFile>> {
        let p = self.path(name);
        if !p.exists() {
            return Ok(None);
        }
        read_json(&p).map(Some)
    }

    fn write(&self, f: &NetworkFile) -> Result<()> {
        write_json(&self.path(&f.network.name), f)
    }

    fn all(&self) -> Result<Vec<NetworkFile>> {
        let mut out = Vec::new();
        let entries =
            fs::read_dir(&self.dir).map_err(Error::io(format!("list {}", self.dir.display())))?;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if validate_name(stem).is_err() {
                continue;
            }
            match read_json::<NetworkFile>(&e.path()) {
                Ok(f) => out.push(f),
                Err(err) => tracing::warn!("skipping unreadable network {stem}: {err}"),
            }
        }
        out.sort_by_key(|f| f.network.created_ms);
        Ok(out)
    }

    /// The default network, recorded on first use.
    fn ensure_default(&self) -> Result<()> {
        if self.read(DEFAULT_NETWORK)?.is_some() {
            return Ok(());
        }
        let subnet: Subnet = DEFAULT_SUBNET.parse().map_err(Error::Config)?;
        self.write(&NetworkFile {
            network: Network {
                name: DEFAULT_NETWORK.into(),
                id: new_id()?,
                bridge: DEFAULT_BRIDGE.into(),
                gateway: subnet.gateway(),
                subnet,
                internal: false,
                created_ms: now_ms(),
            },
            leases: Vec::new(),
        })
    }

    /// `network create`: a new bridge network (the bridge itself appears on first use).
    pub fn create(&self, name: &str, subnet: Option<Subnet>, internal: bool) -> Result<Network> {
        validate_name(name)?;
        if matches!(name, "none" | "host" | "passt") {
            return Err(Error::Invalid(format!(
                "{name:?} is a reserved network name"
            )));
        }
        let _lock = self.lock()?;
        self.ensure_default()?;
        if self.read(name)?.is_some() {
            return Err(Error::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let existing = self.all()?;
        let used_bridges: Vec<&str> = existing.iter().map(|f| f.network.bridge.as_str()).collect();
        let overlaps = |s: &Subnet| existing.iter().find(|f| f.network.subnet.overlaps(s));
        let index = (1..=MAX_BRIDGES)
            .find(|n| {
                let b = format!("skiff{n}");
                !used_bridges.contains(&b.as_str())
                    && (subnet.is_some() || overlaps(&Self::indexed_subnet(*n)).is_none())
            })
            .ok_or_else(|| Error::Conflict("too many networks (255)".into()))?;
        let subnet = match subnet {
            Some(s) => {
                if let Some(other) = overlaps(&s) {
                    return Err(Error::Conflict(format!(
                        "subnet {s} overlaps network {} ({})",
                        other.network.name, other.network.subnet
                    )));
                }
                s
            }
            None => Self::indexed_subnet(index),
        };
        let network = Network {
            name: name.to_owned(),
            id: new_id()?,
            bridge: format!("skiff{index}"),
            gateway: subnet.gateway(),
            subnet,
            internal,
            created_ms: now_ms(),
        };
        self.write(&NetworkFile {
            network: network.clone(),
            leases: Vec::new(),
        })?;
        Ok(network)
    }

    fn indexed_subnet(n: u32) -> Subnet {
        let third = u8::try_from(n).unwrap_or(u8::MAX);
        Subnet {
            base: Ipv4Addr::new(10, 89, third, 0),
            prefix: 24,
        }
    }

    /// Every network with its live leases (the default one included).
    pub fn list(&self) -> Result<Vec<(Network, Vec<Lease>)>> {
        let _lock = self.lock()?;
        self.ensure_default()?;
        Ok(self
            .all()?
            .into_iter()
            .map(|f| {
                let live = f.leases.into_iter().filter(|l| l.record.exists()).collect();
                (f.network, live)
            })
            .collect())
    }

    pub fn get(&self, name: &str) -> Result<(Network, Vec<Lease>)> {
        self.list()?
            .into_iter()
            .find(|(n, _)| n.name == name || (name.len() >= 6 && n.id.starts_with(name)))
            .ok_or_else(|| Error::NotFound(format!("network {name} not found")))
    }

    /// `network rm`: refuses the default network and networks with containers.
    pub fn remove(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        if name == DEFAULT_NETWORK {
            return Err(Error::Conflict(format!(
                "{DEFAULT_NETWORK} is a pre-defined network and cannot be removed"
            )));
        }
        let Some(f) = self.read(name)? else {
            return Err(Error::NotFound(format!("network {name} not found")));
        };
        let live: Vec<&Lease> = f.leases.iter().filter(|l| l.record.exists()).collect();
        if let Some(l) = live.first() {
            return Err(Error::Conflict(format!(
                "network {name} has active endpoints (container {}); remove the containers first",
                l.container_name
            )));
        }
        fs::remove_file(self.path(name)).map_err(Error::io(format!("remove network {name}")))?;
        link::remove(&f.network.bridge)?;
        self.apply_firewall()
    }

    /// Leases an address (and host ports) on `network` for a container. Host ports 0
    /// are picked; a host port another container publishes is refused.
    pub fn attach(
        &self,
        network: &str,
        container_id: &str,
        container_name: &str,
        record: &Path,
        mut ports: Vec<PortMapping>,
        egress: Egress,
    ) -> Result<Attachment> {
        let _lock = self.lock()?;
        self.ensure_default()?;
        let Some(mut file) = self.read(network)? else {
            return Err(Error::NotFound(format!("network {network} not found")));
        };
        let everyone = self.all()?;
        let taken: Vec<PortMapping> = everyone
            .iter()
            .flat_map(|f| f.leases.iter())
            .filter(|l| l.record.exists())
            .flat_map(|l| l.ports.iter().copied())
            .collect();
        for (i, p) in ports.iter().enumerate() {
            if p.host_port == 0 {
                continue;
            }
            if taken.iter().chain(&ports[..i]).any(|t| t.clashes_with(p)) {
                return Err(Error::Conflict(format!(
                    "host port {} is already published by another container",
                    p.host_port
                )));
            }
            if !ports::host_port_free(*p) {
                return Err(Error::Conflict(format!(
                    "host port {}/{} is in use by a host process",
                    p.host_port, p.proto
                )));
            }
        }
        ports::assign_host_ports(&mut ports, &taken).map_err(Error::Conflict)?;
        file.leases
            .retain(|l| l.record.exists() && l.container_id != container_id);
        let used: Vec<Ipv4Addr> = file.leases.iter().map(|l| l.ip).collect();
        let ip = file.network.subnet.allocate(&used).ok_or_else(|| {
            Error::Conflict(format!("network {network} has no free address left"))
        })?;
        let lease = Lease {
            container_id: container_id.to_owned(),
            container_name: container_name.to_owned(),
            record: record.to_path_buf(),
            ip,
            mac: ipam::mac_for(ip),
            ports,
            egress,
        };
        file.leases.push(lease.clone());
        self.write(&file)?;
        Ok(Attachment {
            network: file.network,
            lease,
            tap: link::tap_name(container_id),
        })
    }

    /// `network`'s record and running-or-not leases as stored now, read without the
    /// lock (records are replaced by rename, so a read sees one whole version): the
    /// DNS responder's view, read on every query.
    pub fn snapshot_at(dir: &Path, network: &str) -> Result<Option<(Network, Vec<Lease>)>> {
        if validate_name(network).is_err() {
            return Ok(None);
        }
        let p = dir.join(format!("{network}.json"));
        if !p.exists() {
            return Ok(None);
        }
        let f: NetworkFile = read_json(&p)?;
        let live = f.leases.into_iter().filter(|l| l.record.exists()).collect();
        Ok(Some((f.network, live)))
    }

    /// The container's attachment, if it has one.
    pub fn attachment(&self, container_id: &str) -> Result<Option<Attachment>> {
        let _lock = self.lock()?;
        Ok(self.all()?.into_iter().find_map(|f| {
            let lease = f
                .leases
                .into_iter()
                .find(|l| l.container_id == container_id)?;
            Some(Attachment {
                network: f.network,
                lease,
                tap: link::tap_name(container_id),
            })
        }))
    }

    /// Releases the container's lease (on `rm`), removing its TAP and its ports.
    pub fn detach(&self, container_id: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut changed = false;
        for mut f in self.all()? {
            let before = f.leases.len();
            f.leases
                .retain(|l| l.container_id != container_id && l.record.exists());
            if f.leases.len() != before {
                self.write(&f)?;
                changed = true;
            }
        }
        link::remove(&link::tap_name(container_id))?;
        if changed {
            self.apply_firewall()?;
        }
        Ok(())
    }

    /// Before the VM starts: the bridge, the rule set and the container's TAP.
    pub fn plug(&self, att: &Attachment) -> Result<()> {
        let _lock = self.lock()?;
        let net = &att.network;
        link::ensure_bridge(&net.bridge, net.gateway, net.subnet.prefix)?;
        self.apply_firewall()?;
        link::create_tap(&att.tap, &net.bridge)
    }

    /// After the VM is gone.
    pub fn unplug(&self, att: &Attachment) -> Result<()> {
        link::remove(&att.tap)
    }

    /// Renders the table from every network and live lease and applies it (caller
    /// holds the lock).
    fn apply_firewall(&self) -> Result<()> {
        let all = self.all()?;
        let bridges: Vec<firewall::Bridge> = all
            .iter()
            .map(|f| firewall::Bridge {
                name: f.network.bridge.clone(),
                subnet: f.network.subnet,
                gateway: f.network.gateway,
                internal: f.network.internal,
                dns: !f.network.is_default(),
            })
            .collect();
        let members: Vec<firewall::Member> = all
            .iter()
            .flat_map(|f| f.leases.iter().map(move |l| (f, l)))
            .filter(|(_, l)| l.record.exists())
            .map(|(f, l)| firewall::Member {
                tap: link::tap_name(&l.container_id),
                bridge: f.network.bridge.clone(),
                ip: l.ip,
                mac: l.mac.clone(),
                egress: l.egress,
            })
            .collect();
        let publishes: Vec<firewall::Publish> = all
            .iter()
            .flat_map(|f| f.leases.iter())
            .filter(|l| l.record.exists())
            .flat_map(|l| {
                l.ports.iter().map(|m| firewall::Publish {
                    mapping: *m,
                    container_ip: l.ip,
                })
            })
            .collect();
        firewall::apply(&firewall::render(&bridges, &members, &publishes))
    }

    /// What the agent needs: the interface, resolv.conf and hosts. With `dns_served`
    /// (the network's responder runs) the gateway is the resolver and /etc/hosts names
    /// only the container itself; otherwise the peers of the moment are in /etc/hosts
    /// and the host's resolvers in resolv.conf.
    pub fn guest_config(
        &self,
        att: &Attachment,
        hostname: &str,
        dns_served: bool,
    ) -> Result<GuestNetwork> {
        let (network, leases) = self.get(&att.network.name)?;
        let peers: Vec<(Ipv4Addr, Vec<String>)> = if network.is_default() || dns_served {
            Vec::new()
        } else {
            leases
                .iter()
                .filter(|l| l.container_id != att.lease.container_id)
                .map(|l| {
                    (
                        l.ip,
                        vec![
                            l.container_name.clone(),
                            l.container_id[..12.min(l.container_id.len())].to_owned(),
                        ],
                    )
                })
                .collect()
        };
        let own_names = [hostname, att.lease.container_name.as_str()];
        let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Ok(GuestNetwork {
            interface: Some(GuestInterface {
                mac: att.lease.mac.clone(),
                address: att.lease.ip.to_string(),
                prefix_len: network.subnet.prefix,
                gateway: Some(network.gateway.to_string()),
                mtu: None,
            }),
            hosts: dns::hosts(att.lease.ip, &own_names, &peers),
            resolv_conf: if dns_served {
                dns::resolv_conf_via(network.gateway, &host_resolv)
            } else {
                dns::resolv_conf(&host_resolv)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_and_die_with_their_record() {
        let dir = tempfile::tempdir().unwrap();
        let nets = Networks::open_at(&dir.path().join("n")).unwrap();
        let net = nets.create("app", None, false).unwrap();
        assert_eq!(net.bridge, "skiff1");
        assert_eq!(net.subnet.to_string(), "10.89.1.0/24");
        assert!(nets.create("app", None, false).is_err());
        assert!(nets
            .create("other", Some("10.89.1.0/25".parse().unwrap()), false)
            .is_err());
        let rec_a = dir.path().join("a");
        let rec_b = dir.path().join("b");
        fs::create_dir_all(&rec_a).unwrap();
        fs::create_dir_all(&rec_b).unwrap();
        let p = |s| PortMapping::parse(s).unwrap();
        let a = nets
            .attach(
                "app",
                "aaaa",
                "a",
                &rec_a,
                vec![p("127.0.0.1:1:80")],
                Egress::Allow,
            )
            .unwrap();
        let b = nets
            .attach("app", "bbbb", "b", &rec_b, vec![], Egress::Deny)
            .unwrap();
        assert_eq!(a.lease.ip, Ipv4Addr::new(10, 89, 1, 2));
        assert_eq!(b.lease.ip, Ipv4Addr::new(10, 89, 1, 3));
        // Host port 1 is taken by a's lease.
        let e = nets
            .attach("app", "cccc", "c", &rec_b, vec![p("1:80")], Egress::Allow)
            .unwrap_err();
        assert!(e.to_string().contains("already published"), "{e}");
        assert!(nets
            .attach("nope", "dddd", "d", &rec_b, vec![], Egress::Allow)
            .is_err());
        // In use: refused; once a's record is gone and b detached, removable.
        assert!(nets
            .remove("app")
            .unwrap_err()
            .to_string()
            .contains("active endpoints"));
        assert!(nets.remove(DEFAULT_NETWORK).is_err());
        fs::remove_dir_all(&rec_a).unwrap();
        let (_, live) = nets.get("app").unwrap();
        assert_eq!(live.len(), 1);
        // The freed address is reused.
        let c = nets
            .attach("app", "cccc", "c", &rec_b, vec![], Egress::Allow)
            .unwrap();
        assert_eq!(c.lease.ip, Ipv4Addr::new(10, 89, 1, 2));
        let b = nets.attachment("bbbb").unwrap().unwrap();
        assert_eq!(b.lease.egress, Egress::Deny);
        // The responder's lock-free view sees the same leases.
        let (_, seen) = Networks::snapshot_at(&dir.path().join("n"), "app")
            .unwrap()
            .unwrap();
        assert_eq!(seen.len(), 2);
        assert!(Networks::snapshot_at(&dir.path().join("n"), "../x")
            .unwrap()
            .is_none());
    }
}
