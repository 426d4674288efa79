//! `network inspect`: networks and their containers as Docker's JSON.

use anyhow::Result;
use serde_json::{json, Value};
use skiff_runtime::network::{Lease, Network, Networks};

use super::args::NamesArgs;

pub(super) fn inspect(networks: &Networks, a: NamesArgs) -> Result<u8> {
    let mut values = Vec::new();
    for name in &a.networks {
        let (n, leases) = networks.get(name)?;
        values.push(network_value(&n, &leases));
    }
    println!("{}", serde_json::to_string_pretty(&values)?);
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
