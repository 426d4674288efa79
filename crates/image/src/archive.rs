//! Image archives: OCI image layouts (directories or tarballs) and
//! docker-archive tarballs (`docker save`, legacy and OCI-based), one or many
//! images each. `save` writes a tarball that is both an OCI layout and a
//! docker-archive, with blobs copied byte for byte from the store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::error::{malformed, Error, IoContext, Result};
use crate::manifest::{self, Kind, NewLayer};
use crate::reference::Reference;
use crate::store::{Image, Store};
use crate::unpack::{clean_path, stream_error};

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// One image brought in by `load`, with the names it arrived under.
#[derive(Debug)]
pub struct Loaded {
    pub image: Image,
    pub names: Vec<Reference>,
}

/// `skiff load`: read an archive (a directory, or a tar file, possibly gzip
/// or zstd compressed) and record every image in it.
pub fn load(store: &Store, input: &Path) -> Result<Vec<Loaded>> {
    let _ingest = store.ingest_guard()?;
    let scratch = tempfile::tempdir_in(store.tmp_dir()).ctx(|| "scratch dir".to_owned())?;
    let (dir, owned, verified) = if input.is_dir() {
        (input.to_path_buf(), false, BTreeSet::new())
    } else {
        let f = File::open(input).ctx(|| format!("open {}", input.display()))?;
        let verified = extract(store, Box::new(f), scratch.path())?;
        (scratch.path().to_path_buf(), true, verified)
    };
    let layout = Layout {
        dir,
        owned,
        verified,
    };
    let mut written = Vec::new();
    let r = if layout.dir.join("index.json").is_file() {
        load_oci(store, &layout, &mut written)
    } else if layout.dir.join("manifest.json").is_file() {
        load_docker(store, &layout, &mut written)
    } else {
        Err(malformed(
            "archive",
            "neither an OCI layout (index.json) nor a docker archive (manifest.json)",
        ))
    };
    if r.is_err() {
        store.discard_unreferenced(&written)?;
    }
    r
}

/// `load` from a stream (`skiff load` without `-i` reads stdin).
pub fn load_stream(store: &Store, r: Box<dyn Read>) -> Result<Vec<Loaded>> {
    let _ingest = store.ingest_guard()?;
    let scratch = tempfile::tempdir_in(store.tmp_dir()).ctx(|| "scratch dir".to_owned())?;
    let path = scratch.path().join("archive.tar");
    let mut f = File::create(&path).ctx(|| "spool stdin".to_owned())?;
    io::copy(&mut { r }, &mut f).ctx(|| "spool stdin".to_owned())?;
    drop(f);
    load(store, &path)
}

struct Layout {
    dir: PathBuf,
    /// We extracted it ourselves, so blobs may be moved instead of copied.
    owned: bool,
    /// Extracted blobs whose digest was checked against their name.
    verified: BTreeSet<PathBuf>,
}

impl Layout {
    /// A path inside the layout; refuses anything (symlinks included) that
    /// resolves outside it.
    fn path(&self, rel: &str) -> Result<PathBuf> {
        let comps = clean_path(rel.as_bytes())?;
        let mut p = self.dir.clone();
        p.extend(comps);
        let real = p
            .canonicalize()
            .ctx(|| format!("archive member {rel} is missing"))?;
        let root = self.dir.canonicalize().ctx(|| "archive root".to_owned())?;
        if !real.starts_with(&root) {
            return Err(Error::HostileLayer(format!(
                "archive member {rel} points outside"
            )));
        }
        Ok(real)
    }

    fn read_doc(&self, store: &Store, rel: &str) -> Result<Vec<u8>> {
        let p = self.path(rel)?;
        let mut buf = Vec::new();
        File::open(&p)
            .ctx(|| format!("open {rel}"))?
            .take(store.limits.max_document + 1)
            .read_to_end(&mut buf)
            .ctx(|| format!("read {rel}"))?;
        if buf.len() as u64 > store.limits.max_document {
            return Err(Error::LimitExceeded(format!("{rel} is too large")));
        }
        Ok(buf)
    }

    fn blob_rel(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }

