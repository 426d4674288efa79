//! `PluginHost`: loads the configured plugins once and dispatches hook calls to them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Linker;
use wasmtime::Engine;

use crate::bindings::types as wit;
use crate::cache::{sha256_hex, ArtifactCache, CacheStats};
use crate::config::{FailurePolicy, PluginConfig, PluginsConfig, Selection};
use crate::convert;
use crate::engine::{self, EpochTicker};
use crate::error::{PluginError, Result};
use crate::merge::Merger;
use crate::model::{
    Adjustments, AuditRecord, ContainerAdmission, ContainerDecision, ContainerEvent, Decision,
    DecisionRecord, HookKind, ImageAdmission, Outcome, PLUGIN_FAILED_ACTION,
};
use crate::plugin::{Authority, CallState, LoadedPlugin, PluginSummary};

/// Annotation naming opt-in plugins to run for a container (comma-separated).
pub const ENABLE_ANNOTATION: &str = "io.skiff.plugins.enable";
/// Annotation naming opt-out plugins to skip for a container (comma-separated).
pub const DISABLE_ANNOTATION: &str = "io.skiff.plugins.disable";

/// Largest component file accepted.
const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// The loaded plugins and the engine they run on. `Send + Sync`: share it freely.
pub struct PluginHost {
    plugins: Vec<LoadedPlugin>,
    cache: ArtifactCache,
    // Field order matters for drop: the ticker thread stops before the engine goes.
    ticker: EpochTicker,
    engine: Engine,
}

enum Verdict {
    Allow,
    Deny(String),
    Adjust(Adjustments),
}

