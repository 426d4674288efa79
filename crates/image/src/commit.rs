//! Commit: a container's writable-layer changes, as its guest streams them (an OCI
//! layer tar with `.wh.` whiteouts, see the agent's `changes`), become a new layer and a
//! new image on top of its parent. The guest chooses every byte of that stream, so it
//! is checked entry by entry as it is written to the ingest file, by the same rules as
//! any image layer (`unpack::clean_path`, `TarGuard` caps): no absolute path or `..`, no
//! hardlink to anything but an earlier entry, sane symlink targets and whiteout names,
//! only the entry kinds a layer has. Device nodes and set-id files stay data inside the
//! image: they only ever exist inside a guest.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use serde_json::{json, Value};

use crate::error::{malformed, Error, Result};
use crate::manifest::{self, NewLayer};
use crate::reference::Reference;
use crate::store::{Image, Store};
use crate::targuard::TarGuard;
use crate::unpack::clean_path;

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

/// Create a new image: `parent` (anything `resolve` accepts) plus the layer tar
/// `layer` (hostile: checked while it is stored), with `change` applied to the config;
/// tagged `tag`.
pub fn commit(
    store: &Store,
    parent: &str,
    layer: &mut dyn Read,
    change: &ConfigChange,
    tag: Option<&str>,
) -> Result<Image> {
    let tags: Vec<Reference> = tag.map(Reference::parse).transpose()?.into_iter().collect();
    let parent = store.image(parent)?;
    let _ingest = store.ingest_guard()?;
    let mut ingest = store.ingest()?;
    check_layer(layer, &mut ingest, &store.limits)?;
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

/// An empty layer tar (a container that changed nothing).
pub fn empty_layer() -> Vec<u8> {
    vec![0u8; 1024]
}

/// Copies the layer tar `from` to `to`, checking every entry on the way.
pub fn check_layer(from: &mut dyn Read, to: &mut dyn Write, limits: &crate::Limits) -> Result<()> {
    let tee = Tee { from, to };
    let guard = TarGuard::new(
        tee,
        limits.max_layer_uncompressed,
        limits.max_entries,
        limits.max_tar_extension,
    );
    let mut archive = tar::Archive::new(guard);
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for entry in archive.entries().map_err(stream_error)? {
        let mut entry = entry.map_err(stream_error)?;
        check_entry(&mut entry, &mut seen)?;
        // The data passes through the tee to the ingest file.
        io::copy(&mut entry, &mut io::sink()).map_err(stream_error)?;
    }
    // Trailing blocks belong to the blob too.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(stream_error)?;
    Ok(())
}

fn hostile(msg: impl Into<String>) -> Error {
    Error::HostileStream(msg.into())
}

fn stream_error(e: io::Error) -> Error {
    crate::unpack::stream_error_as(e, Error::HostileStream, "read the layer from the guest")
}

fn check_entry<R: Read>(entry: &mut tar::Entry<'_, R>, seen: &mut HashSet<Vec<u8>>) -> Result<()> {
    let relabel = crate::extract::relabel;
    let raw = entry.path_bytes().into_owned();
    let comps = clean_path(&raw).map_err(relabel)?;
    crate::unpack::header_meta(entry.header()).map_err(relabel)?;
    let shown = String::from_utf8_lossy(&raw).into_owned();
    let name = comps
        .last()
        .map(|c| std::os::unix::ffi::OsStrExt::as_bytes(*c));
    if let Some(victim) = name.and_then(|n| n.strip_prefix(b".wh.")) {
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(hostile(format!("bad whiteout {shown:?}")));
        }
    }
    use tar::EntryType as T;
    let kind = entry.header().entry_type();
    match kind {
        T::Regular | T::Continuous | T::GNUSparse | T::Directory | T::Char | T::Block | T::Fifo => {
        }
        T::Symlink => {
            let t = entry
                .link_name_bytes()
                .ok_or_else(|| hostile(format!("symlink {shown:?} without a target")))?;
            if t.is_empty() || t.len() > 4096 || t.contains(&0) {
                return Err(hostile(format!("symlink {shown:?} with a bad target")));
            }
        }
        T::Link => {
            let t = entry
                .link_name_bytes()
                .ok_or_else(|| hostile(format!("hardlink {shown:?} without a target")))?;
            let target = clean_path(&t).map_err(relabel)?;
            if !seen.contains(&normal(&target)) {
                return Err(hostile(format!(
                    "hardlink {shown:?} to {:?}, not an earlier file of the layer",
                    String::from_utf8_lossy(&t)
                )));
            }
        }
        other => return Err(hostile(format!("entry {shown:?} of kind {other:?}"))),
    }
    if comps.is_empty() && !kind.is_dir() {
        return Err(hostile(format!("a {kind:?} entry with an empty name")));
    }
    if !kind.is_dir() {
        seen.insert(normal(&comps));
    }
    Ok(())
}

fn normal(comps: &[&std::ffi::OsStr]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in comps {
        out.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(*c));
        out.push(b'/');
    }
    out
}

/// Everything read from `from` is also written to `to`.
struct Tee<'a> {
    from: &'a mut dyn Read,
    to: &'a mut dyn Write,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.from.read(buf)?;
        self.to.write_all(&buf[..n])?;
        Ok(n)
    }
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
