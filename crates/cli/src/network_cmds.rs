//! `skiff network ...` and `skiff port`: they parse and print; the host side lives in
//! `skiff_runtime::network`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use skiff_runtime::container::{ContainerSpec, ContainerState, Containers};
use skiff_runtime::network::{
    passt, ports, Lease, Network, NetworkMode, Networks, PortMapping, Subnet,
};

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Display detailed information on one or more networks
    Inspect(NamesArgs),
    /// Connect a stopped container to a network (one network per container)
    Connect(ConnectArgs),
    /// Disconnect a stopped container from a network
    Disconnect(ConnectArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Subnet in CIDR form (default: the next free 10.89.N.0/24)
    #[arg(long)]
    subnet: Option<String>,
    /// No route to the outside (containers reach only each other)
    #[arg(long)]
    internal: bool,
    /// Only the bridge driver exists; accepted for compatibility
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    name: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only display network names
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Args)]
pub struct ConnectArgs {
    network: String,
    container: String,
}

pub fn run(cmd: NetworkCommand, containers: &Containers) -> Result<u8> {
    let networks = Networks::open()?;
    match cmd {
        NetworkCommand::Create(a) => {
            if a.driver != "bridge" {
                bail!(
                    "network driver {:?} is not supported (only bridge)",
                    a.driver
                );
            }
            let subnet = a
                .subnet
                .as_deref()
                .map(str::parse::<Subnet>)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let n = networks.create(&a.name, subnet, a.internal)?;
            println!("{}", n.id);
        }
        NetworkCommand::Ls(a) => {
            let mut out = std::io::stdout().lock();
            let all = networks.list()?;
            if a.quiet {
                for (n, _) in &all {
                    writeln!(out, "{}", n.name)?;
                }
            } else {
                writeln!(
                    out,
                    "{:<14}{:<20}{:<10}{:<18}BRIDGE",
                    "NETWORK ID", "NAME", "DRIVER", "SUBNET"
                )?;
                for (n, _) in &all {
                    writeln!(
                        out,
                        "{:<14}{:<20}{:<10}{:<18}{}",
                        &n.id[..12.min(n.id.len())],
                        n.name,
                        "bridge",
                        n.subnet.to_string(),
                        n.bridge
                    )?;
                }
            }
        }
        NetworkCommand::Rm(a) => {
            let mut failed = None;
            for name in &a.networks {
                match networks.remove(name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("skiff: {e}");
                        failed = Some(e);
                    }
                }
            }
            if failed.is_some() {
                return Ok(crate::EXIT_SKIFF_ERROR);
            }
        }
        NetworkCommand::Inspect(a) => {
            let mut values = Vec::new();
            for name in &a.networks {
                let (n, leases) = networks.get(name)?;
                values.push(network_value(&n, &leases));
            }
            println!("{}", serde_json::to_string_pretty(&values)?);
        }
        NetworkCommand::Connect(a) => {
            let spec = containers.resolve(&a.container)?;
            let (net, _) = networks.get(&a.network)?;
            if spec.network != NetworkMode::None {
                bail!(
                    "container {} is already on network {}; skiff gives a container one network, disconnect it first",
                    spec.name,
                    spec.network.name()
                );
            }
            containers.set_network(&spec.id, NetworkMode::Network(net.name.clone()))?;
            if let Err(e) = networks.attach(
                &net.name,
                &spec.id,
                &spec.name,
                &containers.dir_of(&spec.id),
                Vec::new(),
                spec.egress,
            ) {
                let _ = containers.set_network(&spec.id, NetworkMode::None);
                return Err(e.into());
            }
        }
        NetworkCommand::Disconnect(a) => {
            let spec = containers.resolve(&a.container)?;
            let (net, _) = networks.get(&a.network)?;
            if spec.network != NetworkMode::Network(net.name.clone()) {
                bail!(
                    "container {} is not connected to network {}",
                    spec.name,
                    net.name
                );
            }
            containers.set_network(&spec.id, NetworkMode::None)?;
            networks.detach(&spec.id)?;
        }
    }
    Ok(0)
}

