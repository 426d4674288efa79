//! Commit: turn a container's overlayfs upper directory into a new layer and
//! a new image on top of its parent. overlayfs marks deletions with 0/0
//! character devices and opaque directories with `trusted.overlay.opaque=y`;
//! the layer tar carries OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) instead.
//! Assumes the overlay ran without redirect_dir/metacopy (the guest mounts it
//! that way), so every upper file holds its full content.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::digest::Hashing;
use crate::error::{malformed, Error, IoContext, Result};
use crate::manifest::{self, NewLayer};
use crate::reference::Reference;
use crate::store::{Image, Store};

/// What a commit changes in the parent's config (`None` keeps the parent's).
#[derive(Clone, Debug, Default)]
pub struct ConfigChange {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries added or replacing the parent's by key.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: Vec<(String, String)>,
    pub exposed_ports: Vec<String>,
    /// Recorded in the history entry (`created_by`) and as `comment`.
    pub created_by: String,
    pub comment: Option<String>,
    pub author: Option<String>,
}

/// Create a new image: `parent` (anything `resolve` accepts) plus the
/// changes in `upper`, with `change` applied to the config; tagged `tag`.
pub fn commit(
    store: &Store,
    parent: &str,
    upper: &Path,
    change: &ConfigChange,
    tag: Option<&str>,
) -> Result<Image> {
    let tags: Vec<Reference> = tag.map(Reference::parse).transpose()?.into_iter().collect();
    let parent = store.image(parent)?;
    let _ingest = store.ingest_guard()?;
    let mut ingest = store.ingest()?;
    diff_tar(upper, &mut ingest)?;
    let (digest, size) = ingest.commit(None)?;
    let mut config = parent.config_json.clone();
    apply_change(&mut config, change, &digest)?;
    let mut layers: Vec<NewLayer> = parent
        .layers
        .iter()
        .map(|l| NewLayer {
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
        })
        .collect();
    layers.push(NewLayer {
        digest: digest.clone(),
        size,
        media_type: manifest::OCI_LAYER_TAR.into(),
    });
    let r = store.create_image(&config, &layers, &tags);
    if r.is_err() {
        store.discard_unreferenced(&[digest])?;
    }
    r
}

