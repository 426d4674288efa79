//! On-disk cache of compiled components, keyed by the sha256 of the component bytes and
//! of everything about the engine that affects compiled code.
//!
//! Deserializing compiled code is trusting it to be machine code wasmtime produced, so
//! the cache only reads from a directory it owns (created 0700, owned by this user, not
//! writable by others), and every file carries the sha256 of its payload, checked before
//! use. A file that fails any check is deleted and the component recompiled.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::error::{PluginError, Result};

const MAGIC: &[u8; 8] = b"SKIFFCW1";
/// Bumped whenever the file format or the engine settings change meaning.
const FORMAT: &str = "skiff-plugins artifact v1 / wasmtime 48.0.8";
const MAX_ARTIFACT: u64 = 256 << 20;

/// Counters a caller (or a test) can read to see what the cache did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheStats {
    /// Components loaded from a cached artifact (no compilation).
    pub hits: u64,
    /// Components compiled (no usable artifact, or no cache configured).
    pub compiled: u64,
    /// Cached artifacts rejected (corrupt, wrong digest) and replaced.
    pub rejected: u64,
}

/// Where a plugin's compiled code came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactSource {
    Cache,
    Compiled,
}

#[derive(Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    compiled: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            compiled: self.compiled.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Feeds `Hash` output into sha256 (the engine exposes its compatibility as `Hash`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0 // unused: only the digest of everything written matters
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: [u8; 32],
    pub(crate) counters: Counters,
}

impl ArtifactCache {
    pub(crate) fn new(engine: &Engine, dir: Option<&Path>) -> Result<Self> {
        let mut hasher = Sha256Hasher(Sha256::new());
        FORMAT.hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hasher.0.finalize().into();
        let dir = dir.map(prepare_dir).transpose()?;
        Ok(ArtifactCache {
            dir,
            engine_key,
            counters: Counters::default(),
        })
    }

    fn path_for(&self, dir: &Path, component_sha256: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.engine_key);
        h.update(component_sha256.as_bytes());
        dir.join(format!("{}.cwasm", hex(&h.finalize())))
    }

    /// The compiled component for `bytes` (whose sha256 is given), from the cache when
    /// possible. Errors are the component's (invalid component); cache trouble only
    /// logs and falls back to compiling.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> std::result::Result<(Component, ArtifactSource), String> {
        let Some(dir) = &self.dir else {
            return self
                .compile(engine, bytes)
                .map(|c| (c, ArtifactSource::Compiled));
        };
        let path = self.path_for(dir, sha256);
        match self.read_artifact(&path) {
            Ok(Some(payload)) => {
                // SAFETY: `payload` was written by `store` below from
                // `Component::serialize` of an engine with the same compatibility hash
                // (part of the file name), in a directory this process owns and others
                // cannot write, and its sha256 was just verified against the header,
                // so it is the exact artifact wasmtime produced.
                match unsafe { Component::deserialize(engine, &payload) } {
                    Ok(c) => {
                        self.counters.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok((c, ArtifactSource::Cache));
                    }
                    Err(e) => self.reject(&path, &format!("{e:#}")),
                }
            }
            Ok(None) => {}
            Err(why) => self.reject(&path, &why),
        }
        let component = self.compile(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e}");
        }
        Ok((component, ArtifactSource::Compiled))
    }

    fn compile(&self, engine: &Engine, bytes: &[u8]) -> std::result::Result<Component, String> {
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        Component::from_binary(engine, bytes)
            .map_err(|e| format!("not a valid WebAssembly component: {e:#}"))
    }

    fn reject(&self, path: &Path, why: &str) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %path.display(), "discarding cached plugin artifact: {why}");
        let _ = fs::remove_file(path);
    }

    /// `Ok(None)` when absent; `Err` when present but unusable.
    fn read_artifact(&self, path: &Path) -> std::result::Result<Option<Vec<u8>>, String> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if !meta.file_type().is_file() || meta.len() > MAX_ARTIFACT {
            return Err("not a regular file of sane size".into());
        }
        let data = fs::read(path).map_err(|e| e.to_string())?;
        let header = MAGIC.len() + 32;
        if data.len() < header || &data[..MAGIC.len()] != MAGIC {
            return Err("bad header".into());
        }
        let (digest, payload) = data[MAGIC.len()..].split_at(32);
        if Sha256::digest(payload).as_slice() != digest {
            return Err("payload digest mismatch".into());
        }
        Ok(Some(payload.to_vec()))
    }

    /// Write temp + rename, so readers never see a partial artifact.
    fn store(&self, path: &Path, component: &Component) -> std::result::Result<(), String> {
        let payload = component.serialize().map_err(|e| format!("{e:#}"))?;
        let dir = path.parent().ok_or("no parent directory")?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
        tmp.write_all(MAGIC)
            .and_then(|()| tmp.write_all(&Sha256::digest(&payload)))
            .and_then(|()| tmp.write_all(&payload))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| e.to_string())?;
        tmp.persist(path).map_err(|e| e.error.to_string())?;
        Ok(())
    }
}

/// Create the cache directory (0700) or check an existing one is ours and private.
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    let err = |message: String| PluginError::Cache {
        path: dir.to_path_buf(),
        message,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(e.to_string()))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| err(e.to_string()))?;
    if !meta.file_type().is_dir() {
        return Err(err("not a directory".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(err(format!(
            "owned by uid {}, not by this user ({euid})",
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(err(
            "writable by group or others; refusing to trust it".into()
        ));
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_writable_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        assert!(prepare_dir(&dir).is_ok());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prepare_dir(&dir).is_err());
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(prepare_dir(&file).is_err());
    }
}
