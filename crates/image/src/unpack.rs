//! Unpack one layer tar into a directory that overlayfs can use as a lower
//! layer: OCI whiteouts become overlayfs ones (`.wh.NAME` -> a 0/0 character
//! device NAME; `.wh..wh..opq` -> `trusted.overlay.opaque=y` on the directory).
//! Owners, modes, times, xattrs, hardlinks, symlinks, device nodes and holes in
//! sparse files are kept. Needs root (mknod, chown, trusted.* xattrs).
//!
//! The tar is hostile: absolute paths, `..`, paths through symlinks, links to
//! outside the tree, enormous sizes and headers are refused (see `TarGuard`).
//! The caller unpacks into a fresh directory and deletes it on error.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::limits::Limits;
use crate::targuard::{violation, TarGuard};

const MAX_PATH: usize = 4096;
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What the unpacker saw (for logs and benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
    /// Bytes of zeros left as holes in sparse files.
    pub hole_bytes: u64,
}

fn hostile(msg: impl Into<String>) -> Error {
    Error::HostileLayer(msg.into())
}

/// Map an I/O error from reading the stream to a clear error.
pub(crate) fn stream_error(e: io::Error) -> Error {
    stream_error_as(e, Error::HostileLayer, "read layer tar")
}

/// Map an I/O error from reading a tar stream: a guard violation becomes `hostile`
/// (or a limit), anything else an I/O error with `context`.
pub(crate) fn stream_error_as(e: io::Error, hostile: fn(String) -> Error, context: &str) -> Error {
    match violation(&e) {
        Some(v) if v.hostile => hostile(v.message.clone()),
        Some(v) => Error::LimitExceeded(v.message.clone()),
        None => Error::Io {
            context: context.into(),
            source: e,
        },
    }
}

