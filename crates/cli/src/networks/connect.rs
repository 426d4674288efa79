//! `network connect`: puts a stopped container on a network (it has at most one).

use anyhow::{bail, Result};
use skiff_runtime::container::Containers;
use skiff_runtime::network::{NetworkMode, Networks};

use super::args::ConnectArgs;

pub(super) fn connect(networks: &Networks, containers: &Containers, a: ConnectArgs) -> Result<u8> {
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
    Ok(0)
}
