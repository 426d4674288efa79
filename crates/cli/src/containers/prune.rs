//! `container prune`: remove every stopped container.

use anyhow::Result;
use skiff_engine::lifecycle;

use super::*;

pub(super) fn prune(ctx: &Ctx) -> Result<u8> {
    let pruned = lifecycle::prune(&ctx.containers()?, &ctx.store()?, |_| false)?;
    if !pruned.ids.is_empty() {
        println!("Deleted Containers:");
        for d in pruned.ids {
            println!("{d}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        skiff_image::fsutil::human_size(pruned.freed_bytes)
    );
    Ok(0)
}
