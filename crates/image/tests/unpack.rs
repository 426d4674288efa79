//! The layer unpacker: whiteout translation, metadata, and hostile tars.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use skiff_image::{unpack, Error, Limits};

fn unpack_into(tar: &[u8], limits: &Limits) -> (tempfile::TempDir, skiff_image::Result<()>) {
    let d = tempfile::tempdir().unwrap();
    let r = unpack::unpack(tar, d.path(), limits).map(|_| ());
    (d, r)
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

#[test]
fn translates_whiteouts_and_keeps_metadata() {
    if !require("root (mknod, chown, trusted xattrs)", is_root()) {
        return;
    }
    let tar = tar_of(&[
        E::Dir("./etc/"),
        E::FileMode("./etc/shadow", b"secret", 0o4640, 1000, 42),
        E::Hardlink("./etc/shadow-link", "./etc/shadow"),
        E::Symlink("./bin", "/usr/bin"),
        E::File("./usr/lib/implicit/parents", b"x"),
        E::File("./opaque/.wh..wh..opq", b""),
        E::File("./etc/.wh.gone", b""),
        E::Char("./dev/null", 1, 3),
        E::Fifo("./run/fifo"),
        E::Xattr("./cap", "user.test", b"v1"),
    ]);
    let (d, r) = unpack_into(&tar, &Limits::default());
    r.unwrap();
    let p = d.path();
    let m = std::fs::metadata(p.join("etc/shadow")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4640, 1000, 42));
    assert_eq!(m.nlink(), 2);
    assert_eq!(
        std::fs::read_link(p.join("bin")).unwrap(),
        Path::new("/usr/bin")
    );
    assert_eq!(
        std::fs::read(p.join("usr/lib/implicit/parents")).unwrap(),
        b"x"
    );
    assert_eq!(
        xattr(&p.join("opaque"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!p.join("opaque/.wh..wh..opq").exists());
    let w = std::fs::symlink_metadata(p.join("etc/gone")).unwrap();
    assert!(w.file_type().is_char_device());
    assert_eq!(w.rdev(), 0);
    let n = std::fs::symlink_metadata(p.join("dev/null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), libc::makedev(1, 3));
    assert!(std::fs::symlink_metadata(p.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        xattr(&p.join("cap"), "user.test").as_deref(),
        Some(&b"v1"[..])
    );
}

#[test]
fn sparse_files_stay_sparse() {
    let mut data = vec![0u8; 8 << 20];
    data[0] = 1;
    let last = data.len() - 1;
    data[last] = 2;
    let tar = tar_of(&[E::File("big", &data)]);
    let (d, r) = unpack_into(&tar, &Limits::default());
    if !is_root() {
        assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
        return;
    }
    r.unwrap();
    let m = std::fs::metadata(d.path().join("big")).unwrap();
    assert_eq!(m.len(), 8 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "allocated {} blocks",
        m.blocks()
    );
    assert_eq!(std::fs::read(d.path().join("big")).unwrap(), data);
}

fn assert_hostile(name: &str, tar: &[u8], limits: &Limits) {
    let (d, r) = unpack_into(tar, limits);
    match r {
        Err(Error::HostileLayer(_) | Error::LimitExceeded(_)) => {}
        other => panic!("{name}: expected refusal, got {other:?}"),
    }
    // Nothing escaped next to the target directory.
    let parent = d.path().parent().unwrap();
    assert!(!parent.join("escaped").exists(), "{name}: wrote outside");
}

#[test]
fn hostile_corpus_is_refused() {
    let lim = Limits::default();
    for (name, tar) in hostile_tars() {
        assert_hostile(name, &tar, &lim);
    }

    // Decompression bomb: 64 MiB of zeros behind a small gzip, with a 16 MiB cap.
    let small = Limits {
        max_layer_uncompressed: 16 << 20,
        ..Limits::default()
    };
    let bomb = gzip(&tar_of(&[E::File("zeros", &vec![0u8; 64 << 20])]));
    assert!(bomb.len() < 1 << 20);
    let d = tempfile::tempdir().unwrap();
    let r = unpack::unpack(flate2::read::GzDecoder::new(&bomb[..]), d.path(), &small);
    assert!(
        matches!(r, Err(Error::LimitExceeded(_))),
        "{:?}",
        r.map(|_| ())
    );

    let many = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<E> = names.iter().map(|n| E::File(n, b"")).collect();
    assert_hostile("too many entries", &tar_of(&entries), &many);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the unpacker or write outside.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let (d, _) = unpack_into(&data, &Limits::default());
            prop_assert!(!d.path().parent().unwrap().join("escaped").exists());
        }

        /// Mutations of a valid tar never panic and never escape.
        #[test]
        fn mutated_tars_never_escape(
            flips in proptest::collection::vec((0usize..3072, any::<u8>()), 1..16)
        ) {
            let mut t = tar_of(&[
                E::Dir("d/"),
                E::File("d/f", b"hello"),
                E::Symlink("s", "d"),
                E::Hardlink("h", "d/f"),
            ]);
            for (i, b) in flips {
                let i = i % t.len();
                t[i] = b;
            }
            let (d, _) = unpack_into(&t, &Limits::default());
            prop_assert!(!d.path().parent().unwrap().join("escaped").exists());
        }
    }
}
