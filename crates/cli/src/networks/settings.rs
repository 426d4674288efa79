//! A container's network as the container commands show it: `ps`'s PORTS column and
//! `inspect`'s NetworkSettings.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::{json, Value};
use skiff_runtime::container::{ContainerSpec, ContainerState};
use skiff_runtime::network::{passt, NetworkMode, Networks, PortMapping};

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
