//! The offline starter image: `busybox` built from Debian's busybox-static
//! (`/bin/busybox`), with one symlink per applet, a minimal /etc, and
//! `Cmd ["sh"]` like the Docker Hub image. The build is deterministic: the same
//! busybox binary always gives the same image ID.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, NewLayer};
use crate::reference::Reference;
use crate::store::{Image, Store};

pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
pub const DEFAULT_NAME: &str = "busybox:latest";

/// Build the starter image from the busybox binary at `busybox` and tag it
/// `name` (normally `busybox:latest`).
pub fn build(store: &Store, busybox: &Path, name: &str) -> Result<Image> {
    let tag = Reference::parse(name)?;
    let bin = fs::read(busybox).ctx(|| {
        format!(
            "read {} (apt-get install busybox-static)",
            busybox.display()
        )
    })?;
    if has_interpreter(&bin) {
        return Err(Error::Unsupported(format!(
            "{} is dynamically linked; the image needs a static busybox (apt-get install busybox-static)",
            busybox.display()
        )));
    }
    let meta = fs::metadata(busybox).ctx(|| format!("stat {}", busybox.display()))?;
    let list = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| Error::Tool {
            tool: "busybox",
            detail: e.to_string(),
        })?;
    if !list.status.success() {
        return Err(Error::Tool {
            tool: "busybox",
            detail: "--list-full failed (not a static busybox?)".into(),
        });
    }
    let applets = String::from_utf8_lossy(&list.stdout);
    let layer = layer_tar(&bin, &applets).ctx(|| "build busybox layer".to_owned())?;
    let _ingest = store.ingest_guard()?;
    let digest = store.put_blob(&layer)?;
    let created = crate::fsutil::rfc3339(u64::try_from(meta.mtime()).unwrap_or(0));
    let mut config = manifest::base_config(
        std::slice::from_ref(&digest),
        &created,
        "skiff image build-busybox (Debian busybox-static)",
    );
    config["config"] = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh"],
        "Labels": {"org.opencontainers.image.source": "debian busybox-static"},
    });
    let layer = NewLayer {
        digest,
        size: layer.len() as u64,
        media_type: manifest::OCI_LAYER_TAR.into(),
    };
    store.create_image(&config, &[layer], &[tag])
}

/// Whether a 64-bit little-endian ELF asks for a dynamic loader (PT_INTERP).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let off = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        elf.get(off..off + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

fn layer_tar(bin: &[u8], applets: &str) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let hdr = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    let dirs = [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sbin", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ];
    for (d, mode) in dirs {
        let mut h = hdr(tar::EntryType::Directory, mode, 0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())?;
    }
    let mut h = hdr(tar::EntryType::Regular, 0o755, bin.len() as u64);
    b.append_data(&mut h, "bin/busybox", bin)?;
    let files: [(&str, &str); 3] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hostname", "busybox\n"),
    ];
    for (p, data) in files {
        let mut h = hdr(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, p, data.as_bytes())?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in applets.lines().map(str::trim) {
        let a = a.trim_start_matches('/');
        let ok_dir = ["bin/", "sbin/", "usr/bin/", "usr/sbin/"]
            .iter()
            .any(|d| a.starts_with(d));
        if !ok_dir || a == "bin/busybox" || a.contains("..") || !seen.insert(a.to_owned()) {
            continue;
        }
        let mut h = hdr(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, a, "/bin/busybox")?;
    }
    let mut out = b.into_inner()?;
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_dynamic_binaries() {
        // /bin/sh on Debian is dynamic; busybox-static is not.
        if let Ok(sh) = fs::read("/bin/sh") {
            assert!(has_interpreter(&sh));
        }
        if let Ok(bb) = fs::read(DEFAULT_BUSYBOX) {
            assert!(!has_interpreter(&bb));
        }
        assert!(!has_interpreter(b"not an elf"));
    }
}
