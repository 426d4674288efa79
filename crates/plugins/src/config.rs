//! The operator's plugin configuration (TOML or JSON; same fields in both).
//!
//! ```toml
//! deadline_ms = 100                          # per call, default 100
//! memory_mib = 32                            # per call, default 32
//! cache_dir = "/var/lib/skiff/plugin-cache"  # compiled artifacts; none = no disk cache
//!
//! [[plugin]]                                 # called in the order listed
//! name = "allowlist"                         # unique; appears in decisions and errors
//! path = "image-allowlist.wasm"              # relative to this file's directory
//! sha256 = "…"                               # optional pin of the component bytes
//! selection = "always"                       # always | opt-in | opt-out
//! on_error = "deny"                          # admission hooks: deny | allow
//! deadline_ms = 50                           # optional override
//! memory_mib = 16                            # optional override
//! settings = { registries = ["docker.io"] }  # any value; the plugin validates it
//! grants = { env = ["TZ"], dirs = { "/policy" = "/etc/skiff/policy" }, network = false }
//! # host_hooks = ["/usr/libexec/skiff-hooks"]  # host programs it may add as OCI hooks
//! # bind_sources = ["/srv/shared"]              # host dirs it may bind into containers
//! ```
//!
//! Selection per container: `always` plugins run for every container and cannot be
//! turned off; `opt-out` plugins run unless the annotation `io.skiff.plugins.disable`
//! names them; `opt-in` plugins run only when `io.skiff.plugins.enable` names them
//! (comma-separated names). Image admission has no annotations: `always` and `opt-out`
//! plugins run. Lifecycle plugins are observers: their failures only warn.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{PluginError, Result};

pub const DEFAULT_DEADLINE_MS: u64 = 100;
pub const DEFAULT_MEMORY_MIB: u32 = 32;
/// Upper bounds an operator may configure; beyond these something is wrong.
const MAX_DEADLINE_MS: u64 = 60_000;
const MAX_MEMORY_MIB: u32 = 4096;
const MAX_PLUGINS: usize = 64;

/// Whole plugin configuration. Deserializable, so skiff's own config file can embed it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Default per-call deadline in milliseconds.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Default per-call memory cap in MiB (all linear memories of the instance).
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Directory for compiled artifacts; created with mode 0700 if missing.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Plugins, in call order.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub selection: Selection,
    #[serde(default)]
    pub on_error: FailurePolicy,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Passed to the plugin as JSON (`null` when absent).
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    #[serde(default)]
    pub grants: Grants,
}

/// When a plugin runs for a given container.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    #[default]
    Always,
    OptIn,
    OptOut,
}

/// What an admission hook's failure (trap, deadline, memory, bad answer) means.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Fail closed: the image or container is denied.
    #[default]
    Deny,
    /// Fail open: the failure is recorded and the plugin is treated as allowing.
    Allow,
}

/// Authority the operator grants a plugin. A plugin gets only what it also asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Host environment variables the plugin may read.
    #[serde(default)]
    pub env: BTreeSet<String>,
    /// Read-only directories: guest path -> host path.
    #[serde(default)]
    pub dirs: BTreeMap<String, PathBuf>,
    /// Outbound network.
    #[serde(default)]
    pub network: bool,
    /// Host programs the plugin may add as host-side OCI hooks (createRuntime, poststart,
    /// poststop), which run as skiff's own user: exact files, or directories whose files
    /// it may name. In-guest hooks (createContainer, startContainer) need no grant.
    #[serde(default)]
    pub host_hooks: BTreeSet<PathBuf>,
    /// Host directories whose contents the plugin may bind-mount into containers (a
    /// bind gives the container the host's files, so none are allowed without a grant).
    #[serde(default)]
    pub bind_sources: BTreeSet<PathBuf>,
}

