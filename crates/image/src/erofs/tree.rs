//! The layer's file tree in memory while its tar streams past: names,
//! metadata and where each file's data went. Semantics follow unpacking into
//! a directory: later entries replace earlier ones, a directory entry over a
//! directory only updates its metadata, missing parents appear as 0755
//! directories, and no path may pass through a symlink or a non-directory.
//!
//! Nodes are never freed: a replaced subtree just becomes unreachable and is
//! not written (its file data stays in the image as unused blocks).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

pub type NodeId = usize;
pub const ROOT: NodeId = 0;

/// Where a regular file's (or long symlink's) bytes are.
#[derive(Clone, Debug, Default)]
pub struct FileData {
    pub size: u64,
    /// First of `size / BLOCK` (inline tail) or `ceil(size / BLOCK)` blocks.
    pub blkaddr: u64,
    /// The last partial block, stored after the inode (tail packing).
    pub tail: Option<Vec<u8>>,
}

#[derive(Debug)]
pub enum Kind {
    Dir(BTreeMap<Vec<u8>, NodeId>),
    File(FileData),
    Symlink(Vec<u8>),
    /// Character or block device (by mode) or fifo; `rdev` in erofs encoding.
    Special(u32),
}

#[derive(Debug)]
pub struct Meta {
    /// Full mode including the file type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Full names (`user.foo`) -> value.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

#[derive(Debug)]
pub struct Node {
    pub meta: Meta,
    pub kind: Kind,
}

pub struct Tree {
    pub nodes: Vec<Node>,
}

fn hostile(msg: impl Into<String>) -> Error {
    Error::HostileLayer(msg.into())
}

fn show(parts: &[&[u8]]) -> String {
    String::from_utf8_lossy(&parts.join(&b'/')).into_owned()
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub fn new() -> Self {
        Self {
            nodes: vec![Node {
                meta: Meta {
                    mode: libc::S_IFDIR | 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    xattrs: BTreeMap::new(),
                },
                kind: Kind::Dir(BTreeMap::new()),
            }],
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id]
    }

    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.nodes[dir].kind {
            Kind::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    fn children_mut(&mut self, dir: NodeId) -> Result<&mut BTreeMap<Vec<u8>, NodeId>> {
        match &mut self.nodes[dir].kind {
            Kind::Dir(children) => Ok(children),
            _ => Err(Error::Unsupported("internal: not a directory".into())),
        }
    }

    /// The directory `parents` names, creating missing ones (0755, root).
    pub fn ensure_dir(&mut self, parents: &[&[u8]]) -> Result<NodeId> {
        let mut cur = ROOT;
        for (i, c) in parents.iter().enumerate() {
            cur = match self.lookup(cur, c) {
                Some(id) => match &self.nodes[id].kind {
                    Kind::Dir(_) => id,
                    Kind::Symlink(_) => {
                        return Err(hostile(format!(
                            "path through symlink {}",
                            show(&parents[..=i])
                        )))
                    }
                    _ => {
                        return Err(hostile(format!(
                            "path through non-directory {}",
                            show(&parents[..=i])
                        )))
                    }
                },
                None => {
                    let id = self.add(Node {
                        meta: Meta {
                            mode: libc::S_IFDIR | 0o755,
                            uid: 0,
                            gid: 0,
                            mtime: 0,
                            xattrs: BTreeMap::new(),
                        },
                        kind: Kind::Dir(BTreeMap::new()),
                    });
                    self.children_mut(cur)?.insert(c.to_vec(), id);
                    id
                }
            };
        }
        Ok(cur)
    }

    /// The existing entry `parents/name` names, through directories only
    /// (hardlink sources).
    pub fn resolve_existing(&self, parents: &[&[u8]], name: &[u8]) -> Result<NodeId> {
        let mut cur = ROOT;
        for (i, c) in parents.iter().enumerate() {
            cur = match self.lookup(cur, c) {
                Some(id) if matches!(self.nodes[id].kind, Kind::Dir(_)) => id,
                _ => {
                    return Err(hostile(format!(
                        "hardlink through {}",
                        show(&parents[..=i])
                    )))
                }
            };
        }
        self.lookup(cur, name).ok_or_else(|| {
            let mut all = parents.to_vec();
            all.push(name);
            hostile(format!("hardlink to missing {:?}", show(&all)))
        })
    }

    pub fn add(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Point `dir/name` at `id`, replacing whatever was there.
    pub fn link(&mut self, dir: NodeId, name: &[u8], id: NodeId) -> Result<()> {
        self.children_mut(dir)?.insert(name.to_vec(), id);
        Ok(())
    }

    /// Remove `dir/name` if present.
    pub fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.children_mut(dir)?.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Node {
        Node {
            meta: Meta {
                mode: libc::S_IFREG | 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                xattrs: BTreeMap::new(),
            },
            kind: Kind::File(FileData::default()),
        }
    }

    #[test]
    fn parents_are_created_and_symlinks_refused() {
        let mut t = Tree::new();
        let d = t.ensure_dir(&[b"a", b"b"]).unwrap_or(ROOT);
        assert_ne!(d, ROOT);
        assert_eq!(t.ensure_dir(&[b"a", b"b"]).ok(), Some(d));
        let l = t.add(Node {
            meta: Meta {
                mode: libc::S_IFLNK | 0o777,
                uid: 0,
                gid: 0,
                mtime: 0,
                xattrs: BTreeMap::new(),
            },
            kind: Kind::Symlink(b"/etc".to_vec()),
        });
        assert!(t.link(ROOT, b"l", l).is_ok());
        assert!(matches!(
            t.ensure_dir(&[b"l", b"x"]),
            Err(Error::HostileLayer(_))
        ));
        let f = t.add(file());
        assert!(t.link(d, b"f", f).is_ok());
        assert!(matches!(
            t.ensure_dir(&[b"a", b"b", b"f"]),
            Err(Error::HostileLayer(_))
        ));
        assert_eq!(t.resolve_existing(&[b"a", b"b"], b"f").ok(), Some(f));
        assert!(t.resolve_existing(&[b"l"], b"passwd").is_err());
        assert!(t.resolve_existing(&[], b"missing").is_err());
    }
}
