//! Against a real registry (Debian's docker-registry, the CNCF distribution
//! server) on a loopback port, with skopeo and umoci round trips.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_image::registry::{self, RegistryOptions};
use skiff_image::{archive, Reference, Store};

struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start(basic: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = basic {
            let hash = bcrypt::hash(p, 4).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{u}:{hash}\n")).unwrap();
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn ready() -> bool {
    require("root (layer conversion)", is_root())
        && require("mkfs.erofs (erofs-utils)", have_tool("mkfs.erofs"))
        && require("docker-registry", have_tool("docker-registry"))
        && require("skopeo", have_tool("skopeo"))
}

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    (d, s)
}

fn opts() -> RegistryOptions {
    RegistryOptions {
        progress: false,
        auth_file: Some(PathBuf::from("/nonexistent")),
        ..Default::default()
    }
}

/// The image ID (config digest) of the single image in a layout we wrote.
fn layout_id(dir: &Path) -> skiff_image::Digest {
    let (_d, s) = store();
    archive::load(&s, dir).unwrap()[0].image.id.clone()
}

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A three-layer image (gzip, zstd, plain) with a whiteout, as an OCI layout.
fn sample_layout(dir: &Path, tag: &str, extra: &str) -> String {
    sample_layout_with(dir, tag, extra, ["gzip", "zstd", "tar"])
}

fn sample_layout_with(dir: &Path, tag: &str, extra: &str, c: [&'static str; 3]) -> String {
    let base = tar_of(&[
        E::Dir("etc/"),
        E::File("etc/base", b"base"),
        E::File("etc/old", b"old"),
    ]);
    let mid = tar_of(&[
        E::File("etc/.wh.old", b""),
        E::File("mid", extra.as_bytes()),
    ]);
    let top = tar_of(&[E::File("top", b"top")]);
    write_layout(
        dir,
        &[
            TestLayer {
                tar: base,
                compression: c[0],
            },
            TestLayer {
                tar: mid,
                compression: c[1],
            },
            TestLayer {
                tar: top,
                compression: c[2],
            },
        ],
        tag,
        "sh",
    )
}

#[test]
fn skopeo_copy_then_skiff_pull_by_tag_and_digest() {
    if !ready() {
        return;
    }
    let reg = Registry::start(None);
    let lay = tempfile::tempdir().unwrap();
    sample_layout(lay.path(), "v1", "one");
    let dest = format!("docker://{}/test/sample:v1", reg.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", lay.path().display()),
        &dest,
    ]);

    let (_d, s) = store();
    let r = Reference::parse(&format!("{}/test/sample:v1", reg.host())).unwrap();
    let p = registry::pull(&s, &r, &opts()).unwrap();
    assert_eq!(p.image.id, layout_id(lay.path()));
    let md = p.image.manifest_digest.to_string();
    assert_eq!(p.layers_fetched, 3);
    assert_eq!(s.layer_disks(&p.image).unwrap().len(), 3);
    // Pulling again fetches nothing.
    let again = registry::pull(&s, &r, &opts()).unwrap();
    assert_eq!((again.layers_fetched, again.downloaded_bytes), (0, 0));
    // By digest, and found by name@digest afterwards.
    let by_digest = Reference::parse(&format!("{}/test/sample@{md}", reg.host())).unwrap();
    let p2 = registry::pull(&s, &by_digest, &opts()).unwrap();
    assert_eq!(p2.image.id, p.image.id);
    assert_eq!(s.image(&by_digest.to_string()).unwrap().id, p.image.id);
}

#[test]
fn skiff_push_with_basic_auth_then_skopeo_inspect() {
    if !ready() {
        return;
    }
    let reg = Registry::start(Some(("alice", "s3cret")));
    let (_d, s) = store();
    let lay = tempfile::tempdir().unwrap();
    let md = sample_layout(lay.path(), "v1", "push");
    let loaded = archive::load(&s, lay.path()).unwrap();
    assert_eq!(loaded.len(), 1);
    let id = loaded[0].image.id.clone();
    let dest = Reference::parse(&format!("{}/team/app:2", reg.host())).unwrap();
    s.tag(id.as_str(), &dest.to_string()).unwrap();

    // No credentials: refused with a clear error.
    let e = registry::push(&s, &dest.to_string(), &dest, &opts()).unwrap_err();
    assert!(e.to_string().contains("credentials"), "{e}");

    let authdir = tempfile::tempdir().unwrap();
    let auth_file = authdir.path().join("config.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let o = RegistryOptions {
        auth_file: Some(auth_file.clone()),
        ..opts()
    };
    let pushed = registry::push(&s, &dest.to_string(), &dest, &o).unwrap();
    assert_eq!(pushed.as_str(), md);

    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:s3cret",
        &format!("docker://{}/team/app:2", reg.host()),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], md);
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3);

    // And back: a fresh store pulls it with the same credentials.
    let (_d2, s2) = store();
    let p = registry::pull(&s2, &dest, &o).unwrap();
    assert_eq!(p.image.id, id);
}

