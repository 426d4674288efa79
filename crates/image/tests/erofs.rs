//! The native erofs writer: images checked by fsck.erofs and by the kernel
//! (loop mount, read-only), walked and compared with the same tar unpacked
//! into a directory by the old unpacker; random trees; the hostile corpus.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_image::{erofs, unpack, Error, Limits};

/// Everything a walk compares about one path.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Files: size and sha256; symlinks: target; devices: rdev.
    content: String,
    nlink: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// None where the two trees legitimately differ (directories the tar
    /// never declared, whiteouts: the unpacker stamps them with "now").
    mtime: Option<i64>,
}

fn list_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: valid C string and buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: valid C strings and buffer of the given length.
        let r = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(r >= 0, "lgetxattr {}", p.display());
        v.truncate(r as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), v);
    }
    out
}

fn walk(root: &Path, dir_mtimes: bool) -> BTreeMap<PathBuf, Seen> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let (kind, content) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            ('d', String::new())
        } else if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            ('f', format!("{} {:x}", data.len(), Sha256::digest(&data)))
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            ('l', t.to_string_lossy().into_owned())
        } else if ft.is_char_device() {
            ('c', format!("{:x}", m.rdev()))
        } else if ft.is_block_device() {
            ('b', format!("{:x}", m.rdev()))
        } else if ft.is_fifo() {
            ('p', String::new())
        } else {
            ('?', String::new())
        };
        let whiteout = kind == 'c' && m.rdev() == 0;
        // The unpacker sets the root's time before filling it.
        let mtime = if whiteout || (kind == 'd' && (!dir_mtimes || p == root)) {
            None
        } else {
            Some(m.mtime())
        };
        out.insert(
            p.strip_prefix(root).unwrap().to_path_buf(),
            Seen {
                kind,
                mode: if kind == 'l' { 0 } else { m.mode() & 0o7777 },
                uid: m.uid(),
                gid: m.gid(),
                content,
                nlink: m.nlink(),
                xattrs: list_xattrs(&p),
                mtime,
            },
        );
    }
    out
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount(img: &Path, at: &Path) -> Mount {
    std::fs::create_dir_all(at).unwrap();
    let o = Command::new("mount")
        .args(["-t", "erofs", "-o", "loop,ro"])
        .arg(img)
        .arg(at)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Mount(at.to_path_buf())
}

