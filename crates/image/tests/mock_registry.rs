//! The registry client against a scripted in-process HTTP server: bearer
//! token auth, resuming an interrupted blob download with a Range request,
//! blob GETs redirected to storage elsewhere (which must not see the
//! registry's token), error bodies in messages, and a registry that serves
//! the wrong bytes for a digest.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use skiff_image::registry::{self, RegistryOptions};
use skiff_image::{Error, Reference, Store};

#[derive(Default)]
struct Script {
    blobs: HashMap<String, Vec<u8>>,
    manifest: Vec<u8>,
    /// Blob whose first full download is cut in the middle.
    cut: Option<String>,
    /// Blob served with corrupted bytes.
    corrupt: Option<String>,
    /// Blob GETs answer with a redirect to `/storage/` on another host name.
    redirect: bool,
    token_requests: AtomicUsize,
    range_requests: Mutex<Vec<String>>,
    /// The Authorization header (if any) of each storage request.
    storage_auth: Mutex<Vec<Option<String>>>,
}

fn serve(script: Arc<Script>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let script = script.clone();
            std::thread::spawn(move || handle(conn, &script, port));
        }
    });
    port
}

fn handle(mut conn: TcpStream, s: &Script, port: u16) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let send =
        |conn: &mut TcpStream, status: &str, extra: &[(&str, String)], body: &[u8], len: usize| {
            let mut head =
                format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {len}\r\n");
            for (k, v) in extra {
                head += &format!("{k}: {v}\r\n");
            }
            head += "\r\n";
            let _ = conn.write_all(head.as_bytes());
            if method != "HEAD" {
                let _ = conn.write_all(body);
            }
            let _ = conn.flush();
        };
    if path.starts_with("/token") {
        s.token_requests.fetch_add(1, Ordering::SeqCst);
        let body = br#"{"token":"T0K"}"#;
        send(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body,
            body.len(),
        );
        return;
    }
    if let Some(d) = path.strip_prefix("/storage/") {
        s.storage_auth
            .lock()
            .unwrap()
            .push(headers.get("authorization").cloned());
        let blob = &s.blobs[d];
        send(&mut conn, "200 OK", &[], blob, blob.len());
        return;
    }
    if headers.get("authorization").map(String::as_str) != Some("Bearer T0K") {
        let challenge = format!(
            r#"Bearer realm="http://127.0.0.1:{port}/token",service="mock",scope="repository:r/img:pull""#
        );
        send(
            &mut conn,
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge)],
            b"",
            0,
        );
        return;
    }
    if path == "/v2/r/img/manifests/v1" {
        let mt = "application/vnd.oci.image.manifest.v1+json".to_owned();
        send(
            &mut conn,
            "200 OK",
            &[("Content-Type", mt)],
            &s.manifest,
            s.manifest.len(),
        );
        return;
    }
    if let Some(d) = path.strip_prefix("/v2/r/img/blobs/") {
        let Some(blob) = s.blobs.get(d) else {
            send(&mut conn, "404 Not Found", &[], b"", 0);
            return;
        };
        if s.redirect {
            let to = format!("http://localhost:{port}/storage/{d}");
            send(
                &mut conn,
                "307 Temporary Redirect",
                &[("Location", to)],
                b"",
                0,
            );
            return;
        }
        let mut blob = blob.clone();
        if s.corrupt.as_deref() == Some(d) {
            blob[0] ^= 0xff;
        }
        if let Some(range) = headers.get("range") {
            s.range_requests.lock().unwrap().push(range.clone());
            let from: usize = range
                .trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap();
            if from >= blob.len() {
                // As the distribution registry answers a range past the end.
                let body = br#"{"errors":[{"code":"UNKNOWN","message":"invalid range"}]}"#;
                send(
                    &mut conn,
                    "416 Range Not Satisfiable",
                    &[],
                    body,
                    body.len(),
                );
                return;
            }
            let rest = &blob[from..];
            let cr = format!("bytes {from}-{}/{}", blob.len() - 1, blob.len());
            send(
                &mut conn,
                "206 Partial Content",
                &[("Content-Range", cr)],
                rest,
                rest.len(),
            );
            return;
        }
        if s.cut.as_deref() == Some(d) {
            // Announce everything, send half, hang up.
            let half = blob.len() / 2;
            send(&mut conn, "200 OK", &[], &blob[..half], blob.len());
            return;
        }
        send(&mut conn, "200 OK", &[], &blob, blob.len());
        return;
    }
    let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
    send(&mut conn, "404 Not Found", &[], body, body.len());
}

/// Serve the image of an OCI layout written by `write_layout`.
fn script_from(dir: &Path) -> Script {
    let mut s = Script::default();
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        s.blobs.insert(
            format!("sha256:{}", e.file_name().to_str().unwrap()),
            std::fs::read(e.path()).unwrap(),
        );
    }
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = idx["manifests"][0]["digest"].as_str().unwrap();
    s.manifest = s.blobs[md].clone();
    s
}

fn layer_digest(s: &Script) -> String {
    let m: serde_json::Value = serde_json::from_slice(&s.manifest).unwrap();
    m["layers"][0]["digest"].as_str().unwrap().to_owned()
}