#[test]
fn index_selects_linux_amd64() {
    if !ready() {
        return;
    }
    let reg = Registry::start(None);
    let lay = tempfile::tempdir().unwrap();
    let amd = sample_layout(lay.path(), "amd", "amd64");
    // Rewrite index.json into a nested image index with two platforms.
    let arm_dir = tempfile::tempdir().unwrap();
    let arm = sample_layout(arm_dir.path(), "arm", "arm64");
    for e in std::fs::read_dir(arm_dir.path().join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(
            e.path(),
            lay.path().join("blobs/sha256").join(e.file_name()),
        )
        .unwrap();
    }
    let size = |d: &str| {
        std::fs::metadata(lay.path().join("blobs/sha256").join(&d[7..]))
            .unwrap()
            .len()
    };
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": size(&arm), "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": size(&amd), "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }))
    .unwrap();
    let idx_hex = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&idx));
    std::fs::write(lay.path().join("blobs/sha256").join(&idx_hex), &idx).unwrap();
    std::fs::write(
        lay.path().join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{idx_hex}"), "size": idx.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
        .unwrap(),
    )
    .unwrap();
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", lay.path().display()),
        &format!("docker://{}/test/multi:latest", reg.host()),
    ]);
    let (_d, s) = store();
    let r = Reference::parse(&format!("{}/test/multi", reg.host())).unwrap();
    let p = registry::pull(&s, &r, &opts()).unwrap();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lay.path().join("blobs/sha256").join(&amd[7..])).unwrap(),
    )
    .unwrap();
    let amd_config = m["config"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(p.image.id.as_str(), amd_config, "linux/amd64 chosen");

    // skiff also loads the nested index from the layout directly.
    let (_d2, s2) = store();
    let l = archive::load(&s2, lay.path()).unwrap();
    assert_eq!(l[0].image.manifest_digest.as_str(), amd);
}

#[test]
fn concurrent_pulls_share_layers() {
    if !ready() {
        return;
    }
    let reg = Registry::start(None);
    for (name, extra) in [("a", "first"), ("b", "second")] {
        let lay = tempfile::tempdir().unwrap();
        sample_layout(lay.path(), "v1", extra);
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", lay.path().display()),
            &format!("docker://{}/test/{name}:v1", reg.host()),
        ]);
    }
    let (d, _s) = store();
    let root = d.path().to_path_buf();
    std::thread::scope(|sc| {
        for name in ["a", "b", "a", "b"] {
            let (root, host) = (root.clone(), reg.host());
            sc.spawn(move || {
                let s = Store::open(root).unwrap();
                let r = Reference::parse(&format!("{host}/test/{name}:v1")).unwrap();
                registry::pull(&s, &r, &opts()).unwrap();
            });
        }
    });
    // Base and top layers are shared; the middle differs: 4 layers, 4 disks.
    let count = |dir: &str, ext: Option<&str>| {
        std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter(|e| {
                ext.is_none_or(|x| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|e| e == x)
                })
            })
            .count()
    };
    assert_eq!(count("layers", Some("erofs")), 4);
    // 4 layer blobs + 2 configs + 2 manifests.
    assert_eq!(count("blobs/sha256", None), 8);
}

#[test]
fn skiff_save_read_by_skopeo_and_umoci_layout_loaded() {
    if !ready() || !require("umoci", have_tool("umoci")) {
        return;
    }
    let (_d, s) = store();
    let lay = tempfile::tempdir().unwrap();
    let md = sample_layout_with(lay.path(), "v1", "save", ["gzip", "gzip", "tar"]);
    let loaded = archive::load(&s, lay.path()).unwrap();
    s.tag(loaded[0].image.id.as_str(), "saved/app:v1").unwrap();
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("img.tar");
    let mut f = std::fs::File::create(&tar).unwrap();
    archive::save(&s, &["saved/app:v1".into()], &mut f).unwrap();
    drop(f);
    let v: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("oci-archive:{}", tar.display()),
    ]))
    .unwrap();
    assert_eq!(v["Digest"], md);
    let v: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("docker-archive:{}", tar.display()),
    ]))
    .unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3);

    // skopeo copies our archive to a layout; umoci adds a layer; skiff loads it.
    let oci = out.path().join("layout");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", tar.display()),
        &format!("oci:{}:v1", oci.display()),
    ]);
    let bundle = out.path().join("bundle");
    let run = |args: &[&str]| {
        let o = Command::new("umoci").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let img = format!("{}:v1", oci.display());
    run(&["unpack", "--image", &img, bundle.to_str().unwrap()]);
    std::fs::write(bundle.join("rootfs/added-by-umoci"), b"u").unwrap();
    std::fs::remove_file(bundle.join("rootfs/top")).unwrap();
    run(&[
        "repack",
        "--image",
        &format!("{}:v2", oci.display()),
        bundle.to_str().unwrap(),
    ]);
    let (_d2, s2) = store();
    let l = archive::load(&s2, &oci).unwrap();
    assert_eq!(l.len(), 2);
    let v2 = l
        .iter()
        .find(|x| x.image.layers.len() == 4)
        .expect("umoci's image has 4 layers");
    let disks = s2.layer_disks(&v2.image).unwrap();
    assert_eq!(disks.len(), 4);

    // docker-archive written by skopeo (legacy layout) loads too, with its tag.
    let da = out.path().join("docker.tar");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", tar.display()),
        &format!("docker-archive:{}:legacy/app:v9", da.display()),
    ]);
    let (_d3, s3) = store();
    let l = archive::load(&s3, &da).unwrap();
    assert_eq!(l[0].names[0].to_string(), "docker.io/legacy/app:v9");
    assert_eq!(l[0].image.layers.len(), 3);
}