fn elapsed_us(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl PluginHost {
    /// Load every configured plugin: compile (or fetch from the cache), link, ask it to
    /// describe itself and validate its settings. Any failure refuses the whole
    /// configuration, naming the plugin.
    pub fn load(config: &PluginsConfig) -> Result<PluginHost> {
        config.validate()?;
        let engine = engine::build(config.max_memory_bytes())?;
        let ticker = EpochTicker::start(&engine)?;
        let cache = ArtifactCache::new(&engine, config.cache_dir.as_deref())?;
        let linker =
            crate::plugin::linker(&engine).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut host = PluginHost {
            plugins: Vec::with_capacity(config.plugins.len()),
            cache,
            ticker,
            engine,
        };
        for plugin_config in &config.plugins {
            let plugin = host.load_one(config, plugin_config, &linker)?;
            host.plugins.push(plugin);
        }
        Ok(host)
    }

    /// Read a configuration file (see [`PluginsConfig`]) and load it.
    pub fn load_file(path: &Path) -> Result<PluginHost> {
        PluginHost::load(&PluginsConfig::from_file(path)?)
    }

    /// A host without plugins: every admission allowed, no audit records.
    pub fn empty() -> Result<PluginHost> {
        PluginHost::load(&PluginsConfig::default())
    }

    fn load_one(
        &self,
        config: &PluginsConfig,
        pc: &PluginConfig,
        linker: &Linker<CallState>,
    ) -> Result<LoadedPlugin> {
        let fail = |message: String| PluginError::Load {
            plugin: pc.name.clone(),
            message,
        };
        let bytes = read_component(pc)?;
        let sha256 = sha256_hex(&bytes);
        if let Some(pin) = &pc.sha256 {
            if !pin.eq_ignore_ascii_case(&sha256) {
                return Err(fail(format!(
                    "{} has sha256 {sha256}, but the configuration pins {pin}",
                    pc.path.display()
                )));
            }
        }
        let (component, source) = self
            .cache
            .component(&self.engine, &bytes, &sha256)
            .map_err(|e| fail(format!("{}: {e}", pc.path.display())))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            fail(format!(
                "imports something skiff does not provide (only WASI and skiff:plugin/host): {e:#}"
            ))
        })?;
        let pre = LoadedPlugin::pre_from(instance_pre).map_err(|e| {
            fail(format!(
                "is not a skiff plugin (does not export skiff:plugin/hooks@0.1.0): {e:#}"
            ))
        })?;
        let settings_json = pc
            .settings
            .as_ref()
            .map_or_else(|| "null".to_string(), |v| v.to_string());
        let mut plugin = LoadedPlugin {
            name: Arc::from(pc.name.as_str()),
            path: pc.path.clone(),
            sha256,
            selection: pc.selection,
            on_error: pc.on_error,
            hooks: wit::HookSet::empty(),
            info_name: String::new(),
            info_version: String::new(),
            source,
            settings: Arc::from(settings_json.as_str()),
            deadline: config.deadline_for(pc),
            memory_bytes: config.memory_bytes_for(pc),
            authority: Authority::default(),
            pre,
        };
        // Describe with no authority at all, then grant what was asked AND granted.
        let info = plugin
            .call(&self.engine, &self.ticker, "describe", |p, store| {
                p.skiff_plugin_hooks().call_describe(store)
            })
            .map_err(fail)?;
        plugin.hooks = info.hooks;
        plugin.info_name = convert::truncate(info.name, 128);
        plugin.info_version = convert::truncate(info.version, 64);
        plugin.authority = authority(pc, &info.requests);

        let verdict = plugin
            .call(
                &self.engine,
                &self.ticker,
                "validate-settings",
                |p, store| {
                    p.skiff_plugin_hooks()
                        .call_validate_settings(store, &settings_json)
                },
            )
            .map_err(fail)?;
        if let Err(reason) = verdict {
            return Err(PluginError::SettingsRejected {
                plugin: pc.name.clone(),
                reason: convert::reason(reason),
            });
        }
        tracing::info!(
            plugin = %pc.name,
            source = ?plugin.source,
            hooks = ?plugin.summary().hooks,
            "plugin loaded"
        );
        Ok(plugin)
    }

    /// What is loaded, in call order.
    pub fn plugins(&self) -> Vec<PluginSummary> {
        self.plugins.iter().map(LoadedPlugin::summary).collect()
    }

    /// What the compiled-artifact cache did since this host was created.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.counters.snapshot()
    }

    /// Plugins selected for a hook, given the container's annotations (none for images).
    fn selected<'a>(
        &'a self,
        hook: wit::HookSet,
        annotations: Option<&'a std::collections::BTreeMap<String, String>>,
    ) -> impl Iterator<Item = &'a LoadedPlugin> + 'a {
        let list = |key: &str| -> BTreeSet<&'a str> {
            annotations
                .and_then(|a| a.get(key))
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let (enable, disable) = (list(ENABLE_ANNOTATION), list(DISABLE_ANNOTATION));
        self.plugins.iter().filter(move |p| {
            p.hooks.contains(hook)
                && match p.selection {
                    Selection::Always => true,
                    Selection::OptIn => enable.contains(&*p.name),
                    Selection::OptOut => !disable.contains(&*p.name),
                }
        })
    }

    /// Image admission (on pull and on load). Plugins run in order; the first denial
    /// (or failure under `on_error = "deny"`) stops the walk.
    pub fn admit_image(&self, request: &ImageAdmission) -> Decision {
        let wit_request = convert::image_request(request);
        let mut records = Vec::new();
        for plugin in self.selected(wit::HookSet::IMAGE_ADMISSION, None) {
            let start = Instant::now();
            let result = plugin.call(&self.engine, &self.ticker, "admit-image", |p, store| {
                p.skiff_plugin_hooks().call_admit_image(store, &wit_request)
            });
            let verdict = result.map(|v| match v {
                wit::ImageVerdict::Allow => Verdict::Allow,
                wit::ImageVerdict::Deny(r) => Verdict::Deny(convert::reason(r)),
            });
            if let Some(reason) = self.record(
                plugin,
                HookKind::ImageAdmission,
                verdict,
                start,
                &mut records,
                None,
            ) {
                return Decision {
                    allowed: false,
                    reason: Some(reason),
                    records,
                };
            }
        }
        Decision {
            allowed: true,
            reason: None,
            records,
        }
    }

    /// Container admission (before create). Every plugin sees the original request;
    /// their adjustments are merged in configured order, and conflicting adjustments
    /// deny the container with an error naming both plugins.
    pub fn admit_container(&self, request: &ContainerAdmission) -> ContainerDecision {
        let wit_request = convert::container_request(request);
        let mut records = Vec::new();
        let mut merger = Merger::default();
        let deny = |reason: String, records: Vec<DecisionRecord>| ContainerDecision {
            allowed: false,
            reason: Some(reason),
            adjustments: Adjustments::default(),
            records,
        };
        for plugin in self.selected(
            wit::HookSet::CONTAINER_ADMISSION,
            Some(&request.annotations),
        ) {
            let start = Instant::now();
            let result = plugin.call(&self.engine, &self.ticker, "admit-container", |p, store| {
                p.skiff_plugin_hooks()
                    .call_admit_container(store, &wit_request)
            });
            let verdict = result.and_then(|v| match v {
                wit::ContainerVerdict::Allow => Ok(Verdict::Allow),
                wit::ContainerVerdict::Deny(r) => Ok(Verdict::Deny(convert::reason(r))),
                wit::ContainerVerdict::Adjust(a) => convert::adjustment(a)
                    .map_err(|e| format!("admit-container returned an invalid adjustment: {e}"))
                    .and_then(|adj| {
                        check_host_hooks(&plugin.authority, &adj)?;
                        check_bind_sources(&plugin.authority, &adj)?;
                        Ok(Verdict::Adjust(adj))
                    }),
            });
            if let Some(reason) = self.record(
                plugin,
                HookKind::ContainerAdmission,
                verdict,
                start,
                &mut records,
                Some(&mut merger),
            ) {
                return deny(reason, records);
            }
        }
        ContainerDecision {
            allowed: true,
            reason: None,
            adjustments: merger.finish(),
            records,
        }
    }

    /// Record one admission call; `Some(reason)` when it denies the request.
    fn record(
        &self,
        plugin: &LoadedPlugin,
        hook: HookKind,
        verdict: std::result::Result<Verdict, String>,
        start: Instant,
        records: &mut Vec<DecisionRecord>,
        merger: Option<&mut Merger>,
    ) -> Option<String> {
        let name = plugin.name.to_string();
        let (outcome, denial) = match verdict {
            Ok(Verdict::Allow) => (Outcome::Allowed, None),
            Ok(Verdict::Deny(reason)) => (
                Outcome::Denied {
                    reason: reason.clone(),
                },
                Some(format!("denied by plugin '{name}': {reason}")),
            ),
            Ok(Verdict::Adjust(adjustments)) => {
                let merged = merger.map_or(Ok(()), |m| m.add(&name, &adjustments));
                match merged {
                    Ok(()) => (Outcome::Adjusted { adjustments }, None),
                    Err(conflict) => (
                        Outcome::Failed {
                            error: conflict.clone(),
                            applied: "denied".into(),
                        },
                        Some(format!("conflicting adjustments: {conflict}")),
                    ),
                }
            }
            Err(error) => {
                let error = format!("plugin '{name}': {error}");
                match plugin.on_error {
                    FailurePolicy::Deny => (
                        Outcome::Failed {
                            error: error.clone(),
                            applied: "denied".into(),
                        },
                        Some(format!("{error} (failure policy: deny)")),
                    ),
                    FailurePolicy::Allow => {
                        tracing::warn!("{error} (failure policy: allow)");
                        (
                            Outcome::Failed {
                                error,
                                applied: "allowed".into(),
                            },
                            None,
                        )
                    }
                }
            }
        };
        if let Some(reason) = &denial {
            tracing::info!(plugin = %name, hook = hook.name(), "{reason}");
        }
        records.push(DecisionRecord {
            plugin: name,
            hook,
            outcome,
            elapsed_us: elapsed_us(start),
        });
        denial
    }

    /// A lifecycle event. Every selected observer is called; their audit records come
    /// back in plugin order. A failing observer only warns: its failure is logged and
    /// returned as a record with action `plugin.failed`.
    pub fn lifecycle(&self, event: &ContainerEvent) -> Vec<AuditRecord> {
        let wit_event = convert::event(event);
        let mut out = Vec::new();
        for plugin in self.selected(wit::HookSet::LIFECYCLE, Some(&event.annotations)) {
            let result = plugin
                .call(&self.engine, &self.ticker, "on-event", |p, store| {
                    p.skiff_plugin_hooks().call_on_event(store, &wit_event)
                })
                .and_then(convert::audit_records);
            let record = |action: String, message: String, fields| AuditRecord {
                plugin: plugin.name.to_string(),
                container_id: event.id.clone(),
                event: event.kind.name().to_string(),
                action,
                message,
                fields,
                timestamp_ms: event.timestamp_ms,
            };
            match result {
                Ok(records) => out.extend(
                    records
                        .into_iter()
                        .map(|(action, message, fields)| record(action, message, fields)),
                ),
                Err(error) => {
                    let error = format!("plugin '{}': {error}", plugin.name);
                    tracing::warn!(container = %event.id, "{error}");
                    out.push(record(
                        PLUGIN_FAILED_ACTION.into(),
                        error,
                        Default::default(),
                    ));
                }
            }
        }
        out
    }
}

