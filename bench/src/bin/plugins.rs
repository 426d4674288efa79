//! Plugin host overhead: per-hook latency (p50/p99) with 1 and 5 plugins on a warm
//! host, and cold load of a plugin with and without the compiled-artifact cache.
//!
//! Components come from `$SKIFF_PLUGINS_DIR` or `plugins/build.sh`.
//! Usage: `cargo run --release -p skiff-bench --bin plugins [-- ITERATIONS]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use skiff_plugins::{
    ContainerAdmission, ContainerEvent, EventKind, ImageAdmission, PluginConfig, PluginHost,
    PluginsConfig,
};

fn components() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SKIFF_PLUGINS_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/build.sh");
    let out = Command::new("sh")
        .arg(&script)
        .output()
        .context("running plugins/build.sh")?;
    if !out.status.success() {
        bail!(
            "plugins/build.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(
        stdout.lines().last().unwrap_or_default().trim(),
    ))
}

fn plugin(dir: &Path, name: &str, component: &str, settings: serde_json::Value) -> PluginConfig {
    PluginConfig {
        name: name.into(),
        path: dir.join(format!("{component}.wasm")),
        sha256: None,
        selection: Default::default(),
        on_error: Default::default(),
        deadline_ms: None,
        memory_mib: None,
        settings: Some(settings),
        grants: Default::default(),
    }
}

/// `n` copies of each hook's example plugin (distinct names, non-conflicting settings).
fn config(dir: &Path, n: usize, cache: Option<&Path>) -> PluginsConfig {
    let mut plugins = Vec::new();
    for i in 0..n {
        plugins.push(plugin(
            dir,
            &format!("allow{i}"),
            "image-allowlist",
            json!({"registries": ["docker.io"]}),
        ));
        plugins.push(plugin(
            dir,
            &format!("env{i}"),
            "env-injector",
            json!({"env": {format!("VAR{i}"): "value"}}),
        ));
        plugins.push(plugin(
            dir,
            &format!("audit{i}"),
            "audit-logger",
            json!(null),
        ));
    }
    PluginsConfig {
        cache_dir: cache.map(Path::to_path_buf),
        plugins,
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn measure(iterations: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..iterations / 10 + 1 {
        f();
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() -> Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("ITERATIONS must be a number")?
        .unwrap_or(2000);
    let dir = components()?;
    let tmp = std::env::temp_dir().join(format!("skiff-bench-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run(iterations, &dir, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run(iterations: usize, dir: &Path, tmp: &Path) -> Result<()> {
    let cache = tmp.join("cache");

    let image = ImageAdmission {
        reference: "docker.io/library/busybox:latest".into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        config: r#"{"architecture":"amd64","os":"linux"}"#.into(),
        layers: vec![],
    };
    let container = ContainerAdmission {
        id: "bench".into(),
        spec: r#"{"ociVersion":"1.0.2","process":{"args":["sh"],"env":["PATH=/bin"]}}"#.into(),
        image_reference: image.reference.clone(),
        image_config: image.config.clone(),
        annotations: BTreeMap::new(),
        labels: [("tenant".to_string(), "a".to_string())].into(),
        tenant: None,
    };
    let event = ContainerEvent {
        id: "bench".into(),
        kind: EventKind::Exited(0),
        annotations: BTreeMap::new(),
        labels: BTreeMap::new(),
        tenant: Some("a".into()),
        timestamp_ms: 0,
    };

    println!(
        "per-hook latency, warm host, {iterations} calls each (fresh instance per plugin call)"
    );
    println!(
        "{:<18} {:>8} {:>10} {:>10} {:>16}",
        "hook", "plugins", "p50 us", "p99 us", "p50/plugin us"
    );
    for n in [1usize, 5] {
        let host = PluginHost::load(&config(dir, n, Some(&cache)))?;
        type Row<'a> = (&'static str, Box<dyn FnMut() + 'a>);
        let rows: [Row; 3] = [
            (
                "admit-image",
                Box::new(|| assert!(host.admit_image(&image).allowed)),
            ),
            (
                "admit-container",
                Box::new(|| assert!(host.admit_container(&container).allowed)),
            ),
            (
                "lifecycle",
                Box::new(|| assert_eq!(host.lifecycle(&event).len(), n)),
            ),
        ];
        for (hook, f) in rows {
            let (p50, p99) = measure(iterations, f);
            println!(
                "{hook:<18} {n:>8} {:>10} {:>10} {:>16}",
                us(p50),
                us(p99),
                us(p50 / n as u32)
            );
        }
    }

    println!();
    println!("cold load of one plugin (env-injector): PluginHost::load + first admit-container");
    println!(
        "{:<28} {:>8} {:>10} {:>10}",
        "case", "runs", "p50 ms", "max ms"
    );
    let one = |cache: Option<&Path>| PluginsConfig {
        cache_dir: cache.map(Path::to_path_buf),
        plugins: vec![plugin(
            dir,
            "env",
            "env-injector",
            json!({"env": {"A": "1"}}),
        )],
        ..Default::default()
    };
    let runs = 10;
    let cold_cache = tmp.join("cold");
    let cases: [(&str, PluginsConfig); 2] = [
        ("no cache (compile)", one(None)),
        ("compiled cache (hit)", one(Some(&cold_cache))),
    ];
    // Populate the cache for the second case.
    PluginHost::load(&cases[1].1)?;
    for (name, cfg) in cases {
        let mut samples: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let host = PluginHost::load(&cfg).expect("load");
                assert!(host.admit_container(&container).allowed);
                start.elapsed()
            })
            .collect();
        samples.sort();
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
        println!(
            "{name:<28} {runs:>8} {:>10} {:>10}",
            ms(percentile(&samples, 0.5)),
            ms(samples[runs - 1])
        );
    }
    Ok(())
}
