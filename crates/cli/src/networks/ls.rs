//! `network ls`: the networks as a table, or their names alone.

use std::io::Write;

use anyhow::Result;
use skiff_runtime::network::Networks;

use super::args::LsArgs;

pub(super) fn ls(networks: &Networks, a: LsArgs) -> Result<u8> {
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
    Ok(0)
}
