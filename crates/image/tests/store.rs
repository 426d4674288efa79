//! The store end to end, offline: import, the busybox starter, save/load
//! round trips, commit with whiteouts, rmi/prune/GC and container users.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

use std::os::unix::fs::MetadataExt;

use skiff_image::{archive, busybox, commit, Error, Store};

fn ready() -> bool {
    require("root (layer conversion)", is_root())
        && require("mkfs.erofs (erofs-utils)", have_tool("mkfs.erofs"))
}

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    (d, s)
}

fn blob_count(s: &Store) -> usize {
    std::fs::read_dir(s.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn import_tag_rmi_and_gc() {
    if !ready() {
        return;
    }
    let (_d, s) = store();
    let tar = tar_of(&[E::Dir("etc/"), E::File("etc/hello", b"hi")]);
    let img = archive::import(
        &s,
        Box::new(std::io::Cursor::new(gzip(&tar))),
        &[skiff_image::Reference::parse("demo:1").unwrap()],
    )
    .unwrap();
    assert_eq!(img.layers.len(), 1);
    // Stored uncompressed: the digest is the diff_id.
    assert_eq!(img.layers[0].digest, img.layers[0].diff_id);
    let disks = s.layer_disks(&img).unwrap();
    assert!(disks[0].is_file());
    assert_eq!(s.image("demo:1").unwrap().id, img.id);
    assert_eq!(s.image(&img.id.short()[..6]).unwrap().id, img.id);
    s.tag("demo:1", "other/name:2").unwrap();
    assert_eq!(s.image("docker.io/other/name:2").unwrap().id, img.id);

    // In use by a container: rmi by ID refuses; untagging by name still works.
    s.use_image("c1", "demo:1").unwrap();
    let e = s.remove(img.id.as_str(), false).unwrap_err();
    assert!(matches!(e, Error::ImageMultiplyTagged(_)), "{e}");
    s.remove("other/name:2", false).unwrap();
    let e = s.remove(img.id.as_str(), false).unwrap_err();
    assert!(matches!(e, Error::ImageInUse { .. }), "{e}");
    s.release_image("c1").unwrap();
    let out = s.remove("demo:1", false).unwrap();
    assert!(
        out.iter().any(|l| l.starts_with("Deleted: sha256:")),
        "{out:?}"
    );
    assert!(matches!(s.image("demo:1"), Err(Error::ImageNotFound(_))));
    assert_eq!(blob_count(&s), 0, "GC left blobs behind");
    assert!(!disks[0].exists(), "GC left the layer disk");
}

#[test]
fn busybox_is_deterministic_and_round_trips_through_save() {
    if !ready()
        || !require(
            "/bin/busybox (busybox-static)",
            std::path::Path::new("/bin/busybox").is_file(),
        )
    {
        return;
    }
    let (_d, s) = store();
    let a = busybox::build(&s, "/bin/busybox".as_ref(), "busybox:latest").unwrap();
    let b = busybox::build(&s, "/bin/busybox".as_ref(), "busybox:latest").unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(
        a.config.config().as_ref().unwrap().cmd().as_ref().unwrap(),
        &vec!["sh".to_string()]
    );

    let mut out = Vec::new();
    archive::save(&s, &["busybox".into()], &mut out).unwrap();
    let (_d2, s2) = store();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bb.tar");
    std::fs::write(&path, &out).unwrap();
    let loaded = archive::load(&s2, &path).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].image.id, a.id);
    assert_eq!(
        loaded[0].names[0].to_string(),
        "docker.io/library/busybox:latest"
    );
    // Byte-identical blobs.
    for l in &a.layers {
        assert_eq!(
            std::fs::read(s.blob_path(&l.digest)).unwrap(),
            std::fs::read(s2.blob_path(&l.digest)).unwrap()
        );
    }
    assert_eq!(loaded[0].image.manifest_digest, a.manifest_digest);
}

#[test]
fn hostile_import_leaves_nothing() {
    if !ready() {
        return;
    }
    let (_d, s) = store();
    let tar = tar_of(&[E::File("../evil", b"x")]);
    let e = archive::import(&s, Box::new(std::io::Cursor::new(tar)), &[]).unwrap_err();
    assert!(matches!(e, Error::HostileLayer(_)), "{e}");
    assert_eq!(blob_count(&s), 0);
    assert_eq!(std::fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(s.root().join("layers")).unwrap().count(),
        0
    );
}

