//! Layer disks: each uncompressed layer (named by its diff_id) becomes one
//! read-only erofs image that the microVM attaches as a virtio-blk disk. Every
//! image containing the layer shares the file, on disk and in the page cache.
//!
//! Why erofs (`mkfs.erofs` 1.5, uncompressed) and not `mkfs.ext4 -d`: erofs is
//! built for read-only images, needs no size guess up front (ext4 needs the
//! image sized before `-d` fills it), and has no journal or free-space
//! overhead. Measured here on the 100 MB base layer of the benchmark image
//! (`skiff-bench --bin image`): mkfs.erofs 0.24-0.46 s vs mkfs.ext4 -d (no
//! journal) 0.66-0.80 s, so erofs builds ~2x faster, at the same size (104.9
//! vs 105.3 MB). Uncompressed, so the guest kernel needs only EROFS_FS (not
//! EROFS_FS_ZIP) and reads cost no CPU. mkfs.erofs 1.5 reads a directory,
//! not a tar, so the layer is first
//! unpacked into a scratch directory (which also translates whiteouts).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::digest::Hashing;
use crate::error::{Error, IoContext, Result};
use crate::lock::{FileLock, LockKind};
use crate::store::{Compression, Layer, Store};
use crate::unpack::{self, stream_error, UnpackStats};

pub const SUFFIX: &str = ".erofs";

pub fn disk_path(store: &Store, layer: &Layer) -> PathBuf {
    store
        .root()
        .join("layers")
        .join(format!("{}{SUFFIX}", layer.diff_id.hex()))
}

/// A decompressing reader for a layer blob.
pub fn decompress<'a>(r: Box<dyn Read + 'a>, c: Compression) -> Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => r,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 20, r),
        )),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(r).ctx(|| "start zstd decoder".to_owned())?)
        }
    })
}

/// The layer disk for `layer`, converting it now if nobody has yet.
pub fn ensure(store: &Store, layer: &Layer) -> Result<PathBuf> {
    ensure_from(store, layer, None)
}

/// `ensure`, converting from `stream` (the layer blob as it downloads)
/// instead of the stored blob. The disk is trusted only because the
/// uncompressed content matches the diff_id; a short or failed stream just
/// fails (the caller then converts from the stored blob).
pub fn ensure_from(
    store: &Store,
    layer: &Layer,
    stream: Option<Box<dyn Read + '_>>,
) -> Result<PathBuf> {
    let out = disk_path(store, layer);
    if out.is_file() {
        return Ok(out);
    }
    // Keep GC from sweeping our scratch dir while we convert.
    let _ingest = store.ingest_guard()?;
    let lock_path = store
        .root()
        .join("layers")
        .join(format!("{}.lock", layer.diff_id.hex()));
    let _lock = if stream.is_some() {
        // Never wait while a downloader waits on us through the pipe: another
        // process may hold this lock while waiting for our blob lock.
        FileLock::try_acquire(&lock_path, LockKind::Exclusive)?
            .ok_or_else(|| Error::Store(lock_path.clone(), "layer conversion busy".into()))?
    } else {
        FileLock::acquire(&lock_path, LockKind::Exclusive)?
    };
    if out.is_file() {
        return Ok(out);
    }
    let blob: Box<dyn Read + '_> = match stream {
        Some(s) => s,
        None => Box::new(store.open_blob(&layer.digest)?),
    };
    let c = Compression::from_media_type(&layer.media_type)?;
    let t = std::time::Instant::now();
    let r = convert(store, blob, c, &layer.diff_id, &out);
    // Losing the race on a removed lock file only means converting twice; the
    // rename makes the result the same.
    let _ = fs::remove_file(&lock_path);
    let stats = r?;
    tracing::info!(
        "converted layer {} ({} entries, {} bytes) in {:?}",
        layer.diff_id.short(),
        stats.entries,
        stats.bytes,
        t.elapsed()
    );
    Ok(out)
}

/// Unpack a (compressed) layer stream, check its diff_id, and build the disk at
/// `out`. Nothing is left behind on failure.
pub fn convert(
    store: &Store,
    blob: Box<dyn Read + '_>,
    c: Compression,
    diff_id: &crate::Digest,
    out: &Path,
) -> Result<UnpackStats> {
    let scratch = tempfile::tempdir_in(store.tmp_dir()).ctx(|| "scratch dir".to_owned())?;
    let tree = scratch.path().join("root");
    fs::create_dir(&tree).ctx(|| format!("mkdir {}", tree.display()))?;
    let hashing = Hashing::new(decompress(blob, c)?);
    let (stats, hashing) = unpack::unpack(hashing, &tree, &store.limits)?;
    let (_, actual, _) = hashing.finish();
    if actual != *diff_id {
        return Err(Error::DigestMismatch {
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    let disk = scratch.path().join("disk");
    // Chunked (hole-keeping) files only when holes are worth it.
    mkfs_erofs(&tree, &disk, stats.hole_bytes >= 16 << 20)?;
    fs::rename(&disk, out).ctx(|| format!("publish {}", out.display()))?;
    crate::fsutil::fsync_dir(out.parent().unwrap_or(Path::new(".")))?;
    Ok(stats)
}

/// Read a whole stream just to hash it (verifying a diff_id without unpacking).
pub fn hash_stream(r: &mut dyn Read) -> Result<(crate::Digest, u64)> {
    let mut h = Hashing::new(r);
    std::io::copy(&mut h, &mut std::io::sink()).map_err(stream_error)?;
    let (_, d, n) = h.finish();
    Ok((d, n))
}

/// Build the erofs image. `sparse`: use chunk-based files so holes stay
/// holes (measured: a 100 MB sparse file takes 112 KB instead of 100 MB), only
/// when needed because chunked mode makes mkfs.erofs 1.5 ~3x slower.
pub fn mkfs_erofs(tree: &Path, out: &Path, sparse: bool) -> Result<()> {
    let mut cmd = Command::new("mkfs.erofs");
    if sparse {
        cmd.arg("--chunksize=4096");
    }
    let o = cmd
        .arg("--quiet")
        .arg("-x1")
        .arg(out)
        .arg(tree)
        .output()
        .map_err(|e| Error::Tool {
            tool: "mkfs.erofs",
            detail: format!("{e} (install erofs-utils)"),
        })?;
    if !o.status.success() {
        return Err(Error::Tool {
            tool: "mkfs.erofs",
            detail: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        });
    }
    fs::File::open(out)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("fsync {}", out.display()))
}

/// `mkfs.ext4 -d`, for comparison in the benchmark.
pub fn mkfs_ext4(tree: &Path, out: &Path, size_bytes: u64) -> Result<()> {
    let f = fs::File::create(out).ctx(|| format!("create {}", out.display()))?;
    f.set_len(size_bytes)
        .ctx(|| format!("size {}", out.display()))?;
    let o = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=0,root_owner=0:0",
            "-d",
        ])
        .arg(tree)
        .arg(out)
        .output()
        .map_err(|e| Error::Tool {
            tool: "mkfs.ext4",
            detail: e.to_string(),
        })?;
    if !o.status.success() {
        return Err(Error::Tool {
            tool: "mkfs.ext4",
            detail: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
