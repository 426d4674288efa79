//! The on-disk store: content-addressed blobs, the image/tag index, layer disks.
//!
//! Layout under the root:
//! ```text
//! lock                      flock: held exclusively while state.json changes
//! gc.lock                   flock: shared by ingesting operations, exclusive by GC
//! state.json                images (by manifest digest), tags, container users
//! blobs/sha256/<hex>        manifests, configs, layer blobs exactly as received
//! ingest/                   blobs being written (verified, then renamed into blobs/)
//! layers/<diff_id hex>.erofs  read-only layer disks, one per uncompressed layer
//! tmp/                      scratch trees for conversions (removed on failure and by GC)
//! ```
//! Crash consistency: a blob or layer disk appears only by rename after fsync
//! of its data (writeback is started while it is written, so that fsync is
//! short); the renames' directories are synced once, when `state.json` is
//! replaced atomically, before it names anything. A crash leaves at worst
//! unreferenced files (or a lost rename: the file is fetched or converted
//! again), which GC removes.

pub mod layerdisk;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hashing};
use crate::error::{malformed, Error, IoContext, Result};
use crate::fsutil::{self, create_private_dir, write_atomic};
use crate::lock::{FileLock, LockKind};
use crate::reference::Reference;

pub use crate::compression::Compression;
pub use crate::limits::Limits;

/// What `state.json` records about one image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    pub config: Digest,
    /// Unix seconds when the image entered this store.
    pub added: u64,
    /// `name@digest` under which a registry served this manifest.
    #[serde(default)]
    pub repo_digests: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Manifest digest -> record.
    #[serde(default)]
    pub images: BTreeMap<Digest, ImageRecord>,
    /// Full tagged reference (`docker.io/library/busybox:latest`) -> manifest digest.
    #[serde(default)]
    pub tags: BTreeMap<String, Digest>,
    /// Container ID -> manifest digest of the image it runs on.
    #[serde(default)]
    pub users: BTreeMap<String, Digest>,
}

/// One layer of an image, bottom first.
#[derive(Clone, Debug, Serialize)]
pub struct Layer {
    /// Digest of the blob as stored (possibly compressed).
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Digest of the uncompressed tar (names the layer disk).
    pub diff_id: Digest,
}

/// A resolved image: what `skiff run` needs to start a container.
#[derive(Clone, Debug)]
pub struct Image {
    /// Image ID: the digest of the config blob.
    pub id: Digest,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    /// The raw config, for fields oci-spec does not model.
    pub config_json: serde_json::Value,
    pub layers: Vec<Layer>,
    pub tags: Vec<Reference>,
    pub record: ImageRecord,
}

pub struct Store {
    root: PathBuf,
    pub limits: Limits,
}

/// The state, loaded under the exclusive store lock; `save` commits it.
pub struct StateGuard<'s> {
    store: &'s Store,
    pub state: State,
    _lock: FileLock,
}

impl StateGuard<'_> {
    pub fn save(&self) -> Result<()> {
        // Blobs and layer disks were fsynced before their rename; their
        // directory entries become durable here, before any state names them.
        fsutil::fsync_dir(&self.store.root.join("blobs/sha256"))?;
        fsutil::fsync_dir(&self.store.root.join("layers"))?;
        let bytes = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| Error::Store(self.store.root.clone(), e.to_string()))?;
        write_atomic(&self.store.root.join("state.json"), &bytes)
    }
}