fn fsck(img: &Path) {
    let o = Command::new("fsck.erofs")
        .arg("--extract")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fsck.erofs: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn build(tar: &[u8], limits: &Limits, out: &Path) -> skiff_image::Result<unpack::UnpackStats> {
    let f = std::fs::File::create(out).unwrap();
    erofs::tar_to_erofs(tar, f, limits).map(|(s, _)| s)
}

fn prerequisites() -> bool {
    require("root (loop mounts)", is_root()) && require("fsck.erofs", have_tool("fsck.erofs"))
}

/// Build the image, fsck it, mount it, and compare its walk with the old
/// unpacker's directory. Returns the image's path (inside `work`).
fn check_against_unpack(tar: &[u8], work: &Path, dir_mtimes: bool) -> PathBuf {
    let img = work.join("layer.erofs");
    build(tar, &Limits::default(), &img).unwrap();
    fsck(&img);
    let tree = work.join("tree");
    std::fs::create_dir(&tree).unwrap();
    unpack::unpack(tar, &tree, &Limits::default()).unwrap();
    let mnt = work.join("mnt");
    let m = mount(&img, &mnt);
    let want = walk(&tree, dir_mtimes);
    let got = walk(&mnt, dir_mtimes);
    drop(m);
    for (p, w) in &want {
        match got.get(p) {
            Some(g) => assert_eq!(g, w, "{}", p.display()),
            None => panic!("{} missing from the image", p.display()),
        }
    }
    for p in got.keys() {
        assert!(want.contains_key(p), "{} only in the image", p.display());
    }
    img
}

#[test]
fn image_matches_unpacked_tree() {
    if !prerequisites() {
        return;
    }
    let big: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
    let block: Vec<u8> = (0..8192).map(|i| (i % 13) as u8).collect();
    let long_target = "t/".repeat(2040);
    // Inodes whose xattrs fill most of a block: placement must pad to the
    // next block instead of letting inline data cross one.
    let big_value = vec![b'v'; 3000];
    let many: Vec<String> = (0..400).map(|i| format!("./many/{:0>90}", i)).collect();
    let mut entries = vec![
        E::Dir("./"),
        E::Dir("./etc/"),
        E::FileMode("./etc/shadow", b"secret", 0o4640, 1000, 42),
        E::Hardlink("./etc/shadow-link", "./etc/shadow"),
        E::Hardlink("./etc/shadow-link2", "./etc/shadow"),
        E::Symlink("./bin", "/usr/bin"),
        E::Symlink("./long", &long_target),
        E::Hardlink("./bin-link", "./bin"),
        E::File("./usr/lib/implicit/parents", b"x"),
        E::Dir("./opaque/"),
        E::File("./opaque/.wh..wh..opq", b""),
        E::File("./etc/.wh.gone", b""),
        E::Char("./dev/null", 1, 3),
        E::Char("./dev/big-minor", 259, 70000),
        E::Fifo("./run/fifo"),
        E::Xattr("./cap", "user.test", b"v1"),
        E::Xattr("./sec", "security.skiff", b"label"),
        E::Xattr("./tru", "trusted.skiff", b"t"),
        E::XattrData("./bigx1", "user.big", &big_value),
        E::XattrData("./bigx2", "user.big", &big_value),
        E::XattrData("./bigx3", "trusted.big", &big_value),
        E::File("./big", &big),
        E::File("./aligned", &block),
        E::File("./empty", b""),
        // Later entries win; a file replaces a directory and its subtree.
        E::File("./over", b"first"),
        E::File("./over", b"second, longer"),
        E::File("./gone-dir/child", b"c"),
        E::File("./gone-dir", b"now a file"),
        E::Dir("./etc/"),
    ];
    entries.extend(many.iter().map(|n| E::File(n, b"m")));
    let tar = tar_of(&entries);
    let work = tempfile::tempdir().unwrap();
    check_against_unpack(&tar, work.path(), false);
}

#[test]
fn sparse_files_are_holes_in_the_image() {
    if !prerequisites() {
        return;
    }
    let mut data = vec![0u8; 16 << 20];
    data[0] = 1;
    let last = data.len() - 1;
    data[last] = 2;
    let tar = tar_of(&[E::File("big", &data)]);
    let work = tempfile::tempdir().unwrap();
    let img = check_against_unpack(&tar, work.path(), false);
    let m = std::fs::metadata(&img).unwrap();
    assert!(m.len() > 16 << 20);
    assert!(m.blocks() * 512 < 1 << 20, "allocated {}", m.blocks() * 512);
}

#[test]
fn hostile_corpus_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("x.erofs");
    let refused = |name: &str, tar: &[u8], lim: &Limits| match build(tar, lim, &img) {
        Err(Error::HostileLayer(_) | Error::LimitExceeded(_)) => {}
        other => panic!("{name}: expected refusal, got {other:?}"),
    };
    let lim = Limits::default();
    for (name, tar) in hostile_tars() {
        refused(name, &tar, &lim);
    }
    let small = Limits {
        max_layer_uncompressed: 16 << 20,
        ..Limits::default()
    };
    let bomb = gzip(&tar_of(&[E::File("zeros", &vec![0u8; 64 << 20])]));
    let f = std::fs::File::create(&img).unwrap();
    let r = erofs::tar_to_erofs(flate2::read::GzDecoder::new(&bomb[..]), f, &small);
    assert!(matches!(r, Err(Error::LimitExceeded(_))), "bomb");
    let many = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<E> = names.iter().map(|n| E::File(n, b"")).collect();
    refused("too many entries", &tar_of(&entries), &many);
}

mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Dir(u8),
        File(u8, u8, u16, u8),
        Symlink(u8, u8),
        Hardlink(u8, u8),
        Whiteout(u8, u8),
        Opaque(u8),
        Xattr(u8, u8),
        Fifo(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u8>().prop_map(Op::Dir),
            (any::<u8>(), any::<u8>(), any::<u16>(), any::<u8>())
                .prop_map(|(d, n, s, k)| Op::File(d, n, s, k)),
            (any::<u8>(), any::<u8>()).prop_map(|(d, n)| Op::Symlink(d, n)),
            (any::<u8>(), any::<u8>()).prop_map(|(d, n)| Op::Hardlink(d, n)),
            (any::<u8>(), any::<u8>()).prop_map(|(d, n)| Op::Whiteout(d, n)),
            any::<u8>().prop_map(Op::Opaque),
            (any::<u8>(), any::<u8>()).prop_map(|(d, n)| Op::Xattr(d, n)),
            (any::<u8>(), any::<u8>()).prop_map(|(d, n)| Op::Fifo(d, n)),
        ]
    }

    const DIRS: [&str; 4] = ["a", "a/b", "c", "a/b/d"];

    fn dir(i: u8) -> &'static str {
        DIRS[usize::from(i) % DIRS.len()]
    }

    /// A tar from the ops: every directory is declared first (so mtimes
    /// compare), names collide often (overrides), sizes straddle blocks.
    fn tar_from(ops: &[Op]) -> Vec<u8> {
        let mut owned: Vec<(String, Vec<u8>, String, u8)> =
            vec![("./".into(), Vec::new(), String::new(), 0)];
        for d in DIRS {
            owned.push((format!("{d}/"), Vec::new(), String::new(), 0));
        }
        let mut files: Vec<String> = Vec::new();
        for op in ops {
            match op {
                Op::Dir(d) => owned.push((format!("{}/", dir(*d)), vec![], String::new(), 0)),
                Op::File(d, n, s, k) => {
                    let size = match k % 4 {
                        0 => usize::from(*s) % 64,
                        1 => usize::from(*s) % 4096 + 4000,
                        2 => (usize::from(*s) % 4 + 1) * 4096,
                        _ => usize::from(*s) * 3,
                    };
                    let data: Vec<u8> = (0..size)
                        .map(|i| {
                            if (i / 4096) % 3 == 1 {
                                0
                            } else {
                                (i % 241) as u8 ^ k
                            }
                        })
                        .collect();
                    let p = format!("{}/f{}", dir(*d), n % 8);
                    files.push(p.clone());
                    owned.push((p, data, String::new(), 1));
                }
                Op::Symlink(d, n) => owned.push((
                    format!("{}/l{}", dir(*d), n % 4),
                    vec![],
                    "../x".repeat(usize::from(*n) % 40 + 1),
                    2,
                )),
                Op::Hardlink(d, n) => {
                    if let Some(t) = files.get(usize::from(*n) % files.len().max(1)) {
                        owned.push((format!("{}/h{}", dir(*d), n % 4), vec![], t.clone(), 3));
                    }
                }
                Op::Whiteout(d, n) => owned.push((
                    format!("{}/.wh.f{}", dir(*d), n % 8),
                    vec![],
                    String::new(),
                    1,
                )),
                Op::Opaque(d) => owned.push((
                    format!("{}/.wh..wh..opq", dir(*d)),
                    vec![],
                    String::new(),
                    1,
                )),
                Op::Xattr(d, n) => owned.push((
                    format!("{}/x{}", dir(*d), n % 4),
                    vec![*n; usize::from(*n)],
                    format!("user.k{n}"),
                    4,
                )),
                Op::Fifo(d, n) => {
                    owned.push((format!("{}/p{}", dir(*d), n % 4), vec![], String::new(), 5))
                }
            }
        }
        // A hardlink whose source was since replaced by a whiteout or
        // another kind is refused by both; keep the tar valid instead.
        let entries: Vec<E> = owned
            .iter()
            .map(|(p, data, extra, k)| match k {
                0 => E::Dir(p),
                1 => E::File(p, data),
                2 => E::Symlink(p, extra),
                3 => E::Hardlink(p, extra),
                4 => E::XattrData(p, extra, data),
                _ => E::Fifo(p),
            })
            .collect();
        tar_of(&entries)
    }

    /// Found by `random_trees_match`: the metadata area's last inode ended exactly at
    /// the image's end, and fsck.erofs (1.5) read its xattr header past the end.
    #[test]
    fn an_image_whose_last_inode_ends_a_block_passes_fsck() {
        if !prerequisites() {
            return;
        }
        use Op::*;
        let ops = vec![
            Fifo(84, 36),
            Fifo(9, 0),
            Symlink(30, 192),
            Xattr(32, 149),
            Xattr(4, 238),
            File(144, 0, 1953, 13),
            Fifo(33, 1),
            File(1, 2, 14849, 124),
            Fifo(123, 10),
            Whiteout(73, 11),
            Fifo(12, 253),
            File(91, 0, 11105, 56),
            Symlink(0, 24),
            Whiteout(43, 1),
            File(20, 1, 470, 199),
            Hardlink(31, 0),
            Fifo(123, 31),
            File(37, 4, 40129, 252),
            Fifo(0, 198),
            Opaque(3),
            File(105, 245, 0, 54),
        ];
        let work = tempfile::tempdir().unwrap();
        check_against_unpack(&tar_from(&ops), work.path(), true);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Random trees: where the old unpacker accepts the tar, the image
        /// walks the same; where it refuses, so does the writer.
        #[test]
        fn random_trees_match(ops in proptest::collection::vec(op(), 1..60)) {
            if !prerequisites() {
                return Ok(());
            }
            let tar = tar_from(&ops);
            let probe = tempfile::tempdir().unwrap();
            let old = unpack::unpack(&tar[..], probe.path(), &Limits::default());
            let work = tempfile::tempdir().unwrap();
            if old.is_err() {
                let r = build(&tar, &Limits::default(), &work.path().join("x.erofs"));
                prop_assert!(r.is_err(), "unpacker refused, writer accepted");
                return Ok(());
            }
            check_against_unpack(&tar, work.path(), true);
        }

        /// Arbitrary bytes never panic the writer.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let work = tempfile::tempdir().unwrap();
            let _ = build(&data, &Limits::default(), &work.path().join("x.erofs"));
        }
    }
}
