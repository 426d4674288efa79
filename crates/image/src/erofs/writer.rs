//! Writing the image: file data block-aligned as the tar streams in (all-zero
//! blocks become holes in the image file, so sparse files stay sparse on the
//! host), then, once the tar has ended, directory blocks and the metadata
//! area (inodes with inline xattrs and tails), then the superblock.
//!
//! ```text
//! block 0                superblock at byte 1024
//! blocks 1..             file data, in tar order
//! ..meta_blkaddr         directory blocks and long symlink targets
//! meta_blkaddr..         inodes (root first: nid 0), 32-byte slots
//! ```

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use super::layout::{
    self, DataLayout, RawInode, Super, BLOCK, DIRENT_SIZE, INODE_SIZE, SLOT, SUPER_OFFSET,
};
use super::tree::{FileData, Kind, NodeId, Tree, ROOT};
use crate::error::{Error, IoContext, Result};
use crate::unpack::stream_error;

const ZEROS: [u8; BLOCK] = [0; BLOCK];
/// Read (and write) file data in pieces of this size.
const CHUNK: usize = 1 << 20;
/// Most bytes of file tails kept in memory for inlining; later tails take
/// a block each (bounds memory for layers of millions of small files).
const INLINE_BUDGET: usize = 256 << 20;
/// erofs block addresses are 32-bit.
const MAX_BLOCKS: u64 = u32::MAX as u64;

/// Size of erofs' in-inode xattr header (`erofs_xattr_ibody_header`).
const XATTR_HEADER_LEN: u64 = 12;

fn too_big() -> Error {
    Error::LimitExceeded("layer too large for an erofs image (16 TiB)".into())
}

pub struct Writer {
    file: File,
    next_blk: u64,
    inline_left: usize,
    buf: Vec<u8>,
    /// Image bytes before this offset have had writeback started.
    kicked: u64,
    pub hole_bytes: u64,
}

impl Writer {
    pub fn new(file: File) -> Self {
        Self {
            file,
            next_blk: 1,
            inline_left: INLINE_BUDGET,
            buf: vec![0; CHUNK],
            kicked: 0,
            hole_bytes: 0,
        }
    }

    fn write_at(&self, data: &[u8], blk: u64) -> Result<()> {
        self.file
            .write_all_at(data, blk * BLOCK as u64)
            .ctx(|| "write erofs image".to_owned())
    }

    /// Append whole blocks from `data` (a multiple of BLOCK), leaving zero
    /// blocks as holes. Returns the address of the first.
    fn put_blocks(&mut self, data: &[u8], buf_is_data: bool) -> Result<()> {
        debug_assert!(data.len().is_multiple_of(BLOCK));
        let n = (data.len() / BLOCK) as u64;
        if self.next_blk + n > MAX_BLOCKS {
            return Err(too_big());
        }
        let mut run_start = None;
        for (i, b) in data.chunks_exact(BLOCK).enumerate() {
            if b == ZEROS {
                if let Some(s) = run_start.take() {
                    self.write_at(&data[s * BLOCK..i * BLOCK], self.next_blk + s as u64)?;
                }
                if buf_is_data {
                    self.hole_bytes += BLOCK as u64;
                }
            } else if run_start.is_none() {
                run_start = Some(i);
            }
        }
        if let Some(s) = run_start {
            self.write_at(&data[s * BLOCK..], self.next_blk + s as u64)?;
        }
        self.next_blk += n;
        let end = self.next_blk * BLOCK as u64;
        if end - self.kicked >= crate::fsutil::WRITEBACK_STEP {
            crate::fsutil::start_writeback(&self.file, self.kicked, end - self.kicked);
            self.kicked = end;
        }
        Ok(())
    }

    /// Stream one regular file's data. A last partial block of at most
    /// `tail_room` bytes is kept for inlining after the inode.
    pub fn write_file(&mut self, r: &mut dyn Read, tail_room: usize) -> Result<FileData> {
        let blkaddr = self.next_blk;
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.stream(r, &mut buf, tail_room);
        self.buf = buf;
        let (size, tail) = r?;
        Ok(FileData {
            size,
            blkaddr,
            tail,
        })
    }

