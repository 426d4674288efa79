//! A native erofs writer: one layer tar stream in, one uncompressed erofs
//! image out, in a single pass with no scratch directory and no mkfs.erofs
//! (Debian 12's erofs-utils 1.5 cannot read tars, and unpacking first cost
//! more than the conversion itself).
//!
//! The tree is what unpacking the tar into a directory would give, as an
//! overlayfs lower layer: OCI whiteouts become overlayfs ones (`.wh.NAME` -> a
//! 0/0 character device NAME; `.wh..wh..opq` -> `trusted.overlay.opaque=y` on
//! the directory); owners, modes, mtimes, PAX `SCHILY.xattr.*`, hardlinks,
//! symlinks, device nodes and fifos are kept; later entries override earlier
//! ones; missing parents appear as 0755 directories. All-zero data blocks are
//! holes in the image file. The tar is hostile: the same guard (sizes, header
//! lengths, entry counts, decompression bombs) and path rules as `unpack`.
//!
//! Modules: `layout` (on-disk structures), `tree` (the file tree in memory),
//! `writer` (data streaming and the metadata area).

pub mod layout;
pub mod tree;
pub mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::targuard::TarGuard;
use crate::unpack::{clean_path, header_meta, stream_error, UnpackStats};
use layout::{INODE_SIZE, XATTR_BODY_MAX};
use tree::{Kind, Meta, Node, Tree, ROOT};

const MAX_PATH: usize = 4096;
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

fn hostile(msg: impl Into<String>) -> Error {
    Error::HostileLayer(msg.into())
}

/// Convert an uncompressed tar stream into an erofs image written to `out`
/// (an empty file). Returns what was seen and the stream (drained to its end:
/// trailing padding belongs to the diff_id).
pub fn tar_to_erofs<R: Read>(stream: R, out: File, limits: &Limits) -> Result<(UnpackStats, R)> {
    let guard = TarGuard::new(
        stream,
        limits.max_layer_uncompressed,
        limits.max_entries,
        limits.max_tar_extension,
    );
    let mut ar = tar::Archive::new(guard);
    let mut stats = UnpackStats::default();
    let mut tree = Tree::new();
    let mut w = writer::Writer::new(out);
    {
        let entries = ar.entries().map_err(stream_error)?;
        for entry in entries {
            let mut entry = entry.map_err(stream_error)?;
            stats.entries += 1;
            add_entry(&mut entry, &mut tree, &mut w)?;
        }
    }
    let mut guard = ar.into_inner();
    io::copy(&mut guard, &mut io::sink()).map_err(stream_error)?;
    stats.bytes = guard.total();
    stats.hole_bytes = w.hole_bytes;
    w.finish(&tree)?;
    Ok((stats, guard.into_inner()))
}