fn apply_change(config: &mut Value, c: &ConfigChange, diff_id: &crate::Digest) -> Result<()> {
    let now = crate::fsutil::rfc3339(crate::fsutil::now_unix());
    let obj = config
        .as_object_mut()
        .ok_or_else(|| malformed("image config", "not an object"))?;
    obj.insert("created".into(), json!(now));
    if let Some(a) = &c.author {
        obj.insert("author".into(), json!(a));
    }
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    rootfs["diff_ids"]
        .as_array_mut()
        .ok_or_else(|| malformed("image config", "rootfs.diff_ids"))?
        .push(json!(diff_id.as_str()));
    let mut h = json!({"created": now, "created_by": c.created_by});
    if let Some(cm) = &c.comment {
        h["comment"] = json!(cm);
    }
    match obj.get_mut("history").and_then(Value::as_array_mut) {
        Some(hist) => hist.push(h),
        None => {
            obj.insert("history".into(), json!([h]));
        }
    }
    let cfg = obj.entry("config").or_insert_with(|| json!({}));
    if cfg.is_null() {
        *cfg = json!({});
    }
    let cfg = cfg
        .as_object_mut()
        .ok_or_else(|| malformed("image config", "config"))?;
    if let Some(v) = &c.entrypoint {
        cfg.insert("Entrypoint".into(), json!(v));
    }
    if let Some(v) = &c.cmd {
        cfg.insert("Cmd".into(), json!(v));
    }
    if let Some(v) = &c.working_dir {
        cfg.insert("WorkingDir".into(), json!(v));
    }
    if let Some(v) = &c.user {
        cfg.insert("User".into(), json!(v));
    }
    if let Some(v) = &c.stop_signal {
        cfg.insert("StopSignal".into(), json!(v));
    }
    if !c.env.is_empty() {
        let mut env: Vec<String> = cfg
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for e in &c.env {
            let key = e.split('=').next().unwrap_or(e);
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        cfg.insert("Env".into(), json!(env));
    }
    for (k, v) in &c.labels {
        let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        labels[k] = json!(v);
    }
    for p in &c.exposed_ports {
        let ports = cfg.entry("ExposedPorts").or_insert_with(|| json!({}));
        if !ports.is_object() {
            *ports = json!({});
        }
        ports[p] = json!({});
    }
    Ok(())
}

/// Write the tar of an overlayfs upper directory with OCI whiteouts.
/// Deterministic: entries sorted by name, hardlinks as tar links.
pub fn diff_tar(upper: &Path, out: &mut dyn Write) -> Result<crate::Digest> {
    let mut h = Hashing::new(out);
    {
        let mut b = tar::Builder::new(&mut h);
        b.follow_symlinks(false);
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        walk(upper, Path::new(""), &mut b, &mut links)?;
        b.finish().ctx(|| "finish layer tar".to_owned())?;
    }
    let (_, d, _) = h.finish();
    Ok(d)
}

fn walk(
    root: &Path,
    rel: &Path,
    b: &mut tar::Builder<&mut Hashing<&mut dyn Write>>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .ctx(|| format!("list {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .ctx(|| format!("list {}", dir.display()))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = rel.join(&name);
        let m = fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            let mut wh = rel.clone();
            wh.set_file_name(format!(".wh.{}", name.to_string_lossy()));
            append(b, &wh, tar::EntryType::Regular, &m, 0o600, None, &[])?;
            continue;
        }
        let xattrs = list_xattrs(&path)?;
        if ft.is_dir() {
            append(
                b,
                &rel,
                tar::EntryType::Directory,
                &m,
                m.mode(),
                None,
                &xattrs,
            )?;
            if get_xattr(&path, "trusted.overlay.opaque")?.as_deref() == Some(b"y") {
                append(
                    b,
                    &rel.join(".wh..wh..opq"),
                    tar::EntryType::Regular,
                    &m,
                    0o600,
                    None,
                    &[],
                )?;
            }
            walk(root, &rel, b, links)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    let first = first.clone();
                    append(
                        b,
                        &rel,
                        tar::EntryType::Link,
                        &m,
                        m.mode(),
                        Some(&first),
                        &xattrs,
                    )?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), rel.clone());
            }
            let f = fs::File::open(&path).ctx(|| format!("open {}", path.display()))?;
            let mut hdr = header(tar::EntryType::Regular, &m, m.mode());
            hdr.set_size(m.len());
            pax_xattrs(b, &xattrs)?;
            b.append_data(&mut hdr, &rel, f)
                .ctx(|| format!("add {}", rel.display()))?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&path).ctx(|| format!("readlink {}", path.display()))?;
            append(
                b,
                &rel,
                tar::EntryType::Symlink,
                &m,
                0o777,
                Some(&t),
                &xattrs,
            )?;
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                tracing::warn!("commit: skipping socket {}", rel.display());
                continue;
            };
            let mut hdr = header(kind, &m, m.mode());
            let rdev = m.rdev();
            hdr.set_device_major(libc::major(rdev))
                .ctx(|| "device major".to_owned())?;
            hdr.set_device_minor(libc::minor(rdev))
                .ctx(|| "device minor".to_owned())?;
            pax_xattrs(b, &xattrs)?;
            b.append_data(&mut hdr, &rel, std::io::empty())
                .ctx(|| format!("add {}", rel.display()))?;
        }
    }
    Ok(())
}

fn header(kind: tar::EntryType, m: &fs::Metadata, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
    h.set_size(0);
    h
}

fn append(
    b: &mut tar::Builder<&mut Hashing<&mut dyn Write>>,
    rel: &Path,
    kind: tar::EntryType,
    m: &fs::Metadata,
    mode: u32,
    link: Option<&Path>,
    xattrs: &[(String, Vec<u8>)],
) -> Result<()> {
    let mut h = header(kind, m, mode);
    pax_xattrs(b, xattrs)?;
    let r = match link {
        Some(t) => b.append_link(&mut h, rel, t),
        None => b.append_data(&mut h, rel, std::io::empty()),
    };
    r.ctx(|| format!("add {}", rel.display()))
}

fn pax_xattrs(
    b: &mut tar::Builder<&mut Hashing<&mut dyn Write>>,
    xattrs: &[(String, Vec<u8>)],
) -> Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let recs: Vec<(String, &[u8])> = xattrs
        .iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
        .collect();
    b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
        .ctx(|| "add xattrs".to_owned())
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Unsupported("path with NUL".into()))
}

/// All xattrs except overlayfs' own.
fn list_xattrs(p: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path and a buffer of buf.len() bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(e).ctx(|| format!("list xattrs of {}", p.display()));
    }
    let mut out = Vec::new();
    for name in buf[..usize::try_from(n).unwrap_or(0)]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(v) = get_xattr(p, &name)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

fn get_xattr(p: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|_| Error::Unsupported("xattr name with NUL".into()))?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA | libc::ENOTSUP) => Ok(None),
            _ => Err(e).ctx(|| format!("get xattr {name} of {}", p.display())),
        };
    }
    buf.truncate(usize::try_from(r).unwrap_or(0));
    Ok(Some(buf))
}
