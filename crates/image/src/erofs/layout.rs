//! The erofs on-disk format, as far as an uncompressed image needs it
//! (learned from the kernel's `fs/erofs/erofs_fs.h`, Linux 6.1): the
//! superblock, extended (64-byte) inodes, inline xattr bodies and directory
//! blocks. Everything is little-endian; the block size is 4 KiB.
//!
//! Addressing: block `b` starts at byte `b * BLOCK`; an inode's number (nid)
//! is its byte offset from the start of the metadata area (`meta_blkaddr`)
//! divided by 32. Inline data (a file's or directory's tail) follows the inode
//! and its xattrs and must end inside the block where it starts.

pub const BLOCK: usize = 4096;
pub const BLOCK_BITS: u8 = 12;
pub const SUPER_OFFSET: usize = 1024;
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// Extended inode: 32-bit uid/gid, 64-bit size, its own mtime.
pub const INODE_SIZE: usize = 64;
/// Inodes start on 32-byte slots; nid = offset / 32.
pub const SLOT: usize = 32;
pub const DIRENT_SIZE: usize = 12;
/// `erofs_xattr_ibody_header`.
pub const XATTR_HEADER: usize = 12;
pub const NAME_MAX: usize = 255;

/// `i_format` data layouts used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataLayout {
    /// All data in `ceil(size / BLOCK)` blocks from `raw_blkaddr`.
    FlatPlain = 0,
    /// `size / BLOCK` blocks from `raw_blkaddr`, the rest right after the inode.
    FlatInline = 2,
}

/// Directory entry file types (`EROFS_FT_*`).
pub fn file_type(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFREG => 1,
        libc::S_IFDIR => 2,
        libc::S_IFCHR => 3,
        libc::S_IFBLK => 4,
        libc::S_IFIFO => 5,
        libc::S_IFSOCK => 6,
        libc::S_IFLNK => 7,
        _ => 0,
    }
}

/// The kernel's `new_encode_dev` (what erofs stores in `i_u.rdev`).
pub fn encode_rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub struct Super {
    pub root_nid: u16,
    pub inos: u64,
    pub blocks: u32,
    pub meta_blkaddr: u32,
}

impl Super {
    /// The 128-byte superblock (written at `SUPER_OFFSET`). No checksum:
    /// `feature_compat` does not claim one.
    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        // 4..8 checksum, 8..12 feature_compat: 0.
        b[12] = BLOCK_BITS;
        // 13 sb_extslots: 0.
        b[14..16].copy_from_slice(&self.root_nid.to_le_bytes());
        b[16..24].copy_from_slice(&self.inos.to_le_bytes());
        // 24..32 build_time, 32..36 build_time_nsec: only compact inodes use them.
        b[36..40].copy_from_slice(&self.blocks.to_le_bytes());
        b[40..44].copy_from_slice(&self.meta_blkaddr.to_le_bytes());
        // 44..48 xattr_blkaddr: no shared xattrs. 48..80 uuid, volume name.
        // 80..84 feature_incompat: none (no compression, chunks or devices).
        b
    }
}

/// One extended inode (`erofs_inode_extended`).
pub struct RawInode {
    pub layout: DataLayout,
    pub xattr_icount: u16,
    pub mode: u16,
    pub size: u64,
    /// `raw_blkaddr` for files, directories and symlinks; `rdev` for devices.
    pub i_u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub nlink: u32,
}

impl RawInode {
    pub fn encode(&self) -> [u8; INODE_SIZE] {
        let mut b = [0u8; INODE_SIZE];
        let format: u16 = 1 | ((self.layout as u16) << 1);
        b[0..2].copy_from_slice(&format.to_le_bytes());
        b[2..4].copy_from_slice(&self.xattr_icount.to_le_bytes());
        b[4..6].copy_from_slice(&self.mode.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..20].copy_from_slice(&self.i_u.to_le_bytes());
        b[20..24].copy_from_slice(&self.ino.to_le_bytes());
        b[24..28].copy_from_slice(&self.uid.to_le_bytes());
        b[28..32].copy_from_slice(&self.gid.to_le_bytes());
        b[32..40].copy_from_slice(&self.mtime.to_le_bytes());
        // 40..44 mtime_nsec: tar headers carry whole seconds.
        b[44..48].copy_from_slice(&self.nlink.to_le_bytes());
        b
    }
}

/// erofs stores an xattr name as a prefix index plus the rest. `None`: a
/// namespace erofs cannot represent.
pub fn xattr_prefix(name: &[u8]) -> Option<(u8, &[u8])> {
    match name {
        b"system.posix_acl_access" => return Some((2, b"")),
        b"system.posix_acl_default" => return Some((3, b"")),
        _ => {}
    }
    for (prefix, index) in [(&b"user."[..], 1u8), (b"trusted.", 4), (b"security.", 6)] {
        if let Some(rest) = name.strip_prefix(prefix) {
            if !rest.is_empty() {
                return Some((index, rest));
            }
        }
    }
    None
}

