//! The guest kernel and initramfs every microVM boots.

pub use crate::tools::cache_dir;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where `scripts/setup.sh` installs the guest kernel and initramfs:
/// `$SKIFF_GUEST_DIR`, else `$XDG_DATA_HOME/skiff/guest` (`~/.local/share/skiff/guest`).
pub fn guest_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SKIFF_GUEST_DIR") {
        return PathBuf::from(d);
    }
    data_home().join("skiff/guest")
}

fn data_home() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
}

const SETUP_HINT: &str =
    "build it with `scripts/setup.sh` (or point SKIFF_KERNEL/SKIFF_INITRAMFS at one)";

#[derive(Debug, Clone)]
pub struct GuestArtifacts {
    /// The kernel to boot: the uncompressed ELF `vmlinux` where there is one (QEMU
    /// enters it through its PVH note and skiff's VMM loads it directly, skipping the
    /// decompressor, which is slow under emulation), else a bzImage.
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl GuestArtifacts {
    /// Finds the artifacts: explicit paths first, then `$SKIFF_KERNEL` /
    /// `$SKIFF_INITRAMFS`, then [`guest_dir`] (`vmlinux`, else `bzImage`).
    pub fn locate(kernel: Option<&Path>, initramfs: Option<&Path>) -> Result<Self> {
        let dir = guest_dir();
        let default_kernel = [dir.join("vmlinux"), dir.join("bzImage")]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| dir.join("vmlinux"));
        let kernel = pick(kernel, "SKIFF_KERNEL", &default_kernel).map_err(|looked| {
            Error::MissingArtifact {
                what: "guest kernel",
                looked,
                hint: SETUP_HINT,
            }
        })?;
        let initramfs =
            pick(initramfs, "SKIFF_INITRAMFS", &dir.join("initramfs.cpio")).map_err(|looked| {
                Error::MissingArtifact {
                    what: "guest initramfs",
                    looked,
                    hint: SETUP_HINT,
                }
            })?;
        Ok(Self { kernel, initramfs })
    }
}

fn pick(
    explicit: Option<&Path>,
    env: &str,
    default: &Path,
) -> std::result::Result<PathBuf, String> {
    let candidate = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(env).map(PathBuf::from))
        .unwrap_or_else(|| default.to_path_buf());
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(candidate.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_kernel_names_the_path_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            GuestArtifacts::locate(Some(&dir.path().join("nope")), Some(&dir.path().join("x")))
                .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("guest kernel not found"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn explicit_files_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("bzImage");
        let i = dir.path().join("initramfs.cpio");
        std::fs::write(&k, b"k").unwrap();
        std::fs::write(&i, b"i").unwrap();
        let a = GuestArtifacts::locate(Some(&k), Some(&i)).unwrap();
        assert_eq!(a.kernel, k);
        assert_eq!(a.initramfs, i);
    }
}
