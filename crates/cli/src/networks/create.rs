//! `network create`: a new bridge network, its id printed.

use anyhow::{bail, Result};
use skiff_runtime::network::{Networks, Subnet};

use super::args::CreateArgs;

pub(super) fn create(networks: &Networks, a: CreateArgs) -> Result<u8> {
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
    Ok(0)
}