#[test]
fn commit_turns_overlay_upper_into_whiteouts() {
    if !ready() {
        return;
    }
    let (_d, s) = store();
    let base = tar_of(&[
        E::Dir("etc/"),
        E::File("etc/a", b"a"),
        E::Dir("opq/"),
        E::File("opq/old", b"o"),
    ]);
    archive::import(
        &s,
        Box::new(std::io::Cursor::new(base)),
        &[skiff_image::Reference::parse("base").unwrap()],
    )
    .unwrap();

    // The layer tar the guest's agent streams for an upper dir: a deletion, an
    // opaque directory, a hardlink pair.
    let layer = tar_of(&[
        E::Dir("etc/"),
        E::File("etc/.wh.a", b""),
        E::Dir("opq/"),
        E::File("opq/.wh..wh..opq", b""),
        E::File("opq/new", b"n"),
        E::File("f1", b"same"),
        E::Hardlink("f2", "f1"),
        E::Char("dev-null", 1, 3),
        E::FileMode("suid", b"#!/bin/sh\n", 0o4755, 0, 0),
    ]);
    let change = commit::ConfigChange {
        cmd: Some(vec!["/bin/true".into()]),
        env: vec!["A=1".into()],
        created_by: "skiff commit".into(),
        ..Default::default()
    };
    let img = commit::commit(&s, "base", &mut &layer[..], &change, Some("derived:1")).unwrap();
    assert_eq!(img.layers.len(), 2);
    let cfg = img.config.config().as_ref().unwrap();
    assert_eq!(cfg.cmd().as_ref().unwrap(), &vec!["/bin/true".to_string()]);
    assert!(cfg.env().as_ref().unwrap().contains(&"A=1".to_string()));
    let disks = s.layer_disks(&img).unwrap();
    assert_eq!(disks.len(), 2);
    // The base layer disk is shared with the parent image.
    assert_eq!(
        disks[0],
        s.layer_disks(&s.image("base").unwrap()).unwrap()[0]
    );
    assert!(std::fs::metadata(&disks[1]).unwrap().size() > 0);
}

#[test]
fn a_hostile_commit_stream_is_refused_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let (_d, s) = store();
    let base = tar_of(&[E::File("a", b"a")]);
    archive::import(
        &s,
        Box::new(std::io::Cursor::new(base)),
        &[skiff_image::Reference::parse("base").unwrap()],
    )
    .unwrap();
    let blobs = blob_count(&s);
    let images = s.images().unwrap().len();
    let change = commit::ConfigChange::default();
    for (what, layer) in [
        ("dot-dot", tar_of(&[E::File("../escape", b"x")])),
        ("absolute", tar_of(&[E::File("/etc/shadow", b"x")])),
        (
            "foreign hardlink",
            tar_of(&[E::Hardlink("x", "/etc/shadow")]),
        ),
        (
            "hardlink forward",
            tar_of(&[E::Hardlink("x", "later"), E::File("later", b"")]),
        ),
        ("bad whiteout", tar_of(&[E::File(".wh..", b"")])),
        ("garbage", vec![0x5a; 4096]),
    ] {
        let e = commit::commit(&s, "base", &mut &layer[..], &change, Some("bad:1")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::HostileStream(_) | Error::Malformed { .. } | Error::Io { .. }
            ),
            "{what}: {e}"
        );
        assert_eq!(blob_count(&s), blobs, "{what}");
        assert_eq!(s.images().unwrap().len(), images, "{what}");
    }
}

