//! `prune`: every container that is not running goes, as `remove` takes it.

use std::path::Path;

use skiff_image::Store;
use skiff_runtime::container::{ContainerSpec, Containers, Status};

use super::remove;
use crate::Result;

/// What a prune removed.
#[derive(Debug, Default)]
pub struct Pruned {
    pub ids: Vec<String>,
    /// Disk the removed containers' records held (writable layers, logs).
    pub freed_bytes: u64,
}

/// Removes every exited (or never started) container for which `keep` says no.
pub fn prune(
    containers: &Containers,
    store: &Store,
    keep: impl Fn(&ContainerSpec) -> bool,
) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    for (spec, st) in containers.list()? {
        let stopped =
            st.status == Status::Exited || (st.status == Status::Created && st.pid.is_none());
        if !stopped || keep(&spec) {
            continue;
        }
        pruned.freed_bytes += disk_usage(&containers.dir_of(&spec.id));
        remove(containers, store, &spec.id, false)?;
        pruned.ids.push(spec.id);
    }
    Ok(pruned)
}

/// Bytes allocated to the files directly in `dir`.
fn disk_usage(dir: &Path) -> u64 {
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
