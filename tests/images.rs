//! The image commands end to end through the real `skiff` binary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use skiff_tests::{prerequisite, skiff_bin};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn require(what: &str, ok: bool) -> bool {
    prerequisite(
        "image_commands",
        if ok {
            Ok(())
        } else {
            Err(format!("{what} is missing"))
        },
    )
}

fn skiff(root: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(skiff_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SKIFF_PLUGINS_CONFIG")
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
    if !require("the skiff binary", skiff_bin().is_file()) {
        return;
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
    let tree = d.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("hello"), b"world").unwrap();
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&rootfs)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
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