    fn stream(
        &mut self,
        r: &mut dyn Read,
        buf: &mut [u8],
        tail_room: usize,
    ) -> Result<(u64, Option<Vec<u8>>)> {
        let mut size = 0u64;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = r.read(&mut buf[filled..]).map_err(stream_error)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            size += filled as u64;
            let full = filled / BLOCK * BLOCK;
            self.put_blocks(&buf[..full], true)?;
            if filled < buf.len() {
                let rest = &buf[full..filled];
                if rest.is_empty() {
                    return Ok((size, None));
                }
                if rest.len() <= tail_room && rest.len() <= self.inline_left {
                    self.inline_left -= rest.len();
                    return Ok((size, Some(rest.to_vec())));
                }
                let mut last = [0u8; BLOCK];
                last[..rest.len()].copy_from_slice(rest);
                self.put_blocks(&last, true)?;
                return Ok((size, None));
            }
        }
    }

    /// Write directories, inodes and the superblock; returns the inode count.
    pub fn finish(mut self, tree: &Tree) -> Result<u64> {
        let plan = Plan::new(tree, self.next_blk)?;
        // Directory blocks and long symlinks, then the metadata area.
        let region_start = self.next_blk;
        let mut region = Vec::with_capacity(plan.extra_blocks as usize * BLOCK);
        // erofs-utils 1.5's fsck reads the 12-byte xattr header after every inode, even
        // one without xattrs: an image that ends right after an inode fails its check
        // (the kernel is fine). Keep those bytes inside the image.
        let meta_end = plan.meta_len + XATTR_HEADER_LEN;
        let mut meta = vec![0u8; meta_end.next_multiple_of(BLOCK as u64) as usize];
        for (i, &id) in plan.order.iter().enumerate() {
            let p = &plan.inodes[i];
            let node = tree.node(id);
            let mut inline: Vec<u8> = Vec::new();
            match &node.kind {
                Kind::Dir(_) => {
                    let entries = plan.dir_entries(tree, id);
                    let counts = layout::pack_dir(entries.iter().map(|e| e.0.len()));
                    let mut at = 0;
                    for (bi, &c) in counts.iter().enumerate() {
                        let block: Vec<(&[u8], u64, u8)> = entries[at..at + c]
                            .iter()
                            .map(|(name, child)| {
                                let ft = layout::file_type(tree.node(*child).meta.mode);
                                (*name, plan.nid[*child], ft)
                            })
                            .collect();
                        at += c;
                        let last = bi + 1 == counts.len();
                        if last && p.layout == DataLayout::FlatInline {
                            layout::encode_dir_block(&block, &mut inline);
                        } else {
                            debug_assert_eq!(
                                region.len() as u64,
                                (p.blkaddr - region_start + bi as u64) * BLOCK as u64
                            );
                            layout::encode_dir_block(&block, &mut region);
                            region.resize(region.len().next_multiple_of(BLOCK), 0);
                        }
                    }
                }
                Kind::File(FileData { tail, .. }) => {
                    if let Some(t) = tail {
                        inline.extend_from_slice(t);
                    }
                }
                Kind::Symlink(target) => {
                    if p.layout == DataLayout::FlatInline {
                        inline.extend_from_slice(target);
                    } else {
                        region.extend_from_slice(target);
                        region.resize(region.len().next_multiple_of(BLOCK), 0);
                    }
                }
                Kind::Special(_) => {}
            }
            let raw = RawInode {
                layout: p.layout,
                xattr_icount: p.xattr_icount,
                mode: (node.meta.mode & 0xffff) as u16,
                size: p.size,
                i_u: p.i_u,
                ino: u32::try_from(i + 1).map_err(|_| too_big())?,
                uid: node.meta.uid,
                gid: node.meta.gid,
                mtime: node.meta.mtime,
                nlink: plan.nlink[id],
            };
            let off = (plan.nid[id] * SLOT as u64) as usize;
            let mut at = off;
            meta[at..at + INODE_SIZE].copy_from_slice(&raw.encode());
            at += INODE_SIZE;
            meta[at..at + p.xattrs.len()].copy_from_slice(&p.xattrs);
            at += p.xattrs.len();
            if inline.len() != p.inline_len {
                return Err(Error::Unsupported(
                    "internal: erofs inline size changed".into(),
                ));
            }
            meta[at..at + inline.len()].copy_from_slice(&inline);
        }
        if region.len() as u64 != plan.extra_blocks * BLOCK as u64 {
            return Err(Error::Unsupported(
                "internal: erofs directory area size changed".into(),
            ));
        }
        self.put_blocks(&region, false)?;
        let meta_blkaddr = self.next_blk;
        self.put_blocks(&meta, false)?;
        let blocks = u32::try_from(self.next_blk).map_err(|_| too_big())?;
        let sb = Super {
            root_nid: 0,
            inos: plan.order.len() as u64,
            blocks,
            meta_blkaddr: u32::try_from(meta_blkaddr).map_err(|_| too_big())?,
        };
        self.file
            .write_all_at(&sb.encode(), SUPER_OFFSET as u64)
            .ctx(|| "write erofs superblock".to_owned())?;
        self.file
            .set_len(self.next_blk * BLOCK as u64)
            .ctx(|| "size erofs image".to_owned())?;
        Ok(plan.order.len() as u64)
    }
}

/// Per-inode decisions made before anything is serialized.
struct InodePlan {
    layout: DataLayout,
    size: u64,
    i_u: u32,
    xattrs: Vec<u8>,
    xattr_icount: u16,
    inline_len: usize,
    /// First block of directory blocks / long symlink (0 if none).
    blkaddr: u64,
}

struct Plan {
    /// Reachable nodes, breadth first from the root.
    order: Vec<NodeId>,
    inodes: Vec<InodePlan>,
    /// Per node (unreachable ones: 0).
    nid: Vec<u64>,
    nlink: Vec<u32>,
    parent: Vec<NodeId>,
    extra_blocks: u64,
    meta_len: u64,
}