impl Store {
    /// `/var/lib/skiff` for root, `$XDG_DATA_HOME/skiff` (or
    /// `~/.local/share/skiff`) otherwise; `SKIFF_ROOT` overrides both.
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("SKIFF_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/skiff");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("skiff");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".local/share/skiff")
    }

    /// Open (creating if needed) the store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        // The root holds the containers too (their specs carry their environment).
        create_private_dir(&root)?;
        for d in ["blobs", "blobs/sha256", "ingest", "layers", "tmp"] {
            create_private_dir(&root.join(d))?;
        }
        Ok(Self {
            root,
            limits: Limits::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Lock and load the state for a change.
    pub fn lock_state(&self) -> Result<StateGuard<'_>> {
        let lock = FileLock::acquire(&self.root.join("lock"), LockKind::Exclusive)?;
        let state = self.read_state()?;
        Ok(StateGuard {
            store: self,
            state,
            _lock: lock,
        })
    }

    /// A consistent snapshot for reading (taken under a shared lock).
    pub fn snapshot(&self) -> Result<State> {
        let _lock = FileLock::acquire(&self.root.join("lock"), LockKind::Shared)?;
        self.read_state()
    }

    fn read_state(&self) -> Result<State> {
        let path = self.root.join("state.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Store(self.root.clone(), format!("state.json: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).ctx(|| format!("read {}", path.display())),
        }
    }

    /// Held (shared) by every operation that writes blobs it has not yet
    /// recorded in the state, so GC cannot delete them under its feet.
    pub fn ingest_guard(&self) -> Result<FileLock> {
        FileLock::acquire(&self.root.join("gc.lock"), LockKind::Shared)
    }

    // ---- blobs -------------------------------------------------------------

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d)).ok().map(|m| m.len())
    }

    /// Read a small blob (manifest, config) fully, capped.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(d);
        let f = fs::File::open(&path).ctx(|| format!("blob {d} is not in the store"))?;
        let mut buf = Vec::new();
        f.take(self.limits.max_document + 1)
            .read_to_end(&mut buf)
            .ctx(|| format!("read blob {d}"))?;
        if buf.len() as u64 > self.limits.max_document {
            return Err(Error::LimitExceeded(format!(
                "document {d} larger than {} bytes",
                self.limits.max_document
            )));
        }
        Ok(buf)
    }

    pub fn open_blob(&self, d: &Digest) -> Result<fs::File> {
        fs::File::open(self.blob_path(d)).ctx(|| format!("blob {d} is not in the store"))
    }

    /// Start writing a blob; `Ingest::commit` verifies and publishes it.
    pub fn ingest(&self) -> Result<Ingest<'_>> {
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("ingest"))
            .ctx(|| "create ingest file".to_owned())?;
        Ok(Ingest {
            store: self,
            out: Hashing::new(BufWriter::with_capacity(1 << 20, tmp)),
            limit: self.limits.max_blob,
            kicked: 0,
        })
    }

    /// Store small bytes as a blob.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if !self.has_blob(&d) {
            let mut w = self.ingest()?;
            w.write_all(bytes).ctx(|| "write blob".to_owned())?;
            w.commit(Some(&d))?;
        }
        Ok(d)
    }

    /// Copy a reader into the store, verifying it against `expected`.
    pub fn put_blob_from(
        &self,
        r: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        if let Some(d) = expected.filter(|d| self.has_blob(d)) {
            let size = self.blob_size(d).unwrap_or(0);
            std::io::copy(r, &mut std::io::sink()).ctx(|| "skip blob".to_owned())?;
            return Ok((d.clone(), size));
        }
        let mut w = self.ingest()?;
        std::io::copy(r, &mut w).ctx(|| "copy blob into store".to_owned())?;
        w.commit(expected)
    }

    // ---- images --------------------------------------------------------------

    /// Parse a manifest blob (an image manifest, not an index).
    pub fn parse_manifest(&self, bytes: &[u8]) -> Result<ImageManifest> {
        let m: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| malformed("image manifest", e))?;
        if m.layers().len() > self.limits.max_layers {
            return Err(Error::LimitExceeded(format!(
                "{} layers (max {})",
                m.layers().len(),
                self.limits.max_layers
            )));
        }
        Ok(m)
    }

    /// Load everything about the image with this manifest digest.
    pub fn load_image(&self, state: &State, manifest_digest: &Digest) -> Result<Image> {
        let record = state
            .images
            .get(manifest_digest)
            .ok_or_else(|| Error::ImageNotFound(manifest_digest.to_string()))?
            .clone();
        let manifest = self.parse_manifest(&self.read_blob(manifest_digest)?)?;
        let config_bytes = self.read_blob(&record.config)?;
        let (config, config_json) = parse_config(&config_bytes)?;
        let layers = layers_of(&manifest, &config)?;
        let mut tags: Vec<Reference> = state
            .tags
            .iter()
            .filter(|(_, d)| *d == manifest_digest)
            .filter_map(|(t, _)| Reference::parse(t).ok())
            .collect();
        tags.sort();
        Ok(Image {
            id: record.config.clone(),
            manifest_digest: manifest_digest.clone(),
            manifest,
            config,
            config_json,
            layers,
            tags,
            record,
        })
    }

    /// Resolve what a user typed: a name[:tag], name@digest, an image ID or a
    /// unique ID prefix (as Docker does, names win over ID prefixes).
    pub fn resolve_in(&self, state: &State, input: &str) -> Result<Digest> {
        let not_found = || Error::ImageNotFound(input.to_owned());
        if let Ok(r) = Reference::parse(input) {
            if let Some(d) = &r.digest {
                if state.images.contains_key(d) {
                    return Ok(d.clone());
                }
                if let Some((m, _)) = state
                    .images
                    .iter()
                    .find(|(_, rec)| rec.repo_digests.contains(&format!("{}@{d}", r.name())))
                {
                    return Ok(m.clone());
                }
            } else if let Some(d) = state.tags.get(&r.to_string()) {
                return Ok(d.clone());
            }
        }
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let mut hits: BTreeSet<&Digest> = BTreeSet::new();
            for (m, rec) in &state.images {
                if rec.config.hex().starts_with(&hex) || (hex.len() == 64 && m.hex() == hex) {
                    hits.insert(m);
                }
            }
            let ids: BTreeSet<&Digest> = hits.iter().map(|m| &state.images[*m].config).collect();
            match (hits.len(), ids.len()) {
                (0, _) => {}
                (1, _) => return Ok((*hits.iter().next().ok_or_else(not_found)?).clone()),
                // Several manifests of one config: prefer a tagged one.
                (_, 1) => {
                    let tagged = hits.iter().find(|m| state.tags.values().any(|t| t == **m));
                    return Ok((*tagged.or(hits.iter().next()).ok_or_else(not_found)?).clone());
                }
                _ => {
                    return Err(Error::InvalidReference(
                        input.to_owned(),
                        "ambiguous image ID prefix",
                    ))
                }
            }
        }
        Err(not_found())
    }

    /// Resolve and load in one step (no pulling).
    pub fn image(&self, input: &str) -> Result<Image> {
        let state = self.snapshot()?;
        let m = self.resolve_in(&state, input)?;
        self.load_image(&state, &m)
    }

    /// All images, newest first.
    pub fn images(&self) -> Result<Vec<Image>> {
        let state = self.snapshot()?;
        let mut out = Vec::new();
        for m in state.images.keys() {
            match self.load_image(&state, m) {
                Ok(i) => out.push(i),
                Err(e) => tracing::warn!("skipping unreadable image {m}: {e}"),
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(created_unix(i)));
        Ok(out)
    }

    /// Record an image whose manifest, config and layer blobs are all stored,
    /// converting its layers to disks first; then point `tags` at it.
    pub fn commit_image(
        &self,
        manifest_digest: &Digest,
        tags: &[Reference],
        repo_digest: Option<String>,
    ) -> Result<Image> {
        let manifest = self.parse_manifest(&self.read_blob(manifest_digest)?)?;
        let config_digest = Digest::try_from(manifest.config().digest())?;
        let (config, _) = parse_config(&self.read_blob(&config_digest)?)?;
        let layers = layers_of(&manifest, &config)?;
        for l in &layers {
            if !self.has_blob(&l.digest) {
                return Err(Error::Store(
                    self.root.clone(),
                    format!("layer blob {} missing", l.digest),
                ));
            }
        }
        self.ensure_disks(&layers)?;
        let mut g = self.lock_state()?;
        let rec = g
            .state
            .images
            .entry(manifest_digest.clone())
            .or_insert_with(|| ImageRecord {
                config: config_digest.clone(),
                added: fsutil::now_unix(),
                repo_digests: BTreeSet::new(),
            });
        if let Some(rd) = repo_digest {
            rec.repo_digests.insert(rd);
        }
        for t in tags {
            g.state.tags.insert(t.to_string(), manifest_digest.clone());
        }
        g.save()?;
        self.load_image(&g.state, manifest_digest)
    }

    /// Build and record a new image from a config document and stored layer
    /// blobs (import, commit, the busybox starter, legacy docker archives).
    pub fn create_image(
        &self,
        config: &serde_json::Value,
        layers: &[crate::manifest::NewLayer],
        tags: &[Reference],
    ) -> Result<Image> {
        let config_bytes = serde_json::to_vec(config).map_err(|e| malformed("image config", e))?;
        let config_digest = self.put_blob(&config_bytes)?;
        let manifest =
            crate::manifest::build_manifest(&config_digest, config_bytes.len() as u64, layers);
        let manifest_digest = self.put_blob(&manifest)?;
        let r = self.commit_image(&manifest_digest, tags, None);
        if r.is_err() {
            let mut written = vec![config_digest, manifest_digest];
            written.extend(layers.iter().map(|l| l.digest.clone()));
            self.discard_unreferenced(&written)?;
        }
        r
    }

    /// After a failed import: delete blobs this operation wrote that no
    /// recorded image uses (so a refused layer leaves nothing behind).
    pub fn discard_unreferenced(&self, written: &[Digest]) -> Result<()> {
        let g = self.lock_state()?;
        let mut live = BTreeSet::new();
        for m in g.state.images.keys() {
            live.insert(m.clone());
            if let Ok(i) = self.load_image(&g.state, m) {
                live.insert(i.id.clone());
                live.extend(i.layers.iter().map(|l| l.digest.clone()));
            } else {
                return Ok(());
            }
        }
        for d in written.iter().filter(|d| !live.contains(*d)) {
            fsutil::remove_any(&self.blob_path(d))?;
        }
        Ok(())
    }

    /// Move a file we own (under the store's tmp dir) into the blob store
    /// after verifying its digest: no copy.
    pub fn adopt_file(&self, path: &Path, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let mut f = fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
        let (d, n) = layerdisk::hash_stream(&mut f)?;
        if let Some(e) = expected {
            if *e != d {
                return Err(Error::DigestMismatch {
                    expected: e.to_string(),
                    actual: d.to_string(),
                });
            }
        }
        self.adopt_verified(path, &d)?;
        Ok((d, n))
    }

    /// Like `adopt_file` for a file whose digest the caller computed while
    /// writing it (no second read).
    pub fn adopt_verified(&self, path: &Path, d: &Digest) -> Result<()> {
        if !self.has_blob(d) {
            let f = fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
            f.sync_all().ctx(|| format!("fsync {}", path.display()))?;
            // As every blob: a committed container's layer may hold its secrets.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .ctx(|| format!("chmod {}", path.display()))?;
            fs::rename(path, self.blob_path(d)).ctx(|| format!("adopt {}", path.display()))?;
        }
        Ok(())
    }

    /// Convert missing layer disks, one thread per core.
    fn ensure_disks(&self, layers: &[Layer]) -> Result<()> {
        let mut todo: Vec<&Layer> = layers
            .iter()
            .filter(|l| !layerdisk::disk_path(self, l).is_file())
            .collect();
        // Workers pop from the end: largest layer first, so the longest
        // conversion never starts last on its own.
        todo.sort_by_key(|l| l.size);
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(todo.len());
        if workers <= 1 {
            return todo
                .iter()
                .try_for_each(|l| layerdisk::ensure(self, l).map(|_| ()));
        }
        let queue = std::sync::Mutex::new(todo);
        let first_error = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while let Some(l) = queue.lock().ok().and_then(|mut q| q.pop()) {
                        if let Err(e) = layerdisk::ensure(self, l) {
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert(e);
                            }
                            break;
                        }
                    }
                });
            }
        });
        match first_error.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Point `target` (a name, tag added if missing) at an existing image.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference> {
        let target = Reference::parse(target)?;
        if target.digest.is_some() {
            return Err(Error::InvalidReference(
                target.to_string(),
                "cannot tag with a digest",
            ));
        }
        let mut g = self.lock_state()?;
        let m = self.resolve_in(&g.state, source)?;
        g.state.tags.insert(target.to_string(), m);
        g.save()?;
        Ok(target)
    }

    /// `rmi`: untag a name, or delete an image by ID; returns lines to print
    /// (`Untagged: ...`, `Deleted: ...`). GC runs afterwards if possible.
    pub fn remove(&self, input: &str, force: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        {
            let mut g = self.lock_state()?;
            let m = self.resolve_in(&g.state, input)?;
            let config = g.state.images[&m].config.clone();
            // Every manifest of the same image ID goes together.
            let manifests: Vec<Digest> = g
                .state
                .images
                .iter()
                .filter(|(_, r)| r.config == config)
                .map(|(d, _)| d.clone())
                .collect();
            let users: Vec<&String> = g
                .state
                .users
                .iter()
                .filter(|(_, d)| manifests.contains(d))
                .map(|(c, _)| c)
                .collect();
            let tags: Vec<String> = g
                .state
                .tags
                .iter()
                .filter(|(_, d)| manifests.contains(d))
                .map(|(t, _)| t.clone())
                .collect();
            let by_name = Reference::parse(input)
                .ok()
                .filter(|r| r.digest.is_none())
                .map(|r| r.to_string())
                .filter(|t| tags.contains(t));
            let remaining_tags = if let Some(t) = &by_name {
                g.state.tags.remove(t);
                out.push(format!("Untagged: {}", display_tag(t)));
                tags.len() - 1
            } else {
                if tags.len() > 1 && !force {
                    return Err(Error::ImageMultiplyTagged(config.short().to_owned()));
                }
                if !users.is_empty() && !force {
                    return Err(Error::ImageInUse {
                        image: config.short().to_owned(),
                        containers: users
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                for t in &tags {
                    g.state.tags.remove(t);
                    out.push(format!("Untagged: {}", display_tag(t)));
                }
                0
            };
            if remaining_tags == 0 {
                if !users.is_empty() {
                    // Even with -f, as Docker does: keep the (now dangling)
                    // image while containers run on its layer disks.
                    g.save()?;
                    return Ok(out);
                }
                for d in &manifests {
                    g.state.images.remove(d);
                }
                out.push(format!("Deleted: {config}"));
            }
            g.save()?;
        }
        if let Some(_gc) = FileLock::try_acquire(&self.root.join("gc.lock"), LockKind::Exclusive)? {
            self.gc_locked()?;
        }
        Ok(out)
    }

    /// `image prune`: delete dangling images (all unused ones with `all`),
    /// then collect garbage. Returns the deleted image IDs and bytes freed.
    pub fn prune(&self, all: bool) -> Result<(Vec<Digest>, u64)> {
        let _gc = FileLock::acquire(&self.root.join("gc.lock"), LockKind::Exclusive)?;
        let mut deleted = Vec::new();
        {
            let mut g = self.lock_state()?;
            let tagged: BTreeSet<Digest> = g.state.tags.values().cloned().collect();
            let used: BTreeSet<Digest> = g.state.users.values().cloned().collect();
            let victims: Vec<Digest> = g
                .state
                .images
                .keys()
                .filter(|m| !used.contains(*m) && (all || !tagged.contains(*m)))
                .cloned()
                .collect();
            for m in &victims {
                if let Some(r) = g.state.images.remove(m) {
                    deleted.push(r.config);
                }
            }
            g.state.tags.retain(|_, d| !victims.contains(d));
            g.save()?;
        }
        let freed = self.gc_locked()?;
        deleted.sort();
        deleted.dedup();
        Ok((deleted, freed))
    }

    /// Collect garbage now (waits for running pulls/loads to finish).
    pub fn gc(&self) -> Result<u64> {
        let _gc = FileLock::acquire(&self.root.join("gc.lock"), LockKind::Exclusive)?;
        self.gc_locked()
    }

    /// Delete every blob and layer disk no recorded image reaches, and all
    /// scratch files. Caller holds gc.lock exclusively.
    fn gc_locked(&self) -> Result<u64> {
        let g = self.lock_state()?;
        let mut live_blobs: BTreeSet<String> = BTreeSet::new();
        let mut live_disks: BTreeSet<String> = BTreeSet::new();
        for (m, rec) in &g.state.images {
            live_blobs.insert(m.hex().to_owned());
            live_blobs.insert(rec.config.hex().to_owned());
            let img = match self.load_image(&g.state, m) {
                Ok(i) => i,
                Err(e) => {
                    // Never delete what we could not account for.
                    return Err(Error::Store(
                        self.root.clone(),
                        format!("gc: image {m}: {e}"),
                    ));
                }
            };
            for l in &img.layers {
                live_blobs.insert(l.digest.hex().to_owned());
                live_disks.insert(l.diff_id.hex().to_owned());
            }
        }
        let mut freed = 0;
        let mut sweep = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Result<()> {
            let rd = match fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e).ctx(|| format!("list {}", dir.display())),
            };
            for e in rd {
                let e = e.ctx(|| format!("list {}", dir.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep(&name) {
                    freed += fsutil::disk_bytes(&e.path());
                    tracing::debug!("gc: removing {}", e.path().display());
                    fsutil::remove_any(&e.path())?;
                }
            }
            Ok(())
        };
        sweep(&self.root.join("blobs/sha256"), &|n| live_blobs.contains(n))?;
        sweep(&self.root.join("layers"), &|n| {
            n.strip_suffix(layerdisk::SUFFIX)
                .is_some_and(|h| live_disks.contains(h))
                || n.ends_with(".lock") && live_disks.contains(n.trim_end_matches(".lock"))
        })?;
        sweep(&self.root.join("ingest"), &|_| false)?;
        sweep(&self.root.join("tmp"), &|_| false)?;
        Ok(freed)
    }

    // ---- containers using images ---------------------------------------------

    /// Record that `container_id` runs on the image `input` resolves to (so
    /// `rmi` refuses to delete it) and return the image.
    pub fn use_image(&self, container_id: &str, input: &str) -> Result<Image> {
        let mut g = self.lock_state()?;
        let m = self.resolve_in(&g.state, input)?;
        g.state.users.insert(container_id.to_owned(), m.clone());
        g.save()?;
        self.load_image(&g.state, &m)
    }

    /// Forget that `container_id` uses an image (idempotent).
    pub fn release_image(&self, container_id: &str) -> Result<()> {
        let mut g = self.lock_state()?;
        if g.state.users.remove(container_id).is_some() {
            g.save()?;
        }
        Ok(())
    }

    /// Read-only layer disks of an image, bottom layer first, converting any
    /// that are missing (e.g. deleted by hand).
    pub fn layer_disks(&self, image: &Image) -> Result<Vec<PathBuf>> {
        image
            .layers
            .iter()
            .map(|l| layerdisk::ensure(self, l))
            .collect()
    }
}

/// Parse a config blob into oci-spec's type plus the raw JSON.
pub fn parse_config(bytes: &[u8]) -> Result<(ImageConfiguration, serde_json::Value)> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| malformed("image config", e))?;
    let c: ImageConfiguration =
        serde_json::from_value(v.clone()).map_err(|e| malformed("image config", e))?;
    Ok((c, v))
}