fn network_value(n: &Network, leases: &[Lease]) -> Value {
    let containers: serde_json::Map<String, Value> = leases
        .iter()
        .map(|l| {
            (
                l.container_id.clone(),
                json!({
                    "Name": l.container_name,
                    "MacAddress": l.mac,
                    "IPv4Address": format!("{}/{}", l.ip, n.subnet.prefix),
                    "Ports": l.ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": skiff_runtime::container::rfc3339_ms(n.created_ms),
        "Driver": "bridge",
        "Internal": n.internal,
        "IPAM": { "Config": [{ "Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string() }] },
        "Options": { "com.docker.network.bridge.name": n.bridge },
        "Containers": containers,
    })
}

/// `-P`: the image's ExposedPorts, each to a host port picked at lease time.
pub fn exposed_ports(config_json: &Value) -> Result<Vec<PortMapping>> {
    let Some(exposed) = config_json
        .get("config")
        .and_then(|c| c.get("ExposedPorts"))
        .and_then(Value::as_object)
    else {
        return Ok(Vec::new());
    };
    exposed
        .keys()
        .map(|k| ports::parse_exposed(k).map_err(anyhow::Error::msg))
        .collect()
}

/// `-p`/`-P` of a passt container: host ports 0 become free ones; a host port in use
/// is refused now rather than when passt fails to bind it.
pub fn passt_ports(mut ports: Vec<PortMapping>) -> Result<Vec<PortMapping>> {
    for p in &ports {
        if p.host_port != 0 && !ports::host_port_free(*p) {
            bail!(
                "host port {}/{} is in use by a host process",
                p.host_port,
                p.proto
            );
        }
    }
    ports::assign_host_ports(&mut ports, &[]).map_err(anyhow::Error::msg)?;
    Ok(ports)
}

fn ports_text(ports: &[PortMapping]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Published ports of the listed containers, for `ps`'s PORTS column.
pub fn ports_by_container(listed: &[(ContainerSpec, ContainerState)]) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = listed
        .iter()
        .filter(|(s, _)| s.network == NetworkMode::Passt)
        .map(|(s, _)| (s.id.clone(), ports_text(&s.passt_ports)))
        .collect();
    if !listed
        .iter()
        .any(|(s, _)| matches!(s.network, NetworkMode::Network(_)))
    {
        return out;
    }
    let Ok(all) = Networks::open().and_then(|n| n.list()) else {
        return out;
    };
    out.extend(
        all.into_iter()
            .flat_map(|(_, leases)| leases)
            .map(|l| (l.container_id, ports_text(&l.ports))),
    );
    out
}

fn published_value(ports: &[PortMapping]) -> Value {
    let mut published: serde_json::Map<String, Value> = serde_json::Map::new();
    for p in ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        let entry = published.entry(key).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({
                "HostIp": p.host_ip.map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string()),
                "HostPort": p.host_port.to_string(),
            }));
        }
    }
    Value::Object(published)
}

/// `inspect`'s NetworkSettings.
pub fn inspect_settings(spec: &ContainerSpec) -> Result<Value> {
    let name = match &spec.network {
        NetworkMode::None => {
            return Ok(json!({ "Networks": { "none": {} }, "Ports": {}, "IPAddress": "" }))
        }
        NetworkMode::Passt => {
            let ip = passt::GUEST_IP.to_string();
            let gw = passt::GATEWAY.to_string();
            return Ok(json!({
                "IPAddress": ip,
                "Gateway": gw,
                "IPPrefixLen": 24,
                "MacAddress": passt::guest_mac(),
                "Ports": published_value(&spec.passt_ports),
                "Networks": { "passt": { "IPAddress": ip, "Gateway": gw, "IPPrefixLen": 24 } },
            }));
        }
        NetworkMode::Network(name) => name,
    };
    let Some(att) = Networks::open()?.attachment(&spec.id)? else {
        return Ok(json!({ "Networks": {}, "Ports": {}, "IPAddress": "" }));
    };
    let published = published_value(&att.lease.ports);
    Ok(json!({
        "IPAddress": att.lease.ip.to_string(),
        "Gateway": att.network.gateway.to_string(),
        "IPPrefixLen": att.network.subnet.prefix,
        "MacAddress": att.lease.mac,
        "Ports": published,
        "Networks": {
            name: {
                "NetworkID": att.network.id,
                "IPAddress": att.lease.ip.to_string(),
                "Gateway": att.network.gateway.to_string(),
                "IPPrefixLen": att.network.subnet.prefix,
                "MacAddress": att.lease.mac,
            }
        },
    }))
}

/// `skiff port CONTAINER [PORT[/PROTO]]`, as Docker prints it.
pub fn port(containers: &Containers, container: &str, private: Option<&str>) -> Result<u8> {
    let spec = containers.resolve(container)?;
    let filter = private
        .map(|p| ports::parse_exposed(p).map_err(anyhow::Error::msg))
        .transpose()?;
    let lease_ports = match &spec.network {
        NetworkMode::Passt => spec.passt_ports.clone(),
        _ => match Networks::open()?.attachment(&spec.id)? {
            Some(att) => att.lease.ports,
            None => Vec::new(),
        },
    };
    let shown: Vec<&PortMapping> = lease_ports
        .iter()
        .filter(|p| {
            filter.is_none_or(|f| f.container_port == p.container_port && f.proto == p.proto)
        })
        .collect();
    if shown.is_empty() {
        if let Some(p) = private {
            bail!("no public port '{p}' published for {}", spec.name);
        }
    }
    for p in shown {
        let host = p
            .host_ip
            .map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
        if private.is_some() {
            println!("{host}:{}", p.host_port);
        } else {
            println!("{}/{} -> {host}:{}", p.container_port, p.proto, p.host_port);
        }
    }
    Ok(0)
}