fn read_component(pc: &PluginConfig) -> Result<Vec<u8>> {
    let io = |source| PluginError::ReadComponent {
        plugin: pc.name.clone(),
        path: pc.path.clone(),
        source,
    };
    let meta = std::fs::metadata(&pc.path).map_err(io)?;
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(PluginError::Load {
            plugin: pc.name.clone(),
            message: format!(
                "{} is {} bytes, at most {MAX_COMPONENT_BYTES}",
                pc.path.display(),
                meta.len()
            ),
        });
    }
    std::fs::read(&pc.path).map_err(io)
}

/// A host-side hook runs a host program as skiff's user, so a sandboxed plugin may only
/// name programs the operator granted it (`grants.host_hooks`); in-guest hooks run
/// inside the container's microVM and need no grant.
fn check_host_hooks(authority: &Authority, adj: &Adjustments) -> std::result::Result<(), String> {
    for hook in adj.hooks.iter().filter(|h| h.stage.runs_on_host()) {
        let path = Path::new(&hook.path);
        let granted = authority
            .host_hooks
            .iter()
            .any(|g| path == g.as_path() || path.parent() == Some(g.as_path()));
        if !granted {
            return Err(format!(
                "asked for the host hook {:.200?} ({}), which its grants.host_hooks do not allow",
                hook.path,
                hook.stage.name()
            ));
        }
    }
    Ok(())
}

