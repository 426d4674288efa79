//! `push`: an image to a registry.

use skiff_image::registry::{self};
use skiff_image::{Reference, Store};

use super::*;

pub(super) fn push(store: &Store, a: PushArgs) -> anyhow::Result<i32> {
    let r = Reference::parse(&a.name)?;
    let d = registry::push(store, &a.name, &r, &a.registry.options(a.quiet))?;
    let size = store.blob_size(&d).unwrap_or(0);
    println!(
        "{}: digest: {d} size: {size}",
        r.tag.as_deref().unwrap_or("latest")
    );
    Ok(0)
}