impl Plan {
    fn new(tree: &Tree, first_free_blk: u64) -> Result<Self> {
        let n = tree.nodes.len();
        let mut seen = vec![false; n];
        let mut nlink = vec![0u32; n];
        let mut parent = vec![ROOT; n];
        let mut order = vec![ROOT];
        seen[ROOT] = true;
        nlink[ROOT] = 2;
        let mut i = 0;
        while i < order.len() {
            let id = order[i];
            i += 1;
            if let Kind::Dir(children) = &tree.node(id).kind {
                for &c in children.values() {
                    if let Kind::Dir(_) = tree.node(c).kind {
                        nlink[id] = nlink[id].saturating_add(1);
                        nlink[c] = 2;
                        parent[c] = id;
                    } else {
                        nlink[c] = nlink[c].saturating_add(1);
                    }
                    if !seen[c] {
                        seen[c] = true;
                        order.push(c);
                    }
                }
            }
        }
        let mut plan = Self {
            order,
            inodes: Vec::new(),
            nid: vec![0; n],
            nlink,
            parent,
            extra_blocks: 0,
            meta_len: 0,
        };
        let mut next_blk = first_free_blk;
        let mut off: u64 = 0;
        for idx in 0..plan.order.len() {
            let id = plan.order[idx];
            let node = tree.node(id);
            let (xattrs, xattr_icount) = layout::encode_xattrs(
                node.meta
                    .xattrs
                    .iter()
                    .filter_map(|(k, v)| layout::xattr_prefix(k).map(|(i, n)| (i, n, &v[..]))),
            );
            let room = BLOCK.saturating_sub(INODE_SIZE + xattrs.len());
            let mut p = InodePlan {
                layout: DataLayout::FlatPlain,
                size: 0,
                i_u: 0,
                xattrs,
                xattr_icount,
                inline_len: 0,
                blkaddr: 0,
            };
            let mut alloc = |blocks: u64| -> Result<u32> {
                let at = next_blk;
                next_blk += blocks;
                if next_blk > MAX_BLOCKS {
                    return Err(too_big());
                }
                u32::try_from(at).map_err(|_| too_big())
            };
            match &node.kind {
                Kind::Dir(_) => {
                    let entries = plan.dir_entries(tree, id);
                    let counts = layout::pack_dir(entries.iter().map(|e| e.0.len()));
                    let nb = counts.len() as u64;
                    let last_n = counts.last().copied().unwrap_or(0);
                    let last_used = layout::dir_block_used(
                        entries[entries.len() - last_n..].iter().map(|e| e.0),
                    );
                    p.size = (nb - 1) * BLOCK as u64 + last_used as u64;
                    let full = if last_used <= room {
                        p.layout = DataLayout::FlatInline;
                        p.inline_len = last_used;
                        nb - 1
                    } else {
                        nb
                    };
                    if full > 0 {
                        p.i_u = alloc(full)?;
                        p.blkaddr = u64::from(p.i_u);
                    }
                }
                Kind::File(d) => {
                    p.size = d.size;
                    p.i_u = u32::try_from(d.blkaddr).map_err(|_| too_big())?;
                    if let Some(t) = &d.tail {
                        if t.len() > room {
                            return Err(Error::Unsupported(
                                "internal: erofs file tail does not fit".into(),
                            ));
                        }
                        p.layout = DataLayout::FlatInline;
                        p.inline_len = t.len();
                    }
                }
                Kind::Symlink(target) => {
                    p.size = target.len() as u64;
                    if target.len() <= room && target.len() < BLOCK {
                        p.layout = DataLayout::FlatInline;
                        p.inline_len = target.len();
                    } else {
                        p.i_u = alloc(target.len().div_ceil(BLOCK) as u64)?;
                        p.blkaddr = u64::from(p.i_u);
                    }
                }
                Kind::Special(rdev) => p.i_u = *rdev,
            }
            // Keep an inode, its xattrs and inline data inside one block
            // (inline data must not cross one; the rest is just simpler).
            let len = (INODE_SIZE + p.xattrs.len() + p.inline_len) as u64;
            if len <= BLOCK as u64 && off % BLOCK as u64 + len > BLOCK as u64 {
                off = off.next_multiple_of(BLOCK as u64);
            }
            plan.nid[id] = off / SLOT as u64;
            off += len.next_multiple_of(SLOT as u64);
            plan.inodes.push(p);
        }
        plan.extra_blocks = next_blk - first_free_blk;
        plan.meta_len = off;
        Ok(plan)
    }

    /// A directory's entries with `.` and `..`, in the byte order erofs
    /// looks names up by.
    fn dir_entries<'t>(&self, tree: &'t Tree, id: NodeId) -> Vec<(&'t [u8], NodeId)> {
        let Kind::Dir(children) = &tree.node(id).kind else {
            return Vec::new();
        };
        let mut v: Vec<(&[u8], NodeId)> = Vec::with_capacity(children.len() + 2);
        v.push((b".", id));
        v.push((b"..", self.parent[id]));
        v.extend(children.iter().map(|(k, &c)| (&k[..], c)));
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        debug_assert!(v.iter().all(|(n, _)| DIRENT_SIZE + n.len() <= BLOCK));
        v
    }
}
