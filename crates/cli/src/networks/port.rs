//! `skiff port`: a container's published ports, as Docker prints them.

use anyhow::{bail, Result};
use skiff_runtime::container::Containers;
use skiff_runtime::network::{ports, NetworkMode, Networks, PortMapping};

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
