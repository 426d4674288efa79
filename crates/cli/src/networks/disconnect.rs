//! `network disconnect`: takes a stopped container off its network.

use anyhow::{bail, Result};
use skiff_runtime::container::Containers;
use skiff_runtime::network::{NetworkMode, Networks};

use super::args::ConnectArgs;

pub(super) fn disconnect(
    networks: &Networks,
    containers: &Containers,
    a: ConnectArgs,
) -> Result<u8> {
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
    Ok(0)
}
