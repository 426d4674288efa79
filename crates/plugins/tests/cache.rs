//! The compiled-artifact cache: a second load does not recompile, and a damaged
//! artifact is detected, discarded and rebuilt.

#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::path::Path;

use serde_json::json;
use skiff_plugins::{ArtifactSource, CacheStats, ImageAdmission, PluginHost, PluginsConfig};

fn config(dir: &Path, cache: &Path) -> PluginsConfig {
    PluginsConfig {
        cache_dir: Some(cache.to_path_buf()),
        plugins: vec![
            common::plugin(
                dir,
                "allowlist",
                "image-allowlist",
                json!({"registries": ["docker.io"]}),
            ),
            common::plugin(dir, "audit", "audit-logger", json!(null)),
        ],
        ..Default::default()
    }
}

fn artifacts(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

fn works(host: &PluginHost) {
    let d = host.admit_image(&ImageAdmission {
        reference: "busybox".into(),
        ..Default::default()
    });
    assert!(d.allowed, "{d:?}");
}

#[test]
fn second_load_uses_the_cache_and_damage_is_repaired() {
    let dir = need_components!();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");

    let first = PluginHost::load(&config(dir, &cache)).unwrap();
    assert_eq!(
        first.cache_stats(),
        CacheStats {
            hits: 0,
            compiled: 2,
            rejected: 0
        }
    );
    assert!(first
        .plugins()
        .iter()
        .all(|p| p.compiled_from == ArtifactSource::Compiled));
    works(&first);
    let files = artifacts(&cache);
    assert_eq!(files.len(), 2);
    let mtimes: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();

    let second = PluginHost::load(&config(dir, &cache)).unwrap();
    assert_eq!(
        second.cache_stats(),
        CacheStats {
            hits: 2,
            compiled: 0,
            rejected: 0
        }
    );
    assert!(second
        .plugins()
        .iter()
        .all(|p| p.compiled_from == ArtifactSource::Cache));
    works(&second);
    let again: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();
    assert_eq!(mtimes, again, "a cache hit must not rewrite the artifact");

    // Flip a byte in one artifact's payload and truncate the other.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    let len = std::fs::metadata(&files[1]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files[1])
        .unwrap()
        .set_len(len / 3)
        .unwrap();

    let third = PluginHost::load(&config(dir, &cache)).unwrap();
    assert_eq!(
        third.cache_stats(),
        CacheStats {
            hits: 0,
            compiled: 2,
            rejected: 2
        }
    );
    works(&third);

    let fourth = PluginHost::load(&config(dir, &cache)).unwrap();
    assert_eq!(
        fourth.cache_stats().hits,
        2,
        "repaired artifacts are used again"
    );
}

#[test]
fn without_a_cache_dir_every_load_compiles() {
    let dir = need_components!();
    let mut cfg = config(dir, Path::new("/unused"));
    cfg.cache_dir = None;
    for _ in 0..2 {
        let host = PluginHost::load(&cfg).unwrap();
        assert_eq!(
            host.cache_stats(),
            CacheStats {
                hits: 0,
                compiled: 2,
                rejected: 0
            }
        );
    }
}

#[test]
fn config_files_load_end_to_end() {
    let dir = need_components!();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("env-injector.wasm"), tmp.path().join("env.wasm")).unwrap();
    let file = tmp.path().join("plugins.toml");
    std::fs::write(
        &file,
        r#"
deadline_ms = 10000
cache_dir = "cache"

[[plugin]]
name = "env"
path = "env.wasm"
settings = { env = { TZ = "UTC" } }
"#,
    )
    .unwrap();
    let host = PluginHost::load_file(&file).unwrap();
    let d = host.admit_container(&Default::default());
    assert_eq!(d.adjustments.env["TZ"], "UTC");
    assert!(tmp.path().join("cache").is_dir());

    let json = tmp.path().join("plugins.json");
    std::fs::write(
        &json,
        r#"{"deadline_ms": 10000, "plugin": [{"name": "env", "path": "env.wasm", "settings": {"env": {"TZ": "UTC"}}}]}"#,
    )
    .unwrap();
    let host = PluginHost::load_file(&json).unwrap();
    assert_eq!(
        host.admit_container(&Default::default()).adjustments.env["TZ"],
        "UTC"
    );
}