/// Largest inline xattr body `i_xattr_icount` (u16) can describe.
pub const XATTR_BODY_MAX: usize = XATTR_HEADER + 4 * (u16::MAX as usize - 1);

/// The inline xattr body (header + 4-byte aligned entries) and its
/// `i_xattr_icount`; empty and 0 when there are none. Entries must already be
/// representable (`xattr_prefix`, name <= 255, value <= 65535) and the body
/// at most `XATTR_BODY_MAX`; the caller checks.
pub fn encode_xattrs<'a>(list: impl Iterator<Item = (u8, &'a [u8], &'a [u8])>) -> (Vec<u8>, u16) {
    let mut body = vec![0u8; XATTR_HEADER];
    for (index, name, value) in list {
        body.push(name.len() as u8);
        body.push(index);
        body.extend_from_slice(&(value.len() as u16).to_le_bytes());
        body.extend_from_slice(name);
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    if body.len() == XATTR_HEADER {
        return (Vec::new(), 0);
    }
    let icount = ((body.len() - XATTR_HEADER) / 4 + 1) as u16;
    (body, icount)
}

/// Bytes one xattr entry takes in the body.
pub fn xattr_entry_size(name: &[u8], value: &[u8]) -> usize {
    (4 + name.len() + value.len()).next_multiple_of(4)
}

/// Split sorted directory entries (by name length) into blocks: returns the
/// number of entries in each block. Every block holds its dirents, then
/// their names, within `BLOCK` bytes.
pub fn pack_dir(name_lens: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut blocks = Vec::new();
    let (mut n, mut used) = (0usize, 0usize);
    for len in name_lens {
        if n > 0 && used + DIRENT_SIZE + len > BLOCK {
            blocks.push(n);
            (n, used) = (0, 0);
        }
        n += 1;
        used += DIRENT_SIZE + len;
    }
    if n > 0 {
        blocks.push(n);
    }
    blocks
}

/// Bytes used in a directory block holding these names.
pub fn dir_block_used<'a>(names: impl Iterator<Item = &'a [u8]>) -> usize {
    names.map(|n| DIRENT_SIZE + n.len()).sum()
}

/// Encode one directory block: `(name, nid, file type)` in name order.
pub fn encode_dir_block(entries: &[(&[u8], u64, u8)], out: &mut Vec<u8>) {
    let start = out.len();
    let mut nameoff = DIRENT_SIZE * entries.len();
    for (name, nid, ft) in entries {
        out.extend_from_slice(&nid.to_le_bytes());
        out.extend_from_slice(&(nameoff as u16).to_le_bytes());
        out.push(*ft);
        out.push(0);
        nameoff += name.len();
    }
    for (name, _, _) in entries {
        out.extend_from_slice(name);
    }
    debug_assert!(out.len() - start <= BLOCK);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdev_matches_the_kernel_encoding() {
        assert_eq!(encode_rdev(1, 3), 0x103);
        assert_eq!(encode_rdev(0, 0), 0);
        // Minor above 255 goes to bits 20..
        assert_eq!(encode_rdev(8, 0x1234), 0x34 | (8 << 8) | (0x1200 << 12));
    }

    #[test]
    fn xattr_body_is_aligned_and_counted() {
        let (b, n) = encode_xattrs([(4u8, &b"overlay.opaque"[..], &b"y"[..])].into_iter());
        // 12 header + align4(4 + 14 + 1) = 12 + 20.
        assert_eq!(b.len(), 32);
        assert_eq!(n, 6);
        assert_eq!(XATTR_HEADER + 4 * (usize::from(n) - 1), b.len());
        assert_eq!(encode_xattrs(std::iter::empty()), (Vec::new(), 0));
        assert_eq!(xattr_prefix(b"user.x"), Some((1, &b"x"[..])));
        assert_eq!(
            xattr_prefix(b"system.posix_acl_access"),
            Some((2, &b""[..]))
        );
        assert_eq!(xattr_prefix(b"system.other"), None);
        assert_eq!(xattr_prefix(b"user."), None);
    }

    #[test]
    fn directories_pack_into_blocks() {
        // 255-byte names: 267 bytes each, 15 per block.
        let blocks = pack_dir(std::iter::repeat_n(255, 40));
        assert_eq!(blocks, vec![15, 15, 10]);
        assert_eq!(pack_dir(std::iter::empty()), Vec::<usize>::new());
        let mut out = Vec::new();
        encode_dir_block(&[(b".", 0, 2), (b"..", 0, 2), (b"a", 5, 1)], &mut out);
        assert_eq!(out.len(), 36 + 4);
        assert_eq!(u16::from_le_bytes([out[8], out[9]]), 36);
        assert_eq!(u16::from_le_bytes([out[20], out[21]]), 37);
        assert_eq!(&out[36..], b"...a");
    }
}
