//! `rm`: the record, its writable layer and its image reference go; `-f` stops it first.

use anyhow::Result;
use skiff_engine::lifecycle;
use skiff_image::Store;
use skiff_runtime::container::Containers;

pub(super) fn remove(c: &Containers, store: &Store, id: &str, force: bool) -> Result<()> {
    Ok(lifecycle::remove(c, store, id, force)?)
}
