//! `network rm`: removes each network named, going on past failures.

use anyhow::Result;
use skiff_runtime::network::Networks;

use super::args::NamesArgs;

pub(super) fn rm(networks: &Networks, a: NamesArgs) -> Result<u8> {
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
    Ok(0)
}