    /// Bring one file into the blob store, verified.
    fn ingest(
        &self,
        store: &Store,
        rel: &str,
        expected: Option<&Digest>,
        written: &mut Vec<Digest>,
    ) -> Result<(Digest, u64)> {
        if let Some(d) = expected {
            if store.has_blob(d) {
                return Ok((d.clone(), store.blob_size(d).unwrap_or(0)));
            }
        }
        let p = self.path(rel)?;
        if let Some(d) = expected.filter(|_| self.verified.contains(&p)) {
            let size = fs::metadata(&p).ctx(|| format!("stat {rel}"))?.len();
            store.adopt_verified(&p, d)?;
            written.push(d.clone());
            return Ok((d.clone(), size));
        }
        let r = if self.owned && p.starts_with(store.tmp_dir().canonicalize().unwrap_or_default()) {
            store.adopt_file(&p, expected)?
        } else {
            let mut f = File::open(&p).ctx(|| format!("open {rel}"))?;
            store.put_blob_from(&mut f, expected)?
        };
        written.push(r.0.clone());
        Ok(r)
    }
}

fn load_oci(store: &Store, l: &Layout, written: &mut Vec<Digest>) -> Result<Vec<Loaded>> {
    let index = manifest::parse_index(&l.read_doc(store, "index.json")?)?;
    // Docker's OCI-based archives name images in manifest.json.
    let docker_names = docker_repo_tags(store, l).unwrap_or_default();
    let mut out = Vec::new();
    let mut by_manifest: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
    for desc in index.manifests() {
        let mut d = Digest::try_from(desc.digest())?;
        let mut bytes = l.read_doc(store, &Layout::blob_rel(&d))?;
        check(&d, &bytes)?;
        let mut names: Vec<Reference> = Vec::new();
        if let Some(a) = desc.annotations() {
            if let Some(n) = a
                .get(NAME_ANNOTATION)
                .and_then(|n| Reference::parse(n).ok())
            {
                names.push(n);
            } else if let Some(n) = a
                .get(REF_ANNOTATION)
                .filter(|n| n.contains([':', '/']))
                .and_then(|n| Reference::parse(n).ok())
            {
                names.push(n);
            }
        }
        if manifest::kind_of(&bytes, Some(desc.media_type().as_ref()))? == Kind::Index {
            let sub = manifest::select_platform(&manifest::parse_index(&bytes)?)?;
            d = Digest::try_from(sub.digest())?;
            bytes = l.read_doc(store, &Layout::blob_rel(&d))?;
            check(&d, &bytes)?;
        }
        let m = store.parse_manifest(&bytes)?;
        let config = Digest::try_from(m.config().digest())?;
        if names.is_empty() {
            names.extend(docker_names.get(&config).cloned().unwrap_or_default());
        }
        l.ingest(store, &Layout::blob_rel(&config), Some(&config), written)?;
        for layer in m.layers() {
            let ld = Digest::try_from(layer.digest())?;
            l.ingest(store, &Layout::blob_rel(&ld), Some(&ld), written)?;
        }
        store.put_blob(&bytes)?;
        written.push(d.clone());
        by_manifest.entry(d).or_default().extend(names);
    }
    for (d, names) in by_manifest {
        let image = store.commit_image(&d, &names, None)?;
        out.push(Loaded { image, names });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_entries(store: &Store, l: &Layout) -> Result<Vec<DockerEntry>> {
    serde_json::from_slice(&l.read_doc(store, "manifest.json")?)
        .map_err(|e| malformed("docker manifest.json", e))
}

fn docker_repo_tags(store: &Store, l: &Layout) -> Option<BTreeMap<Digest, Vec<Reference>>> {
    if !l.dir.join("manifest.json").is_file() {
        return None;
    }
    let mut m = BTreeMap::new();
    for e in docker_entries(store, l).ok()? {
        let hex = e.config.rsplit('/').next()?.trim_end_matches(".json");
        let d = Digest::parse(&format!("sha256:{hex}")).ok()?;
        let tags = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .collect();
        m.insert(d, tags);
    }
    Some(m)
}

/// Legacy `docker save`: configs and uncompressed layer tars by path.
fn load_docker(store: &Store, l: &Layout, written: &mut Vec<Digest>) -> Result<Vec<Loaded>> {
    let mut out = Vec::new();
    for e in docker_entries(store, l)? {
        let config_bytes = l.read_doc(store, &e.config)?;
        let (config_digest, _) = l.ingest(store, &e.config, None, written)?;
        let (config, _) = crate::store::parse_config(&config_bytes)?;
        if config.rootfs().diff_ids().len() != e.layers.len() {
            return Err(malformed(
                "docker archive",
                "layer count differs from config diff_ids",
            ));
        }
        let mut layers = Vec::new();
        for rel in &e.layers {
            let mut head = [0u8; 4];
            let p = l.path(rel)?;
            let n = File::open(&p)
                .and_then(|mut f| f.read(&mut head))
                .ctx(|| format!("read {rel}"))?;
            let media_type = manifest::sniff_layer_media_type(&head[..n]).to_owned();
            let (digest, size) = l.ingest(store, rel, None, written)?;
            layers.push(NewLayer {
                digest,
                size,
                media_type,
            });
        }
        let manifest = manifest::build_manifest(&config_digest, config_bytes.len() as u64, &layers);
        let md = store.put_blob(&manifest)?;
        written.push(md.clone());
        let names: Vec<Reference> = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<_>>()?;
        let image = store.commit_image(&md, &names, None)?;
        out.push(Loaded { image, names });
    }
    Ok(out)
}

fn check(d: &Digest, bytes: &[u8]) -> Result<()> {
    let actual = Digest::of(bytes);
    if actual != *d {
        return Err(Error::DigestMismatch {
            expected: d.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Extract an archive tarball (plain, gzip or zstd) into `dest`: regular
/// files, directories and symlinks only, with the unpacker's path rules.
fn extract(store: &Store, r: Box<dyn Read>, dest: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut verified = BTreeSet::new();
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = {
        use std::io::BufRead;
        br.fill_buf().ctx(|| "read archive".to_owned())?.to_vec()
    };
    let c = match manifest::sniff_layer_media_type(&head) {
        manifest::OCI_LAYER_GZIP => crate::compression::Compression::Gzip,
        manifest::OCI_LAYER_ZSTD => crate::compression::Compression::Zstd,
        _ => crate::compression::Compression::None,
    };
    let stream = crate::compression::decompress(Box::new(br), c)?;
    let guard = crate::targuard::TarGuard::new(
        stream,
        store.limits.max_blob,
        store.limits.max_entries,
        store.limits.max_tar_extension,
    );
    let mut ar = tar::Archive::new(guard);
    for entry in ar.entries().map_err(stream_error)? {
        let mut entry = entry.map_err(stream_error)?;
        let raw = entry.path_bytes().into_owned();
        let comps = clean_path(&raw)?;
        let Some((name, parents)) = comps.split_last() else {
            continue;
        };
        let mut p = dest.to_path_buf();
        for c in parents {
            p.push(c);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::HostileLayer(format!(
                        "archive path through {}",
                        p.display()
                    )))
                }
                Err(_) => fs::create_dir(&p).ctx(|| format!("mkdir {}", p.display()))?,
            }
        }
        p.push(name);
        crate::fsutil::remove_any(&p)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let f = File::create(&p).ctx(|| format!("create {}", p.display()))?;
                let mut w = crate::digest::Hashing::new(io::BufWriter::with_capacity(1 << 20, f));
                io::copy(&mut entry, &mut w).map_err(stream_error)?;
                let (w, d, _) = w.finish();
                w.into_inner()
                    .map_err(|e| e.into_error())
                    .ctx(|| format!("write {}", p.display()))?;
                // Blobs named by their digest are verified here, once.
                if parents.len() == 2
                    && parents[0] == "blobs"
                    && parents[1] == "sha256"
                    && name.to_str() == Some(d.hex())
                {
                    verified.insert(
                        p.canonicalize()
                            .ctx(|| format!("resolve {}", p.display()))?,
                    );
                }
            }
            tar::EntryType::Directory => {
                fs::create_dir(&p).ctx(|| format!("mkdir {}", p.display()))?
            }
            tar::EntryType::Symlink => {
                let t = entry
                    .link_name_bytes()
                    .ok_or_else(|| malformed("archive", "symlink without target"))?;
                use std::os::unix::ffi::OsStrExt;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&t), &p)
                    .ctx(|| format!("symlink {}", p.display()))?;
            }
            _ => {}
        }
    }
    Ok(verified)
}

