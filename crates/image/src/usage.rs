//! Disk usage for `system df`: every stored item (blob or layer disk) is
//! counted once; an image's bytes split into those shared with other images
//! and those only it holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::Result;
use crate::fsutil::disk_bytes;
use crate::store::{Image, Store};

#[derive(Debug)]
pub struct ImageUsage {
    pub image: Image,
    pub size: u64,
    pub shared: u64,
    pub unique: u64,
    pub containers: usize,
}

#[derive(Debug)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    /// Bytes of all items, each counted once.
    pub total: u64,
    /// Bytes freed if every image without containers were removed.
    pub reclaimable: u64,
}

/// Files (blobs and layer disks) an image holds.
pub fn image_files(store: &Store, i: &Image) -> Vec<PathBuf> {
    let mut v = vec![store.blob_path(&i.manifest_digest), store.blob_path(&i.id)];
    for l in &i.layers {
        v.push(store.blob_path(&l.digest));
        v.push(crate::store::layerdisk::disk_path(store, l));
    }
    v.sort();
    v.dedup();
    v
}

pub fn disk_usage(store: &Store) -> Result<DiskUsage> {
    let state = store.snapshot()?;
    let images = store.images()?;
    let mut holders: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let files: Vec<Vec<PathBuf>> = images.iter().map(|i| image_files(store, i)).collect();
    for f in files.iter().flatten() {
        *holders.entry(f.clone()).or_default() += 1;
    }
    let sizes: BTreeMap<&PathBuf, u64> = holders.keys().map(|p| (p, disk_bytes(p))).collect();
    let total = sizes.values().sum();
    let mut out = Vec::new();
    let mut used_files: BTreeMap<&PathBuf, ()> = BTreeMap::new();
    for (i, fs) in images.into_iter().zip(&files) {
        let (mut shared, mut unique) = (0, 0);
        for f in fs {
            let b = sizes.get(f).copied().unwrap_or(0);
            if holders.get(f).copied().unwrap_or(0) > 1 {
                shared += b;
            } else {
                unique += b;
            }
        }
        let containers = state
            .users
            .values()
            .filter(|m| **m == i.manifest_digest)
            .count();
        if containers > 0 {
            for f in fs {
                used_files.insert(f, ());
            }
        }
        out.push(ImageUsage {
            image: i,
            size: shared + unique,
            shared,
            unique,
            containers,
        });
    }
    let in_use: u64 = used_files
        .keys()
        .map(|p| sizes.get(*p).copied().unwrap_or(0))
        .sum();
    Ok(DiskUsage {
        images: out,
        total,
        reclaimable: total - in_use.min(total),
    })
}
