//! The container's writable layer: a sparse ext4 disk image, created empty.

use std::path::Path;
use std::process::Command;

use crate::{Error, Result};

/// Creates a sparse ext4 image of `size_bytes` at `path` (which must not exist).
/// The file is built under a temporary name and renamed, so a crash leaves no
/// half-made disk behind.
pub fn create(path: &Path, size_bytes: u64) -> Result<()> {
    if path.exists() {
        return Err(Error::Disk {
            path: path.to_path_buf(),
            message: "already exists".into(),
        });
    }
    if size_bytes < 16 << 20 {
        return Err(Error::Disk {
            path: path.to_path_buf(),
            message: "a writable layer needs at least 16 MiB".into(),
        });
    }
    let tmp = path.with_extension("partial");
    // The container's files: its owner's alone.
    let file = crate::owner_only::create(&tmp)?;
    file.set_len(size_bytes)
        .map_err(Error::io(format!("size {}", tmp.display())))?;
    drop(file);
    // lazy init keeps creation fast; the journal makes the layer crash-safe in the guest.
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            "-L",
            "skiff-rw",
        ])
        .arg(&tmp)
        .output();
    let result = match out {
        Ok(o) if o.status.success() => {
            std::fs::rename(&tmp, path).map_err(Error::io(format!("rename to {}", path.display())))
        }
        Ok(o) => Err(Error::Disk {
            path: path.to_path_buf(),
            message: format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        }),
        Err(e) => Err(Error::MissingTool {
            tool: "mkfs.ext4",
            looked: format!("$PATH ({e})"),
            hint: "install it with `apt-get install e2fsprogs`",
        }),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Parses sizes like `512M`, `1G`, `1048576` (bytes) as Docker does.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_lowercase() {
                'b' => 1,
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                _ => {
                    return Err(Error::Config(format!(
                        "invalid size {s:?}: unknown unit {c:?}"
                    )))
                }
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| Error::Config(format!("invalid size {s:?}")))?;
    n.checked_mul(mult)
        .ok_or_else(|| Error::Config(format!("size {s:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
    }

    #[test]
    fn create_refuses_existing_and_tiny() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rw.img");
        std::fs::write(&p, b"x").unwrap();
        assert!(create(&p, 64 << 20).is_err());
        assert!(create(&dir.path().join("small.img"), 1 << 20).is_err());
    }

    #[test]
    fn create_makes_an_ext4_image() {
        if Command::new("mkfs.ext4").arg("-V").output().is_err() {
            eprintln!("SKIP create_makes_an_ext4_image: mkfs.ext4 is not installed");
            assert!(
                std::env::var_os("SKIFF_REQUIRE_ALL").is_none(),
                "mkfs.ext4 required"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rw.img");
        create(&p, 64 << 20).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        // ext4 superblock magic 0xEF53 at offset 1024 + 56.
        assert_eq!(&bytes[1080..1082], &[0x53, 0xEF]);
        assert!(!dir.path().join("rw.partial").exists());
    }
}