impl PluginsConfig {
    /// Read a configuration file: `.json` is JSON, anything else TOML. Relative plugin
    /// paths and `cache_dir` are resolved against the file's directory.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| PluginError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        };
        let mut config = parsed.map_err(|e| PluginError::ConfigParse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if let Some(base) = path.parent() {
            config.resolve_relative_to(base);
        }
        Ok(config)
    }

    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| PluginError::ConfigInvalid(e.to_string()))
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| PluginError::ConfigInvalid(e.to_string()))
    }

    /// Make relative paths relative to `base` (the configuration file's directory).
    pub fn resolve_relative_to(&mut self, base: &Path) {
        for plugin in &mut self.plugins {
            if plugin.path.is_relative() {
                plugin.path = base.join(&plugin.path);
            }
        }
        if let Some(dir) = &mut self.cache_dir {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
    }

    /// Check what can be checked without loading anything.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(PluginError::ConfigInvalid(m));
        if self.plugins.len() > MAX_PLUGINS {
            return invalid(format!(
                "{} plugins configured, at most {MAX_PLUGINS}",
                self.plugins.len()
            ));
        }
        check_limits("defaults", self.deadline_ms, self.memory_mib)?;
        let mut names = BTreeSet::new();
        for p in &self.plugins {
            if p.name.is_empty()
                || p.name.len() > 64
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return invalid(format!(
                    "plugin name {:?} must be 1-64 characters of [A-Za-z0-9._-]",
                    p.name
                ));
            }
            if !names.insert(p.name.as_str()) {
                return invalid(format!("plugin name '{}' is listed twice", p.name));
            }
            check_limits(&p.name, p.deadline_ms, p.memory_mib)?;
            if let Some(pin) = &p.sha256 {
                if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return invalid(format!("plugin '{}': sha256 must be 64 hex digits", p.name));
                }
            }
            for path in p.grants.host_hooks.iter().chain(&p.grants.bind_sources) {
                let clean = path.is_absolute()
                    && path
                        .components()
                        .all(|c| !matches!(c, std::path::Component::ParentDir));
                if !clean {
                    return invalid(format!(
                        "plugin '{}': granted path {} must be absolute, without '..'",
                        p.name,
                        path.display()
                    ));
                }
            }
            for guest in p.grants.dirs.keys() {
                if !guest.starts_with('/') {
                    return invalid(format!(
                        "plugin '{}': granted directory {guest:?} must be an absolute guest path",
                        p.name
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn deadline_for(&self, plugin: &PluginConfig) -> Duration {
        Duration::from_millis(
            plugin
                .deadline_ms
                .or(self.deadline_ms)
                .unwrap_or(DEFAULT_DEADLINE_MS),
        )
    }

    pub(crate) fn memory_bytes_for(&self, plugin: &PluginConfig) -> usize {
        let mib = plugin
            .memory_mib
            .or(self.memory_mib)
            .unwrap_or(DEFAULT_MEMORY_MIB);
        (mib as usize) << 20
    }

    /// The largest memory cap of any plugin: the size of a pooling allocator slot.
    pub(crate) fn max_memory_bytes(&self) -> usize {
        self.plugins
            .iter()
            .map(|p| self.memory_bytes_for(p))
            .chain(std::iter::once(
                (self.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB) as usize) << 20,
            ))
            .max()
            .unwrap_or((DEFAULT_MEMORY_MIB as usize) << 20)
    }
}

fn check_limits(who: &str, deadline_ms: Option<u64>, memory_mib: Option<u32>) -> Result<()> {
    if let Some(d) = deadline_ms {
        if d == 0 || d > MAX_DEADLINE_MS {
            return Err(PluginError::ConfigInvalid(format!(
                "{who}: deadline_ms must be 1..={MAX_DEADLINE_MS}, got {d}"
            )));
        }
    }
    if let Some(m) = memory_mib {
        if m == 0 || m > MAX_MEMORY_MIB {
            return Err(PluginError::ConfigInvalid(format!(
                "{who}: memory_mib must be 1..={MAX_MEMORY_MIB}, got {m}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
deadline_ms = 50
cache_dir = "cache"

[[plugin]]
name = "allow"
path = "a.wasm"
on_error = "allow"
selection = "opt-in"
settings = { registries = ["docker.io"] }
grants = { env = ["TZ"], dirs = { "/policy" = "/etc/policy" } }

[[plugin]]
name = "audit"
path = "/abs/b.wasm"
"#;

    #[test]
    fn toml_and_json_mean_the_same() {
        let toml = PluginsConfig::from_toml_str(TOML).unwrap();
        let json = serde_json::to_string(&toml).unwrap();
        assert_eq!(PluginsConfig::from_json_str(&json).unwrap(), toml);
        assert_eq!(toml.plugins.len(), 2);
        assert_eq!(toml.plugins[0].on_error, FailurePolicy::Allow);
        assert_eq!(toml.plugins[0].selection, Selection::OptIn);
        assert_eq!(toml.plugins[1].on_error, FailurePolicy::Deny);
        assert_eq!(toml.plugins[1].selection, Selection::Always);
        assert!(toml.validate().is_ok());
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugins.toml");
        std::fs::write(&file, TOML).unwrap();
        let c = PluginsConfig::from_file(&file).unwrap();
        assert_eq!(c.plugins[0].path, dir.path().join("a.wasm"));
        assert_eq!(c.plugins[1].path, PathBuf::from("/abs/b.wasm"));
        assert_eq!(c.cache_dir, Some(dir.path().join("cache")));
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            "[[plugin]]\nname = \"a\"\npath = \"x\"\n[[plugin]]\nname = \"a\"\npath = \"y\"",
            "[[plugin]]\nname = \"a b\"\npath = \"x\"",
            "[[plugin]]\nname = \"a\"\npath = \"x\"\ndeadline_ms = 0",
            "memory_mib = 100000",
            "[[plugin]]\nname = \"a\"\npath = \"x\"\nsha256 = \"zz\"",
            "[[plugin]]\nname = \"a\"\npath = \"x\"\ngrants = { dirs = { \"rel\" = \"/x\" } }",
            "[[plugin]]\nname = \"a\"\npath = \"x\"\ngrants = { host_hooks = [\"hooks\"] }",
            "[[plugin]]\nname = \"a\"\npath = \"x\"\ngrants = { host_hooks = [\"/a/../etc\"] }",
        ] {
            let parsed = PluginsConfig::from_toml_str(bad);
            assert!(
                parsed.and_then(|c| c.validate()).is_err(),
                "accepted: {bad}"
            );
        }
        assert!(PluginsConfig::from_toml_str("unknown_key = 1").is_err());
        assert!(PluginsConfig::from_json_str("{\"plugin\": 3}").is_err());
    }

    #[test]
    fn limits_default_and_override() {
        let c = PluginsConfig::from_toml_str(TOML).unwrap();
        assert_eq!(c.deadline_for(&c.plugins[0]), Duration::from_millis(50));
        assert_eq!(c.memory_bytes_for(&c.plugins[0]), 32 << 20);
        assert_eq!(c.max_memory_bytes(), 32 << 20);
    }
}
