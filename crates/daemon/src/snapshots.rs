//! Snapshot restore for invocations (#9, QEMU backend): per (image, memory, vCPUs) one
//! snapshot of a VM at "agent ready", made by the first `POST /v1/invoke` that asks
//! for `"snapshot": true` and kept under `<root>/snapshots/` across daemon restarts.
//! Later such invocations that find no warm VM start theirs from the snapshot instead
//! of booting one; each restored VM gets its own tmpfs writable layer, hostname and
//! random seed (see skiff_runtime::vm::snapshot).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use skiff_runtime::{HypervisorKind, Snapshot, WarmSpec};

use crate::error::ApiError;
use crate::locks::lock;

pub struct Snapshots {
    /// Where they are kept: `<root>/snapshots`, one directory per key.
    dir: PathBuf,
    /// One slot per key; a slot's lock is held while its snapshot is made, so
    /// concurrent first requests wait for one snapshot instead of making several.
    slots: Mutex<HashMap<String, Arc<Mutex<Option<Snapshot>>>>>,
}

/// A directory name for (image, size): the image ID's hex digits and the size.
fn key(image_id: &str, memory_mib: u32, vcpus: u32) -> String {
    let hex: String = image_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    format!("{hex}-{memory_mib}m-{vcpus}c")
}

/// Refuses before anything boots where snapshots cannot work.
pub fn check_backend(spec: &WarmSpec) -> Result<(), ApiError> {
    if spec.selection.kind != HypervisorKind::Qemu {
        return Err(ApiError::bad_request(
            "snapshot_unsupported",
            "snapshot restore uses QEMU migration, and this daemon runs VMs on skiff-vmm",
        ));
    }
    Ok(())
}

impl Snapshots {
    /// The snapshots kept under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            slots: Mutex::default(),
        }
    }

    /// The snapshot for `spec`'s image and size: the one in memory, else the one on
    /// disk, else a new one (one boot; blocks).
    pub fn get(&self, image_id: &str, spec: &WarmSpec) -> Result<Snapshot, ApiError> {
        check_backend(spec)?;
        let k = key(image_id, spec.memory_mib, spec.vcpus);
        let slot = lock(&self.slots).entry(k.clone()).or_default().clone();
        let mut slot = lock(&slot);
        // A snapshot kept from an earlier request is checked again: a new agent or
        // kernel installed since must not keep running as the old one.
        if let Some(s) = slot.as_ref().filter(|s| s.is_current()) {
            return Ok(s.clone());
        }
        let dir = self.dir.join(&k);
        let snap = match Snapshot::open(&dir) {
            Ok(s) => s,
            Err(e) => {
                if dir.exists() {
                    tracing::warn!("{e}; making it again");
                }
                let (s, t) = Snapshot::create(spec, &dir)
                    .map_err(|e| ApiError::internal(format!("make a snapshot: {e}")))?;
                tracing::info!(
                    dir = %dir.display(),
                    boot_ms = t.boot.as_millis() as u64,
                    save_ms = t.save.as_millis() as u64,
                    "snapshot made"
                );
                s
            }
        };
        *slot = Some(snap.clone());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_directory_names() {
        assert_eq!(key("sha256:ab/../c", 256, 1), "sha256abc-256m-1c");
    }
}
