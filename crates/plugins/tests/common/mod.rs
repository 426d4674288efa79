//! Finding the plugin components the tests load, and building configurations.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use skiff_plugins::{PluginConfig, PluginsConfig};

/// The directory holding the built components: `$SKIFF_PLUGINS_DIR`, or whatever
/// `plugins/build.sh` prints. `None` (with a loud message) when neither works, unless
/// `SKIFF_REQUIRE_ALL=1`, in which case the test fails.
pub fn components() -> Option<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SKIFF_PLUGINS_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/build.sh");
        let out = Command::new("sh")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed (is the wasm32-wasip2 target installed?): {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| "build.sh printed nothing".to_string())
    });
    match found {
        Ok(dir) => Some(dir.as_path()),
        Err(why) => {
            if std::env::var("SKIFF_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("plugin components unavailable and SKIFF_REQUIRE_ALL=1: {why}");
            }
            eprintln!("SKIPPING: plugin components unavailable: {why}");
            None
        }
    }
}

/// Skip the test (loudly) when the components are not available.
#[macro_export]
macro_rules! need_components {
    () => {
        match common::components() {
            Some(dir) => dir,
            None => return,
        }
    };
}

/// A compiled-artifact cache shared by the tests of one binary, so each component is
/// compiled once per test run (compiling with a debug-built cranelift is slow).
pub fn shared_cache() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
        .join("cache")
}

/// A plugin entry with defaults.
pub fn plugin(
    dir: &Path,
    name: &str,
    component: &str,
    settings: serde_json::Value,
) -> PluginConfig {
    PluginConfig {
        name: name.to_string(),
        path: dir.join(format!("{component}.wasm")),
        sha256: None,
        selection: Default::default(),
        on_error: Default::default(),
        deadline_ms: None,
        memory_mib: None,
        settings: (!settings.is_null()).then_some(settings),
        grants: Default::default(),
    }
}

/// Tests give well-behaved plugins a generous deadline so a loaded CI machine cannot
/// make them fail; tests of the deadline set their own.
pub const TEST_DEADLINE_MS: u64 = 10_000;

pub fn config(plugins: Vec<PluginConfig>) -> PluginsConfig {
    PluginsConfig {
        cache_dir: Some(shared_cache()),
        deadline_ms: Some(TEST_DEADLINE_MS),
        plugins,
        ..Default::default()
    }
}
