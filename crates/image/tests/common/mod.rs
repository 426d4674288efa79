//! Helpers shared by the integration tests: tar construction with raw names
//! (the tar crate's builder refuses hostile paths, which we need to produce).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;

pub enum E<'a> {
    File(&'a str, &'a [u8]),
    FileMode(&'a str, &'a [u8], u32, u64, u64),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
    /// A file with a PAX xattr.
    Xattr(&'a str, &'a str, &'a [u8]),
    /// A file with a PAX xattr (name, value) and its data.
    XattrData(&'a str, &'a str, &'a [u8]),
}

fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let n = name.as_bytes();
    h.as_old_mut().name[..n.len()].copy_from_slice(n);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

pub fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::File(p, data) => {
                let mut h = raw_header(p, tar::EntryType::Regular, data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::FileMode(p, data, mode, uid, gid) => {
                let mut h = raw_header(p, tar::EntryType::Regular, data.len() as u64);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Dir(p) => {
                let mut h = raw_header(p, tar::EntryType::Directory, 0);
                h.set_mode(0o755);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Symlink(p, t) | E::Hardlink(p, t) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = raw_header(p, kind, 0);
                if t.len() > 100 {
                    // Long targets go in a GNU long-link entry.
                    b.append_link(&mut h, p, t).unwrap();
                    continue;
                }
                let t = t.as_bytes();
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Char(p, ma, mi) => {
                let mut h = raw_header(p, tar::EntryType::Char, 0);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Fifo(p) => {
                let mut h = raw_header(p, tar::EntryType::Fifo, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Xattr(p, k, v) => {
                b.append_pax_extensions([(format!("SCHILY.xattr.{k}").as_str(), *v)])
                    .unwrap();
                let mut h = raw_header(p, tar::EntryType::Regular, 1);
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
            }
            E::XattrData(p, k, v) => {
                b.append_pax_extensions([(format!("SCHILY.xattr.{k}").as_str(), *v)])
                    .unwrap();
                let mut h = raw_header(p, tar::EntryType::Regular, v.len() as u64);
                h.set_cksum();
                b.append(&h, *v).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Tars every layer reader must refuse (with default limits).
pub fn hostile_tars() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![
        ("absolute", tar_of(&[E::File("/escaped", b"x")])),
        ("dotdot", tar_of(&[E::File("a/../../escaped", b"x")])),
        (
            "symlink escape",
            tar_of(&[E::Symlink("link", ".."), E::File("link/escaped", b"x")]),
        ),
        (
            "absolute symlink escape",
            tar_of(&[E::Symlink("link", "/tmp"), E::File("link/escaped", b"x")]),
        ),
        (
            "hardlink outside",
            tar_of(&[E::Hardlink("h", "../escaped")]),
        ),
        (
            "hardlink through symlink",
            tar_of(&[E::Symlink("l", "/etc"), E::Hardlink("h", "l/passwd")]),
        ),
        ("whiteout dotdot", tar_of(&[E::File("a/.wh...", b"")])),
    ];
    // A GNU long name header claiming 1 TiB.
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(1 << 40);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend(vec![b'a'; 4096]);
    v.push(("enormous long name", t));
    // A regular entry claiming more than the layer limit.
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..1].copy_from_slice(b"f");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1 << 50);
    h.set_cksum();
    v.push(("enormous size", h.as_bytes().to_vec()));
    v
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Tests that need a tool CI installs: skip with a message, or fail under
/// SKIFF_REQUIRE_ALL=1.
pub fn require(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var("SKIFF_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("SKIFF_REQUIRE_ALL=1 but {what} is missing");
    }
    eprintln!("SKIPPED: {what} is missing");
    false
}

pub fn have_tool(name: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A layer for `write_layout`: tar bytes and how to compress them.
pub struct TestLayer {
    pub tar: Vec<u8>,
    pub compression: &'static str, // "tar", "gzip", "zstd"
}

/// Write an OCI image layout for one image; returns the manifest digest.
pub fn write_layout(dir: &std::path::Path, layers: &[TestLayer], tag: &str, cmd: &str) -> String {
    use sha2::{Digest, Sha256};
    let hex = |b: &[u8]| format!("{:x}", Sha256::digest(b));
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = hex(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        format!("sha256:{h}")
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", hex(&l.tar)));
        let (bytes, mt) = match l.compression {
            "gzip" => (gzip(&l.tar), "application/vnd.oci.image.layer.v1.tar+gzip"),
            "zstd" => (
                zstd::encode_all(&l.tar[..], 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            _ => (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
        };
        let d = put(&bytes);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": bytes.len()}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": [cmd]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cd = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
        .unwrap(),
    )
    .unwrap();
    md
}