/// `skiff save`: write `images` as one tarball that is an OCI image layout
/// and a docker-archive at once. Blobs are the stored bytes, unchanged.
pub fn save(store: &Store, images: &[String], out: &mut dyn Write) -> Result<()> {
    let state = store.snapshot()?;
    let mut entries = Vec::new(); // (manifest digest, manifest size, name)
    let mut resolved: Vec<Image> = Vec::new();
    for input in images {
        let m = store.resolve_in(&state, input)?;
        let img = store.load_image(&state, &m)?;
        let name = Reference::parse(input)
            .ok()
            .filter(|r| r.digest.is_none() && state.tags.get(&r.to_string()) == Some(&m));
        entries.push((img.manifest_digest.clone(), name));
        resolved.push(img);
    }
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let add = |b: &mut tar::Builder<&mut dyn Write>,
               path: &str,
               data: &mut dyn Read,
               size: u64|
     -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, path, data)
            .ctx(|| format!("write {path}"))
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add(&mut b, "oci-layout", &mut &layout[..], layout.len() as u64)?;
    let mut seen = BTreeSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for (img, (md, name)) in resolved.iter().zip(&entries) {
        let mut blobs = vec![img.manifest_digest.clone(), img.id.clone()];
        blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
        for d in blobs {
            if seen.insert(d.clone()) {
                let f = store.open_blob(&d)?;
                let size = f.metadata().ctx(|| format!("stat blob {d}"))?.len();
                add(
                    &mut b,
                    &format!("blobs/sha256/{}", d.hex()),
                    &mut BufReader::new(f),
                    size,
                )?;
            }
        }
        let mut desc = json!({
            "mediaType": img.manifest.media_type().as_ref().map_or(manifest::OCI_MANIFEST.to_owned(), |m| m.to_string()),
            "digest": md.as_str(),
            "size": store.blob_size(md).unwrap_or(0),
        });
        let tags: Vec<String> = match name {
            Some(r) => vec![format!(
                "{}:{}",
                r.familiar_name(),
                r.tag.clone().unwrap_or_default()
            )],
            None => img
                .tags
                .iter()
                .map(|r| {
                    format!(
                        "{}:{}",
                        r.familiar_name(),
                        r.tag.clone().unwrap_or_default()
                    )
                })
                .collect(),
        };
        if let Some(r) = name.as_ref().or(img.tags.first()) {
            desc["annotations"] = json!({
                NAME_ANNOTATION: r.to_string(),
                REF_ANNOTATION: r.tag.clone().unwrap_or_default(),
            });
        }
        index.push(desc);
        docker.push(json!({
            "Config": format!("blobs/sha256/{}", img.id.hex()),
            "RepoTags": tags,
            "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
        }));
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": index}),
    )
    .map_err(|e| malformed("index", e))?;
    add(&mut b, "index.json", &mut &index[..], index.len() as u64)?;
    let docker =
        serde_json::to_vec(&Value::Array(docker)).map_err(|e| malformed("manifest.json", e))?;
    add(
        &mut b,
        "manifest.json",
        &mut &docker[..],
        docker.len() as u64,
    )?;
    b.into_inner()
        .ctx(|| "finish archive".to_owned())?
        .flush()
        .ctx(|| "flush archive".to_owned())?;
    Ok(())
}