fn add_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    tree: &mut Tree,
    w: &mut writer::Writer,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use tar::EntryType as T;
    let raw = entry.path_bytes().into_owned();
    let comps: Vec<&[u8]> = clean_path(&raw)?.iter().map(|c| c.as_bytes()).collect();
    let kind = entry.header().entry_type();
    let Some((&name, parents)) = comps.split_last() else {
        // The root itself ("./"): only its metadata matters.
        if kind.is_dir() {
            let m = meta(entry, libc::S_IFDIR)?;
            update_meta(tree, ROOT, m);
        }
        return Ok(());
    };
    let parent = tree.ensure_dir(parents)?;
    if name == b".wh..wh..opq" {
        tree.node_mut(parent)
            .meta
            .xattrs
            .insert(OPAQUE_XATTR.to_vec(), b"y".to_vec());
        return Ok(());
    }
    if let Some(victim) = name.strip_prefix(b".wh.") {
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(hostile("bad whiteout name"));
        }
        let mtime = entry.header().mtime().unwrap_or(0);
        let id = tree.add(Node {
            meta: Meta {
                mode: libc::S_IFCHR,
                uid: 0,
                gid: 0,
                mtime,
                xattrs: BTreeMap::new(),
            },
            kind: Kind::Special(0),
        });
        return tree.link(parent, victim, id);
    }
    let existing = tree.lookup(parent, name);
    let node = match kind {
        T::Regular | T::Continuous | T::GNUSparse => {
            let m = meta(entry, libc::S_IFREG)?;
            let xattr_len = xattr_body_len(&m)?;
            let room = layout::BLOCK.saturating_sub(INODE_SIZE + xattr_len);
            let data = w.write_file(entry, room)?;
            Node {
                meta: m,
                kind: Kind::File(data),
            }
        }
        T::Directory => {
            let m = meta(entry, libc::S_IFDIR)?;
            if let Some(id) = existing.filter(|&id| matches!(tree.node(id).kind, Kind::Dir(_))) {
                update_meta(tree, id, m);
                return Ok(());
            }
            Node {
                meta: m,
                kind: Kind::Dir(BTreeMap::new()),
            }
        }
        T::Symlink => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| hostile("symlink without target"))?
                .into_owned();
            if link.is_empty() || link.len() > MAX_PATH || link.contains(&0) {
                return Err(hostile("bad symlink target"));
            }
            let mut m = meta(entry, libc::S_IFLNK)?;
            // The target is data: it is only ever followed inside the VM.
            m.mode = libc::S_IFLNK | 0o777;
            Node {
                meta: m,
                kind: Kind::Symlink(link),
            }
        }
        T::Link => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| hostile("hardlink without target"))?;
            let lcomps = clean_path(&link)?;
            let lcomps: Vec<&[u8]> = lcomps.iter().map(|c| c.as_bytes()).collect();
            let Some((&lname, lparents)) = lcomps.split_last() else {
                return Err(hostile("hardlink to the root"));
            };
            let src = tree.resolve_existing(lparents, lname)?;
            if matches!(tree.node(src).kind, Kind::Dir(_)) {
                return Err(hostile("hardlink to a directory"));
            }
            // Links the entry itself (a symlink stays a symlink), never its target.
            return tree.link(parent, name, src);
        }
        T::Char | T::Block | T::Fifo => {
            let fmt = match kind {
                T::Char => libc::S_IFCHR,
                T::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            let h = entry.header();
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            let rdev = if fmt == libc::S_IFIFO {
                0
            } else {
                layout::encode_rdev(major, minor)
            };
            Node {
                meta: meta(entry, fmt)?,
                kind: Kind::Special(rdev),
            }
        }
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(()),
        other => {
            tracing::warn!(
                "skipping tar entry {:?} of type {other:?}",
                String::from_utf8_lossy(&raw)
            );
            return tree.unlink(parent, name);
        }
    };
    let id = tree.add(node);
    tree.link(parent, name, id)
}

/// A directory entry over an existing directory: new owner, mode and time;
/// xattrs are added to those it has (an opaque marker stays).
fn update_meta(tree: &mut Tree, id: tree::NodeId, m: Meta) {
    let old = &mut tree.node_mut(id).meta;
    old.mode = m.mode;
    old.uid = m.uid;
    old.gid = m.gid;
    old.mtime = m.mtime;
    old.xattrs.extend(m.xattrs);
}

fn xattr_body_len(m: &Meta) -> Result<usize> {
    let mut len = 0;
    for (k, v) in &m.xattrs {
        if let Some((_, n)) = layout::xattr_prefix(k) {
            len += layout::xattr_entry_size(n, v);
        }
    }
    if len == 0 {
        return Ok(0);
    }
    let len = len + layout::XATTR_HEADER;
    if len > XATTR_BODY_MAX {
        return Err(hostile(format!("{len} bytes of xattrs on one file")));
    }
    Ok(len)
}

/// Owner, mode, mtime and xattrs from the tar header and its PAX records.
fn meta<R: Read>(entry: &mut tar::Entry<'_, R>, fmt: u32) -> Result<Meta> {
    let h = header_meta(entry.header())?;
    let mut m = Meta {
        mode: fmt | h.mode,
        uid: h.uid,
        gid: h.gid,
        mtime: h.mtime,
        xattrs: BTreeMap::new(),
    };
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts {
            let ext = ext.map_err(|e| hostile(format!("bad pax record: {e}")))?;
            let Ok(key) = ext.key() else { continue };
            let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            // Overlay's own xattrs come only from whiteout translation.
            if name.starts_with("trusted.overlay.") {
                continue;
            }
            let value = ext.value_bytes();
            match layout::xattr_prefix(name.as_bytes()) {
                Some((_, n)) if n.len() <= layout::NAME_MAX && value.len() <= 65535 => {
                    m.xattrs.insert(name.as_bytes().to_vec(), value.to_vec());
                }
                Some(_) => return Err(hostile(format!("oversized xattr {name}"))),
                None => tracing::warn!("dropping xattr {name}: erofs cannot store its namespace"),
            }
        }
    }
    xattr_body_len(&m)?;
    Ok(m)
}
