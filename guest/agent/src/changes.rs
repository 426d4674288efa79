//! The writable layer's changes as an OCI layer tar, for `skiff commit`: the overlay
//! upper directory walked in name order, 0/0 character devices (overlayfs deletions)
//! written as `.wh.NAME`, opaque directories (`trusted.overlay.opaque=y`) as
//! `.wh..wh..opq`, hardlinks as tar links. The host treats what arrives as hostile
//! and checks every entry (`skiff_image::commit`); producing it here keeps the
//! guest-written filesystem out of the host kernel. Assumes the overlay runs without
//! redirect_dir/metacopy (as `rootfs` mounts it), so every upper file holds its full
//! content.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The overlay upper directory (see `rootfs`), once the container is created.
pub fn upper_dir() -> io::Result<PathBuf> {
    crate::container::upper_dir()
}

/// Writes the layer tar of `upper` to `out`.
pub fn write_layer(upper: &Path, out: &mut dyn Write) -> io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut links = HashMap::new();
    walk(upper, Path::new(""), &mut b, &mut links)?;
    b.finish()
}

type Builder<'a> = tar::Builder<&'a mut dyn Write>;

fn walk(
    root: &Path,
    rel: &Path,
    b: &mut Builder<'_>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = rel.join(&name);
        let m = fs::symlink_metadata(&path)?;
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
                let opq = rel.join(".wh..wh..opq");
                append(b, &opq, tar::EntryType::Regular, &m, 0o600, None, &[])?;
            }
            walk(root, &rel, b, links)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())).cloned() {
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
            let f = fs::File::open(&path)?;
            let mut hdr = header(tar::EntryType::Regular, &m, m.mode());
            hdr.set_size(m.len());
            pax_xattrs(b, &xattrs)?;
            b.append_data(&mut hdr, &rel, f.take(m.len()))?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&path)?;
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
                crate::log!("commit: skipping socket {}", rel.display());
                continue;
            };
            let mut hdr = header(kind, &m, m.mode());
            let rdev = m.rdev();
            hdr.set_device_major(libc::major(rdev))?;
            hdr.set_device_minor(libc::minor(rdev))?;
            pax_xattrs(b, &xattrs)?;
            b.append_data(&mut hdr, &rel, io::empty())?;
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
    b: &mut Builder<'_>,
    rel: &Path,
    kind: tar::EntryType,
    m: &fs::Metadata,
    mode: u32,
    link: Option<&Path>,
    xattrs: &[(String, Vec<u8>)],
) -> io::Result<()> {
    let mut h = header(kind, m, mode);
    pax_xattrs(b, xattrs)?;
    match link {
        Some(t) => b.append_link(&mut h, rel, t),
        None => b.append_data(&mut h, rel, io::empty()),
    }
}

fn pax_xattrs(b: &mut Builder<'_>, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let recs: Vec<(String, &[u8])> = xattrs
        .iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
        .collect();
    b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("path with NUL"))
}

/// All xattrs except overlayfs' own.
fn list_xattrs(p: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path and a buffer of buf.len() bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(e);
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

fn get_xattr(p: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|_| io::Error::other("xattr name with NUL"))?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA | libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(usize::try_from(r).unwrap_or(0));
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_opaque_dirs_and_hardlinks_become_oci_entries() {
        let up = tempfile_dir();
        let u = up.as_path();
        fs::create_dir(u.join("etc")).unwrap();
        let c = cpath(&u.join("etc/a")).unwrap();
        // SAFETY: valid path; creates a 0/0 character device (overlay whiteout).
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) }, 0);
        fs::create_dir(u.join("opq")).unwrap();
        let c = cpath(&u.join("opq")).unwrap();
        let n = CString::new("trusted.overlay.opaque").unwrap();
        // SAFETY: valid C strings, one-byte value.
        let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, 0);
        fs::write(u.join("opq/new"), b"n").unwrap();
        fs::write(u.join("f1"), b"same").unwrap();
        fs::hard_link(u.join("f1"), u.join("f2")).unwrap();
        let mut tar = Vec::new();
        write_layer(u, &mut tar).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let e = e.unwrap();
            names.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            ));
        }
        let has = |n: &str| names.iter().any(|(p, _)| p.trim_end_matches('/') == n);
        assert!(has("etc/.wh.a"), "{names:?}");
        assert!(has("opq/.wh..wh..opq"), "{names:?}");
        assert!(has("opq/new"), "{names:?}");
        assert!(
            names
                .iter()
                .any(|(p, k)| p == "f2" && *k == tar::EntryType::Link),
            "{names:?}"
        );
        fs::remove_dir_all(u).unwrap();
    }

    /// A fresh directory (the agent has no tempfile dependency).
    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-agent-changes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir(&d).unwrap();
        d
    }
}