/// Pair manifest layers with config diff_ids.
pub fn layers_of(m: &ImageManifest, c: &ImageConfiguration) -> Result<Vec<Layer>> {
    let diff_ids = c.rootfs().diff_ids();
    if diff_ids.len() != m.layers().len() {
        return Err(malformed(
            "image",
            format!(
                "{} layers but {} diff_ids",
                m.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    m.layers()
        .iter()
        .zip(diff_ids)
        .map(|(d, diff)| {
            let media_type = d.media_type().to_string();
            Compression::from_media_type(&media_type)?;
            Ok(Layer {
                digest: Digest::try_from(d.digest())?,
                media_type,
                size: d.size(),
                diff_id: Digest::parse(diff)?,
            })
        })
        .collect()
}

/// Creation time of an image (config `created`), 0 if absent.
pub fn created_unix(i: &Image) -> u64 {
    i.config
        .created()
        .as_deref()
        .and_then(fsutil::parse_rfc3339)
        .unwrap_or(0)
}

fn display_tag(full: &str) -> String {
    match Reference::parse(full) {
        Ok(r) => format!("{}:{}", r.familiar_name(), r.tag.unwrap_or_default()),
        Err(_) => full.to_owned(),
    }
}

/// A blob being written; verified against its digest on `commit`.
pub struct Ingest<'s> {
    store: &'s Store,
    out: Hashing<BufWriter<tempfile::NamedTempFile>>,
    limit: u64,
    kicked: u64,
}

impl Write for Ingest<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.count() + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(format!(
                "blob larger than the {} byte limit",
                self.limit
            )));
        }
        let n = self.out.write(buf)?;
        let count = self.out.count();
        if count - self.kicked >= fsutil::WRITEBACK_STEP {
            // Up to 1 MiB may still sit in the BufWriter: start a little back.
            let from = self.kicked.saturating_sub(1 << 20);
            let f = self.out.inner_mut().get_ref().as_file();
            fsutil::start_writeback(f, from, count - from);
            self.kicked = count;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Ingest<'_> {
    /// Verify and publish; a mismatch deletes the temp file.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (w, digest, size) = self.out.finish();
        if let Some(e) = expected {
            if *e != digest {
                return Err(Error::DigestMismatch {
                    expected: e.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let tmp = w
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| "flush blob".to_owned())?;
        tmp.as_file().sync_all().ctx(|| "fsync blob".to_owned())?;
        let dest = self.store.blob_path(&digest);
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .ctx(|| format!("publish blob {digest}"))?;
        Ok((digest, size))
    }
}