/// Split a tar path into safe components; refuse absolute paths and `..`.
pub fn clean_path(raw: &[u8]) -> Result<Vec<&OsStr>> {
    if raw.len() > MAX_PATH {
        return Err(hostile(format!("path of {} bytes", raw.len())));
    }
    if raw.contains(&0) {
        return Err(hostile("path contains NUL"));
    }
    if raw.first() == Some(&b'/') {
        return Err(hostile(format!(
            "absolute path {:?}",
            String::from_utf8_lossy(raw)
        )));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(hostile(format!(
                    "path with '..': {:?}",
                    String::from_utf8_lossy(raw)
                )))
            }
            c if c.len() > 255 => return Err(hostile("path component longer than 255 bytes")),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Unpack an uncompressed tar stream into `dest` (an empty directory).
pub fn unpack<R: Read>(stream: R, dest: &Path, limits: &Limits) -> Result<(UnpackStats, R)> {
    let guard = TarGuard::new(
        stream,
        limits.max_layer_uncompressed,
        limits.max_entries,
        limits.max_tar_extension,
    );
    let mut ar = tar::Archive::new(guard);
    let mut stats = UnpackStats::default();
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    {
        let entries = ar.entries().map_err(stream_error)?;
        for entry in entries {
            let mut entry = entry.map_err(stream_error)?;
            stats.entries += 1;
            stats.hole_bytes += unpack_entry(&mut entry, dest, &mut dir_times)?;
        }
    }
    // Drain trailing padding: it belongs to the diff_id.
    let mut guard = ar.into_inner();
    io::copy(&mut guard, &mut io::sink()).map_err(stream_error)?;
    stats.bytes = guard.total();
    // Directory times last: creating entries inside changed them.
    for (p, mtime) in dir_times.iter().rev() {
        set_mtime(p, *mtime)?;
    }
    Ok((stats, guard.into_inner()))
}

/// Returns the bytes left as holes.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    dir_times: &mut Vec<(PathBuf, i64)>,
) -> Result<u64> {
    let raw = entry.path_bytes().into_owned();
    let comps = clean_path(&raw)?;
    let kind = entry.header().entry_type();
    let Some((name, parents)) = comps.split_last() else {
        // The root itself ("./"): only its metadata matters.
        if kind.is_dir() {
            apply_meta(entry, dest, false)?;
        }
        return Ok(0);
    };
    let parent = ensure_parents(dest, parents)?;
    let name_b = name.as_bytes();
    if name_b == b".wh..wh..opq" {
        set_xattr(&parent, OPAQUE_XATTR, b"y")?;
        return Ok(0);
    }
    if let Some(victim) = name_b.strip_prefix(b".wh.") {
        if victim.is_empty() || victim == b"." || victim == b".." || victim.contains(&b'/') {
            return Err(hostile("bad whiteout name"));
        }
        let target = parent.join(OsStr::from_bytes(victim));
        remove_existing(&target)?;
        mknod(&target, libc::S_IFCHR, 0)?;
        return Ok(0);
    }
    let target = parent.join(name);
    let existing = fs::symlink_metadata(&target).ok();
    if !(kind.is_dir() && existing.as_ref().is_some_and(|m| m.is_dir())) {
        remove_existing(&target)?;
    }
    let header = entry.header();
    let mode = header
        .mode()
        .map_err(|e| hostile(format!("bad mode: {e}")))?
        & 0o7777;
    use tar::EntryType as T;
    let mut holes = 0;
    match kind {
        T::Regular | T::Continuous | T::GNUSparse => {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&target)
                .ctx(|| format!("create {}", target.display()))?;
            holes = write_sparse(entry, f, &target)?;
        }
        T::Directory => {
            if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                fs::create_dir(&target).ctx(|| format!("mkdir {}", target.display()))?;
            }
            let mtime = header.mtime().unwrap_or(0);
            dir_times.push((target.clone(), i64::try_from(mtime).unwrap_or(0)));
        }
        T::Symlink => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| hostile("symlink without target"))?;
            if link.len() > MAX_PATH || link.contains(&0) {
                return Err(hostile("bad symlink target"));
            }
            // The target is data: it is only ever followed inside the VM.
            std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                .ctx(|| format!("symlink {}", target.display()))?;
        }
        T::Link => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| hostile("hardlink without target"))?;
            let lcomps = clean_path(&link)?;
            let Some((lname, lparents)) = lcomps.split_last() else {
                return Err(hostile("hardlink to the root"));
            };
            let lparent = existing_parents(dest, lparents)?;
            let src = lparent.join(lname);
            let m = fs::symlink_metadata(&src).map_err(|_| {
                hostile(format!(
                    "hardlink to missing {:?}",
                    String::from_utf8_lossy(&link)
                ))
            })?;
            if m.is_dir() {
                return Err(hostile("hardlink to a directory"));
            }
            // linkat without AT_SYMLINK_FOLLOW: links the symlink itself, never its target.
            fs::hard_link(&src, &target).ctx(|| format!("hardlink {}", target.display()))?;
            return Ok(0);
        }
        T::Char | T::Block | T::Fifo => {
            let fmt = match kind {
                T::Char => libc::S_IFCHR,
                T::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            mknod(&target, fmt | (mode & 0o777), libc::makedev(major, minor))?;
        }
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(0),
        other => {
            tracing::warn!("skipping tar entry {:?} of type {other:?}", target);
            return Ok(0);
        }
    }
    apply_meta(entry, &target, kind == T::Symlink)?;
    Ok(holes)
}

/// Create missing parent directories; refuse to pass through symlinks or files.
fn ensure_parents(dest: &Path, parents: &[&OsStr]) -> Result<PathBuf> {
    let mut p = dest.to_path_buf();
    for c in parents {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(hostile(format!("path through symlink {}", rel(dest, &p))))
            }
            Ok(_) => {
                return Err(hostile(format!(
                    "path through non-directory {}",
                    rel(dest, &p)
                )))
            }
            Err(_) => {
                fs::create_dir(&p).ctx(|| format!("mkdir {}", p.display()))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .ctx(|| format!("chmod {}", p.display()))?;
            }
        }
    }
    Ok(p)
}

/// Like `ensure_parents` but nothing is created (hardlink sources).
fn existing_parents(dest: &Path, parents: &[&OsStr]) -> Result<PathBuf> {
    let mut p = dest.to_path_buf();
    for c in parents {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            _ => return Err(hostile(format!("hardlink through {}", rel(dest, &p)))),
        }
    }
    Ok(p)
}

fn rel(dest: &Path, p: &Path) -> String {
    p.strip_prefix(dest).unwrap_or(p).display().to_string()
}

fn remove_existing(p: &Path) -> Result<()> {
    crate::fsutil::remove_any(p)
}

