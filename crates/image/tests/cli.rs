//! The image commands end to end through the stand-in binary
//! (`examples/skiff-image.rs`, which compiles `crates/cli/src/image_cmds.rs`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> PathBuf {
    // target/<profile>/deps/cli-<hash> -> target/<profile>/examples/skiff-image
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/skiff-image")
}

fn skiff(root: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(root: &Path, args: &[&str]) -> String {
    let (code, out, err) = skiff(root, args);
    assert_eq!(code, 0, "skiff {args:?}: {err}");
    out
}

#[test]
fn image_commands() {
    if !require("root (layer conversion)", is_root())
        || !require("mkfs.erofs", have_tool("mkfs.erofs"))
        || !require(
            "/bin/busybox (busybox-static)",
            Path::new("/bin/busybox").is_file(),
        )
    {
        return;
    }
    if !bin().is_file() {
        panic!(
            "{} missing: build with `cargo test` (examples are built with tests)",
            bin().display()
        );
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("store");
    let id = ok(&root, &["image", "build-busybox"]).trim().to_owned();
    assert!(id.starts_with("sha256:"), "{id}");
    let out = ok(&root, &["images"]);
    assert!(out.starts_with("REPOSITORY"), "{out}");
    assert!(out.contains("busybox") && out.contains(&id[7..19]), "{out}");
    ok(&root, &["tag", "busybox", "example.com/me/box:2"]);
    let q = ok(&root, &["images", "-q"]);
    assert_eq!(q.trim(), &id[7..19], "one ID even with two tags");
    let json = ok(&root, &["images", "--format", "json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .any(|r| r["Repository"] == "example.com/me/box" && r["Tag"] == "2"));
    let digests = ok(&root, &["images", "--digests"]);
    assert!(digests.lines().next().unwrap().contains("DIGEST"));
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&root, &["image", "inspect", "busybox"])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "sh");
    let hist = ok(&root, &["image", "history", "busybox"]);
    assert!(hist.contains("build-busybox"), "{hist}");
    let df = ok(&root, &["system", "df", "-v"]);
    assert!(df.contains("Images") && df.contains("UNIQUE SIZE"), "{df}");

    // rmi of an image with two tags by ID refuses without -f.
    let (code, _, err) = skiff(&root, &["rmi", &id]);
    assert_ne!(code, 0);
    assert!(err.contains("-f"), "{err}");

    let archive = d.path().join("bb.tar");
    ok(&root, &["save", "-o", archive.to_str().unwrap(), "busybox"]);
    ok(&root, &["rmi", "-f", &id]);
    assert_eq!(ok(&root, &["images", "-q"]).trim(), "");
    let loaded = ok(&root, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded.trim(), "Loaded image: busybox:latest");

    let rootfs = d.path().join("rootfs.tar");
    std::fs::write(&rootfs, tar_of(&[E::File("hello", b"world")])).unwrap();
    let imported = ok(&root, &["import", rootfs.to_str().unwrap(), "imported:1"]);
    assert!(imported.starts_with("sha256:"));
    let pruned = ok(&root, &["image", "prune", "-a", "-f"]);
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(ok(&root, &["images", "-q"]).trim(), "");

    // Errors are one clear line and a non-zero exit.
    let (code, _, err) = skiff(&root, &["image", "inspect", "nosuch"]);
    assert_ne!(code, 0);
    assert!(err.contains("no such image"), "{err}");
}