#[test]
fn concurrent_imports_of_one_layer_store_it_once() {
    if !ready() {
        return;
    }
    let (_d, s) = store();
    let root = s.root().to_path_buf();
    let tar = tar_of(&[E::File("shared", &vec![7u8; 1 << 20])]);
    std::thread::scope(|sc| {
        for i in 0..4 {
            let (root, tar) = (root.clone(), tar.clone());
            sc.spawn(move || {
                let s = Store::open(root).unwrap();
                archive::import(
                    &s,
                    Box::new(std::io::Cursor::new(tar)),
                    &[skiff_image::Reference::parse(&format!("img{i}")).unwrap()],
                )
                .unwrap();
            });
        }
    });
    assert_eq!(
        std::fs::read_dir(root.join("layers"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "erofs"))
            .count(),
        1
    );
    // Each import writes a config with its own creation time, so imports that straddle
    // a second boundary are different images (as with `docker import`); what must be
    // shared is the layer: one blob and one layer disk, whatever the timing.
    let images: Vec<_> = (0..4)
        .map(|i| s.image(&format!("img{i}")).unwrap())
        .collect();
    let diff_ids: std::collections::BTreeSet<_> = images
        .iter()
        .map(|img| img.layers[0].diff_id.clone())
        .collect();
    assert_eq!(diff_ids.len(), 1, "same content, same layer");
    let distinct: std::collections::BTreeSet<_> = images.iter().map(|img| img.id.clone()).collect();
    // One layer blob, plus a config and a manifest per distinct image.
    assert_eq!(
        std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .count(),
        1 + 2 * distinct.len()
    );
}

#[test]
fn sparse_layers_give_sparse_disks() {
    if !ready() {
        return;
    }
    let (_d, s) = store();
    let mut data = vec![0u8; 32 << 20];
    data[0] = 1;
    let tar = tar_of(&[E::File("sparse", &data)]);
    let img = archive::import(&s, Box::new(std::io::Cursor::new(tar)), &[]).unwrap();
    let disk = &s.layer_disks(&img).unwrap()[0];
    let m = std::fs::metadata(disk).unwrap();
    assert!(
        m.blocks() * 512 < 4 << 20,
        "layer disk uses {} bytes",
        m.blocks() * 512
    );
}

#[test]
fn hostile_archive_symlink_is_refused() {
    if !ready() {
        return;
    }
    let (_d, s) = store();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.tar");
    let tar = tar_of(&[
        E::File("oci-layout", b"{}"),
        E::Symlink("index.json", "/etc/passwd"),
    ]);
    std::fs::write(&path, tar).unwrap();
    let e = archive::load(&s, &path).unwrap_err();
    assert!(matches!(e, Error::HostileLayer(_)), "{e}");
}

#[test]
fn crash_leftovers_are_harmless_and_collected() {
    if !ready() {
        return;
    }
    let (_d, s) = store();
    let tar = tar_of(&[E::File("keep", b"k")]);
    let img = archive::import(
        &s,
        Box::new(std::io::Cursor::new(tar)),
        &[skiff_image::Reference::parse("keep").unwrap()],
    )
    .unwrap();
    // What a crash at various points leaves: a half-written ingest file, a
    // scratch tree, an unreferenced blob and layer disk, a stale lock file.
    let root = s.root();
    std::fs::write(root.join("ingest/.tmpXYZ"), b"half").unwrap();
    std::fs::create_dir_all(root.join("tmp/.tmpABC/root/etc")).unwrap();
    let orphan = s.put_blob(b"orphan").unwrap();
    std::fs::write(root.join(format!("layers/{}.erofs", "d".repeat(64))), b"x").unwrap();
    std::fs::write(root.join("layers/stale.lock"), b"").unwrap();
    // The store still works (a fresh handle, as after a restart) ...
    let s2 = Store::open(root).unwrap();
    assert_eq!(s2.image("keep").unwrap().id, img.id);
    // ... and GC removes exactly the leftovers.
    assert!(s2.gc().unwrap() > 0);
    assert!(!s2.has_blob(&orphan));
    assert_eq!(std::fs::read_dir(root.join("ingest")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    let layers: Vec<_> = std::fs::read_dir(root.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(layers.len(), 1, "{layers:?}");
    assert!(s2.layer_disks(&s2.image("keep").unwrap()).unwrap()[0].is_file());
    // A layer disk deleted by hand is rebuilt on demand.
    std::fs::remove_file(&s2.layer_disks(&img).unwrap()[0]).unwrap();
    assert!(s2.layer_disks(&img).unwrap()[0].is_file());
}
