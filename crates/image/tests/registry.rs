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

enum Auth<'a> {
    Basic((&'a str, &'a str)),
    Token { realm: String, cert: PathBuf },
}

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
        Self::start_with(basic.map(Auth::Basic))
    }

    fn start_with(auth: Option<Auth>) -> Registry {
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
        match auth {
            Some(Auth::Basic((u, p))) => {
                let hash = bcrypt::hash(p, 4).unwrap();
                std::fs::write(dir.path().join("htpasswd"), format!("{u}:{hash}\n")).unwrap();
                cfg += &format!(
                    "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                );
            }
            Some(Auth::Token { realm, cert }) => {
                cfg += &format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: skiff-test\n    issuer: skiff-test-issuer\n    rootcertbundle: {}\n",
                    cert.display()
                );
            }
            None => {}
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

/// A token server for the registry's `auth: token` mode: checks basic
/// credentials and issues ES256 JWTs whose x5c header carries a self-signed
/// certificate that the registry trusts.
struct TokenServer {
    port: u16,
    cert_pem: PathBuf,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    fn start(user: &'static str, pass: &'static str) -> TokenServer {
        use std::io::{BufRead, BufReader, Write};
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &p("key.pem"),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &p("key.pem"),
            "-outform",
            "DER",
            "-out",
            &p("key.p8"),
        ]);
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            &p("key.pem"),
            "-out",
            &p("cert.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=skiff-test-token",
        ]);
        openssl(&[
            "x509",
            "-in",
            &p("cert.pem"),
            "-outform",
            "DER",
            "-out",
            &p("cert.der"),
        ]);
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &std::fs::read(p("key.p8")).unwrap(),
            &rng,
        )
        .unwrap();
        let cert_der = std::fs::read(p("cert.der")).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = issued.clone();
        std::thread::spawn(move || {
            use base64::Engine as _;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let mut authz = String::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authz = v.trim().to_owned();
                        }
                    }
                }
                if authz != want {
                    let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let query = path.split_once('?').map_or("", |(_, q)| q);
                let mut access = Vec::new();
                for kv in query.split('&') {
                    if let Some(v) = kv.strip_prefix("scope=") {
                        let v = percent_decode(v);
                        let mut parts = v.splitn(3, ':');
                        let (t, name, actions) = (
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or(""),
                        );
                        access.push(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "ES256",
                    "x5c": [base64::engine::general_purpose::STANDARD.encode(&cert_der)]});
                let claims = serde_json::json!({"iss": "skiff-test-issuer", "sub": user, "aud": "skiff-test",
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}"), "access": access});
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let sig = key.sign(&rng, signing_input.as_bytes()).unwrap();
                let jwt = format!("{signing_input}.{}", b64url(sig.as_ref()));
                let body = serde_json::json!({"token": jwt, "access_token": jwt}).to_string();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = conn.write_all(
                    format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
                );
            }
        });
        TokenServer {
            port,
            cert_pem: dir.path().join("cert.pem"),
            issued,
            _dir: dir,
        }
    }
}

#[test]
fn token_auth_push_and_pull() {
    if !ready() || !require("openssl", have_tool("openssl")) {
        return;
    }
    let ts = TokenServer::start("bob", "hunter2");
    let reg = Registry::start_with(Some(Auth::Token {
        realm: format!("http://127.0.0.1:{}/token", ts.port),
        cert: ts.cert_pem.clone(),
    }));
    let (_d, s) = store();
    let lay = tempfile::tempdir().unwrap();
    sample_layout(lay.path(), "v1", "token");
    let id = archive::load(&s, lay.path()).unwrap()[0].image.id.clone();
    let dest = Reference::parse(&format!("{}/secure/app:1", reg.host())).unwrap();
    s.tag(id.as_str(), &dest.to_string()).unwrap();

    let authdir = tempfile::tempdir().unwrap();
    let auth_file = authdir.path().join("config.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"username":"bob","password":"hunter2"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let o = RegistryOptions {
        auth_file: Some(auth_file),
        ..opts()
    };
    registry::push(&s, &dest.to_string(), &dest, &o).unwrap();
    assert!(ts.issued.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "bob:hunter2",
        &format!("docker://{}", dest),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3);

    let (_d2, s2) = store();
    assert_eq!(registry::pull(&s2, &dest, &o).unwrap().image.id, id);
    // Wrong password: the token server refuses, the pull fails cleanly.
    let bad = authdir.path().join("bad.json");
    std::fs::write(
        &bad,
        format!(
            r#"{{"auths":{{"{}":{{"username":"bob","password":"x"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let (_d3, s3) = store();
    let e = registry::pull(
        &s3,
        &dest,
        &RegistryOptions {
            auth_file: Some(bad),
            ..opts()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
}

#[test]
fn docker_v2s2_media_types_pull() {
    if !ready() {
        return;
    }
    let reg = Registry::start(None);
    let lay = tempfile::tempdir().unwrap();
    sample_layout_with(lay.path(), "v1", "docker", ["gzip", "gzip", "gzip"]);
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", lay.path().display()),
        &format!("docker://{}/test/docker:v1", reg.host()),
    ]);
    let (_d, s) = store();
    let r = Reference::parse(&format!("{}/test/docker:v1", reg.host())).unwrap();
    let p = registry::pull(&s, &r, &opts()).unwrap();
    let mt = p.image.manifest.media_type().as_ref().unwrap().to_string();
    assert_eq!(mt, "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(
        p.image.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(s.layer_disks(&p.image).unwrap().len(), 3);
    assert_eq!(p.image.id, layout_id(lay.path()));
    // Pushing it elsewhere keeps the Docker manifest byte for byte.
    let dest = Reference::parse(&format!("{}/copy/docker:v1", reg.host())).unwrap();
    let pushed = registry::push(&s, &r.to_string(), &dest, &opts()).unwrap();
    assert_eq!(pushed, p.image.manifest_digest);
}