/// A bind mount hands the container host files, so a sandboxed plugin may only bind
/// what lies in directories the operator granted it (`grants.bind_sources`). The source
/// is resolved (symlinks and all) before it is compared, so a link inside a granted
/// directory cannot lead out of it.
fn check_bind_sources(authority: &Authority, adj: &Adjustments) -> std::result::Result<(), String> {
    for m in &adj.mounts {
        let refuse = |why: &str| {
            format!(
                "asked to bind {:.200?} at {:.200?}, {why}",
                m.source, m.destination
            )
        };
        let real = std::fs::canonicalize(&m.source)
            .map_err(|e| refuse(&format!("which cannot be resolved ({e})")))?;
        let granted = authority
            .bind_sources
            .iter()
            .any(|g| std::fs::canonicalize(g).is_ok_and(|g| real.starts_with(g)));
        if !granted {
            return Err(refuse("which its grants.bind_sources do not allow"));
        }
    }
    Ok(())
}

/// Authority = what the plugin asks for AND what the operator granted.
fn authority(pc: &PluginConfig, asked: &wit::CapabilityRequest) -> Authority {
    let mut a = Authority::default();
    for var in &asked.env {
        if pc.grants.env.contains(var) {
            if let Ok(value) = std::env::var(var) {
                a.env.push((var.clone(), value));
            }
        } else {
            tracing::warn!(plugin = %pc.name, "plugin asks for env {var:?}, not granted");
        }
    }
    for guest in &asked.dirs {
        match pc.grants.dirs.get(guest) {
            Some(host_dir) => a.dirs.push((guest.clone(), host_dir.clone())),
            None => tracing::warn!(plugin = %pc.name, "plugin asks for dir {guest:?}, not granted"),
        }
    }
    a.host_hooks = pc.grants.host_hooks.iter().cloned().collect();
    a.bind_sources = pc.grants.bind_sources.iter().cloned().collect();
    a.network = asked.network && pc.grants.network;
    if asked.network && !pc.grants.network {
        tracing::warn!(plugin = %pc.name, "plugin asks for network access, not granted");
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<PluginHost>();
    }

    #[test]
    fn authority_is_what_was_asked_and_granted() {
        let mut pc = PluginConfig {
            name: "p".into(),
            path: "p.wasm".into(),
            sha256: None,
            selection: Selection::Always,
            on_error: FailurePolicy::Deny,
            deadline_ms: None,
            memory_mib: None,
            settings: None,
            grants: Default::default(),
        };
        pc.grants.env.insert("PATH".into());
        pc.grants.env.insert("HOME".into());
        pc.grants.dirs.insert("/a".into(), "/srv/a".into());
        let asked = wit::CapabilityRequest {
            env: vec!["PATH".into(), "SECRET".into()],
            dirs: vec!["/a".into(), "/b".into()],
            network: true,
        };
        let a = authority(&pc, &asked);
        let env: Vec<_> = a.env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(env.iter().all(|k| *k == "PATH"));
        assert_eq!(a.dirs, [("/a".to_string(), "/srv/a".into())]);
        assert!(!a.network);
    }

    fn hook(stage: crate::model::HookStage, path: &str) -> crate::model::Hook {
        crate::model::Hook {
            stage,
            path: path.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout_secs: None,
        }
    }

    #[test]
    fn host_hooks_need_a_grant_guest_hooks_do_not() {
        use crate::model::HookStage::*;
        let authority = Authority {
            host_hooks: vec!["/usr/libexec/skiff-hooks".into(), "/opt/audit".into()],
            ..Authority::default()
        };
        let with = |hooks: Vec<crate::model::Hook>| Adjustments {
            hooks,
            ..Adjustments::default()
        };
        let ok = [
            hook(CreateRuntime, "/usr/libexec/skiff-hooks/tag"),
            hook(Poststop, "/opt/audit"),
            hook(CreateContainer, "/bin/anything"),
            hook(StartContainer, "/usr/bin/env"),
        ];
        assert_eq!(check_host_hooks(&authority, &with(ok.to_vec())), Ok(()));
        for bad in [
            hook(Poststart, "/bin/sh"),
            // Only files directly in a granted directory, not below it.
            hook(CreateRuntime, "/usr/libexec/skiff-hooks/sub/x"),
            hook(Poststop, "/opt/audit2"),
        ] {
            let err = check_host_hooks(&authority, &with(vec![bad.clone()])).unwrap_err();
            assert!(
                err.contains(&bad.path) && err.contains("grants.host_hooks"),
                "{err}"
            );
        }
        let none = Authority::default();
        assert!(check_host_hooks(&none, &with(vec![hook(CreateRuntime, "/bin/true")])).is_err());
    }

    #[test]
    fn bind_mounts_need_a_granted_source() {
        let dir = tempfile::tempdir().unwrap();
        let granted = dir.path().join("shared");
        std::fs::create_dir_all(granted.join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), granted.join("escape")).unwrap();
        let authority = Authority {
            bind_sources: vec![granted.clone()],
            ..Authority::default()
        };
        let bind = |source: &std::path::Path| Adjustments {
            mounts: vec![crate::model::Mount {
                destination: "/mnt".into(),
                source: source.display().to_string(),
                kind: "bind".into(),
                options: vec!["ro".into()],
            }],
            ..Adjustments::default()
        };
        assert_eq!(check_bind_sources(&authority, &bind(&granted)), Ok(()));
        assert_eq!(
            check_bind_sources(&authority, &bind(&granted.join("data"))),
            Ok(())
        );
        for bad in [
            dir.path().join("secret"),
            granted.join("escape"),
            granted.join("data/../../secret"),
            granted.join("missing"),
            std::path::PathBuf::from("/etc"),
        ] {
            let err = check_bind_sources(&authority, &bind(&bad)).unwrap_err();
            assert!(err.contains("bind"), "{err}");
        }
        assert!(check_bind_sources(&Authority::default(), &bind(&granted)).is_err());
    }
}