/// `skiff import`: a one-layer image from a rootfs tarball (plain, gzip or
/// zstd). The layer is stored uncompressed, so its digest is its diff_id.
pub fn import(store: &Store, r: Box<dyn Read>, tags: &[Reference]) -> Result<Image> {
    let _ingest = store.ingest_guard()?;
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = {
        use std::io::BufRead;
        br.fill_buf().ctx(|| "read rootfs".to_owned())?.to_vec()
    };
    let c = match manifest::sniff_layer_media_type(&head) {
        manifest::OCI_LAYER_GZIP => crate::compression::Compression::Gzip,
        manifest::OCI_LAYER_ZSTD => crate::compression::Compression::Zstd,
        _ => crate::compression::Compression::None,
    };
    let mut stream = crate::compression::decompress(Box::new(br), c)?;
    let (digest, size) = store.put_blob_from(&mut stream, None)?;
    let now = crate::fsutil::rfc3339(crate::fsutil::now_unix());
    let config = manifest::base_config(std::slice::from_ref(&digest), &now, "skiff import");
    let layer = NewLayer {
        digest: digest.clone(),
        size,
        media_type: manifest::OCI_LAYER_TAR.into(),
    };
    let r = store.create_image(&config, &[layer], tags);
    if r.is_err() {
        store.discard_unreferenced(&[digest])?;
    }
    r
}