/// Copy entry data, seeking over zero blocks so holes stay holes.
fn write_sparse(r: &mut dyn Read, mut f: File, path: &Path) -> Result<u64> {
    const BLK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLK];
    let mut len: u64 = 0;
    let mut holes = 0;
    loop {
        let mut filled = 0;
        while filled < BLK {
            let n = r.read(&mut buf[filled..]).map_err(stream_error)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if chunk.iter().all(|&b| b == 0) {
            holes += filled as u64;
            f.seek(SeekFrom::Current(filled as i64))
                .ctx(|| format!("seek {}", path.display()))?;
        } else {
            f.write_all(chunk)
                .ctx(|| format!("write {}", path.display()))?;
        }
        len += filled as u64;
        if filled < BLK {
            break;
        }
    }
    f.set_len(len)
        .ctx(|| format!("truncate {}", path.display()))?;
    Ok(holes)
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| hostile("path contains NUL"))
}

fn not_root_hint(e: io::Error, what: String) -> Error {
    if e.raw_os_error() == Some(libc::EPERM) {
        Error::Unsupported(format!(
            "{what}: permission denied; converting layers needs root (CAP_MKNOD, CAP_CHOWN, trusted.* xattrs)"
        ))
    } else {
        Error::Io {
            context: what,
            source: e,
        }
    }
}

fn mknod(p: &Path, mode: u32, dev: libc::dev_t) -> Result<()> {
    let c = cpath(p)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(not_root_hint(
            io::Error::last_os_error(),
            format!("mknod {}", p.display()),
        ));
    }
    Ok(())
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|_| hostile("xattr name contains NUL"))?;
    // SAFETY: path and name are valid C strings; value points to value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(not_root_hint(
            io::Error::last_os_error(),
            format!("set xattr {name} on {}", p.display()),
        ));
    }
    Ok(())
}

fn set_mtime(p: &Path, mtime: i64) -> Result<()> {
    let c = cpath(p)?;
    let t = libc::timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).ctx(|| format!("set times of {}", p.display()));
    }
    Ok(())
}

/// Owner, permission bits and mtime of a tar entry, as both layer converters read them.
pub(crate) struct HeaderMeta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: u64,
}

/// Reads [`HeaderMeta`]; a bad numeric field is a hostile layer, except that an
/// all-NUL (or blank) owner means 0, as Go's archive/tar reads it.
pub(crate) fn header_meta(h: &tar::Header) -> Result<HeaderMeta> {
    let blank = |f: &[u8]| f.iter().all(|b| *b == 0 || *b == b' ');
    let old = h.as_old();
    let uid = h.uid().or_else(|e| {
        if blank(&old.uid) {
            Ok(0)
        } else {
            Err(hostile(format!("bad uid: {e}")))
        }
    })?;
    let gid = h.gid().or_else(|e| {
        if blank(&old.gid) {
            Ok(0)
        } else {
            Err(hostile(format!("bad gid: {e}")))
        }
    })?;
    Ok(HeaderMeta {
        uid: u32::try_from(uid).map_err(|_| hostile("uid out of range"))?,
        gid: u32::try_from(gid).map_err(|_| hostile("gid out of range"))?,
        mode: h.mode().map_err(|e| hostile(format!("bad mode: {e}")))? & 0o7777,
        mtime: h.mtime().unwrap_or(0),
    })
}

/// Owner, mode, xattrs and mtime from the tar header (after creation).
fn apply_meta<R: Read>(entry: &mut tar::Entry<'_, R>, p: &Path, is_symlink: bool) -> Result<()> {
    let HeaderMeta {
        uid,
        gid,
        mode,
        mtime,
    } = header_meta(entry.header())?;
    let c = cpath(p)?;
    // SAFETY: valid path; lchown never follows a symlink.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(not_root_hint(
            io::Error::last_os_error(),
            format!("chown {}", p.display()),
        ));
    }
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts {
            let ext = ext.map_err(|e| hostile(format!("bad pax record: {e}")))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                // Overlay's own xattrs come only from whiteout translation.
                if name.starts_with("trusted.overlay.") {
                    continue;
                }
                set_xattr(p, name, ext.value_bytes())?;
            }
        }
    }
    if !is_symlink {
        // chmod after chown: chown clears set-id bits.
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
            .ctx(|| format!("chmod {}", p.display()))?;
    }
    set_mtime(p, i64::try_from(mtime).unwrap_or(0))
}
