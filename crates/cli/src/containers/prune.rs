//! `container prune`: remove every stopped container.

use std::path::Path;

use anyhow::Result;
use skiff_runtime::container::Status;

use super::*;

pub(super) fn prune(ctx: &Ctx) -> Result<u8> {
    let c = ctx.containers()?;
    let store = ctx.store()?;
    let mut freed = 0u64;
    let mut deleted = Vec::new();
    for (spec, st) in c.list()? {
        if st.status == Status::Exited || (st.status == Status::Created && st.pid.is_none()) {
            freed += disk_usage(&c.dir_of(&spec.id));
            remove(&c, &store, &spec.id, false)?;
            deleted.push(spec.id);
        }
    }
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for d in deleted {
            println!("{d}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        skiff_image::fsutil::human_size(freed)
    );
    Ok(0)
}

pub(super) fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}
