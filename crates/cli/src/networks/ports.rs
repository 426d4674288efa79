//! The ports a new container publishes: `-P`'s from the image, and `-p`/`-P` of a
//! passt container checked and given host ports (used by `create`).

use anyhow::{bail, Result};
use serde_json::Value;
use skiff_runtime::network::{ports, PortMapping};

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
