//! `load`: images from an OCI or docker archive, admitted by the plugins.

use anyhow::bail;
use skiff_image::{archive, Store};

use super::*;

pub(super) fn load(store: &Store, a: LoadArgs) -> anyhow::Result<i32> {
    let loaded = match &a.input {
        Some(p) => archive::load(store, p)?,
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty (use -i FILE)");
            }
            archive::load_stream(store, Box::new(std::io::stdin()))?
        }
    };
    let policy = skiff_engine::policy::get()?;
    for l in &loaded {
        let reference = l
            .names
            .first()
            .map_or_else(|| l.image.id.to_string(), ToString::to_string);
        if let Err(e) = policy.admit_image(&reference, &l.image) {
            for other in &loaded {
                for n in &other.names {
                    let _ = store.remove(&n.to_string(), true);
                }
                let _ = store.remove(&other.image.id.to_string(), true);
            }
            return Err(e.into());
        }
    }
    for l in loaded {
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.image.id);
        }
        for n in l.names {
            println!("Loaded image: {}", familiar(&n));
        }
    }
    Ok(0)
}
