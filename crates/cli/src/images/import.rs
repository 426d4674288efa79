//! `import`: a filesystem tarball as a one-layer image.

use anyhow::Context;
use skiff_image::{archive, Reference, Store};

use super::*;

pub(super) fn import(store: &Store, a: ImportArgs) -> anyhow::Result<i32> {
    let tags: Vec<Reference> = a
        .name
        .as_deref()
        .map(Reference::parse)
        .transpose()?
        .into_iter()
        .collect();
    let input: Box<dyn std::io::Read> = if a.file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?)
    };
    let img = archive::import(store, input, &tags)?;
    println!("{}", img.id);
    Ok(0)
}