fn sample(dir: &Path) {
    let big: Vec<u8> = (0..400_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes())
        .collect();
    write_layout(
        dir,
        &[TestLayer {
            tar: tar_of(&[E::File("big", &big)]),
            compression: "gzip",
        }],
        "v1",
        "sh",
    );
}

fn opts() -> RegistryOptions {
    RegistryOptions {
        progress: false,
        auth_file: Some("/nonexistent".into()),
        parallel: 1,
        ..Default::default()
    }
}

#[test]
fn token_auth_and_resumed_download() {
    if !require("root (layer conversion)", is_root())
        || !require("mkfs.erofs", have_tool("mkfs.erofs"))
    {
        return;
    }
    let lay = tempfile::tempdir().unwrap();
    sample(lay.path());
    let mut script = script_from(lay.path());
    let layer = layer_digest(&script);
    script.cut = Some(layer.clone());
    let script = Arc::new(script);
    let port = serve(script.clone());

    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).unwrap();
    let r = Reference::parse(&format!("127.0.0.1:{port}/r/img:v1")).unwrap();
    let p = registry::pull(&store, &r, &opts()).unwrap();
    assert_eq!(p.image.layers[0].digest.as_str(), layer);
    assert!(script.token_requests.load(Ordering::SeqCst) >= 1);
    let ranges = script.range_requests.lock().unwrap().clone();
    assert_eq!(ranges.len(), 1, "one resumed request: {ranges:?}");
    let half = script.blobs[&layer].len() / 2;
    assert_eq!(ranges[0], format!("bytes={half}-"));
    assert_eq!(
        std::fs::read_dir(d.path().join("ingest")).unwrap().count(),
        0
    );
}

/// A pull killed after its download finished (or one that left a damaged or oversized
/// partial file) must not brick the image: the next pull uses or discards the partial.
#[test]
fn a_leftover_partial_download_never_bricks_the_next_pull() {
    if !require("root (layer conversion)", is_root())
        || !require("mkfs.erofs", have_tool("mkfs.erofs"))
    {
        return;
    }
    let lay = tempfile::tempdir().unwrap();
    sample(lay.path());
    let script = Arc::new(script_from(lay.path()));
    let layer = layer_digest(&script);
    let blob = script.blobs[&layer].clone();
    let port = serve(script.clone());
    let r = Reference::parse(&format!("127.0.0.1:{port}/r/img:v1")).unwrap();
    let mut damaged = blob.clone();
    damaged[7] ^= 0x55;
    let mut longer = blob.clone();
    longer.extend_from_slice(b"trailing junk");
    for (what, leftover) in [
        ("complete", blob.clone()),
        ("damaged", damaged),
        ("longer", longer),
    ] {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let hex = layer.trim_start_matches("sha256:");
        std::fs::write(d.path().join(format!("ingest/{hex}.partial")), &leftover).unwrap();
        let p =
            registry::pull(&store, &r, &opts()).unwrap_or_else(|e| panic!("{what} partial: {e}"));
        assert_eq!(p.image.layers[0].digest.as_str(), layer, "{what}");
        assert_eq!(
            std::fs::read_dir(d.path().join("ingest")).unwrap().count(),
            0,
            "{what}"
        );
    }
}

#[test]
fn wrong_bytes_for_a_digest_are_refused_and_leave_nothing() {
    let lay = tempfile::tempdir().unwrap();
    sample(lay.path());
    let mut script = script_from(lay.path());
    script.corrupt = Some(layer_digest(&script));
    let port = serve(Arc::new(script));
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).unwrap();
    let r = Reference::parse(&format!("127.0.0.1:{port}/r/img:v1")).unwrap();
    let e = registry::pull(&store, &r, &opts()).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(store.images().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(d.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "config blob left behind"
    );
    let partials = std::fs::read_dir(d.path().join("ingest"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .count();
    assert_eq!(partials, 0);
}

#[test]
fn redirected_blobs_never_carry_the_token() {
    if !require("root (layer conversion)", is_root())
        || !require("mkfs.erofs", have_tool("mkfs.erofs"))
    {
        return;
    }
    let lay = tempfile::tempdir().unwrap();
    sample(lay.path());
    let mut script = script_from(lay.path());
    script.redirect = true;
    let layer = layer_digest(&script);
    let script = Arc::new(script);
    let port = serve(script.clone());

    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).unwrap();
    let r = Reference::parse(&format!("127.0.0.1:{port}/r/img:v1")).unwrap();
    let p = registry::pull(&store, &r, &opts()).unwrap();
    assert_eq!(p.image.layers[0].digest.as_str(), layer);
    let seen = script.storage_auth.lock().unwrap().clone();
    // The config and the layer, both fetched from storage.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(Option::is_none), "token leaked: {seen:?}");
}

#[test]
fn error_bodies_reach_the_message() {
    let lay = tempfile::tempdir().unwrap();
    sample(lay.path());
    let port = serve(Arc::new(script_from(lay.path())));
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).unwrap();
    let r = Reference::parse(&format!("127.0.0.1:{port}/r/img:missing")).unwrap();
    let e = registry::pull(&store, &r, &opts()).unwrap_err().to_string();
    assert!(
        e.contains("HTTP 404") && e.contains("MANIFEST_UNKNOWN"),
        "{e}"
    );
}
