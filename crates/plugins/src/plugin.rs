//! One loaded plugin: its pre-linked component, its limits and authority, and how a
//! single call runs (a fresh Store, a memory cap, an epoch deadline).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{host, types, Plugin, PluginPre};
use crate::cache::ArtifactSource;
use crate::config::{FailurePolicy, Selection};
use crate::engine::{deadline_ticks, EpochTicker};

/// Log lines a plugin may write per call, and their size.
const MAX_LOG_LINES: u32 = 32;
const MAX_LOG_LINE: usize = 1024;
/// Plugin stderr kept (it carries panic messages).
const STDERR_CAPTURE: usize = 2048;
/// Table elements a plugin may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Authority a plugin ended up with: what it asked for AND the operator granted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authority {
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dirs: Vec<(String, PathBuf)>,
    pub(crate) network: bool,
    /// Host programs (files or directories) it may add as host-side hooks; operator-only.
    pub(crate) host_hooks: Vec<PathBuf>,
    /// Host directories whose contents it may bind into containers; operator-only.
    pub(crate) bind_sources: Vec<PathBuf>,
}

/// Memory cap over all linear memories of one instance, remembering that it hit.
struct MemoryCap {
    cap: usize,
    total: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.total.saturating_sub(current).saturating_add(desired);
        if after > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.total = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Per-call state behind the Store.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    plugin: Arc<str>,
    settings: Arc<str>,
    limits: MemoryCap,
    log_lines: u32,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: host::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(plugin = %self.plugin, "plugin log limit reached; dropping the rest of this call's lines");
            }
            return;
        }
        let message = crate::convert::truncate(message, MAX_LOG_LINE);
        let plugin = &*self.plugin;
        match level {
            host::Level::Trace => tracing::trace!(plugin, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn settings(&mut self) -> String {
        self.settings.to_string()
    }
}

/// The linker every plugin is instantiated with: WASI (whose authority each call's
/// WasiCtx decides) and the `host` interface.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

pub(crate) struct LoadedPlugin {
    pub(crate) name: Arc<str>,
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    pub(crate) selection: Selection,
    pub(crate) on_error: FailurePolicy,
    pub(crate) hooks: types::HookSet,
    pub(crate) info_name: String,
    pub(crate) info_version: String,
    pub(crate) source: ArtifactSource,
    pub(crate) settings: Arc<str>,
    pub(crate) deadline: Duration,
    pub(crate) memory_bytes: usize,
    pub(crate) authority: Authority,
    pub(crate) pre: PluginPre<CallState>,
}

impl LoadedPlugin {
    pub(crate) fn pre_from(
        instance_pre: InstancePre<CallState>,
    ) -> wasmtime::Result<PluginPre<CallState>> {
        PluginPre::new(instance_pre)
    }

    fn wasi(&self) -> std::result::Result<(WasiCtx, MemoryOutputPipe), String> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut b = WasiCtxBuilder::new();
        b.stderr(stderr.clone());
        for (k, v) in &self.authority.env {
            b.env(k, v);
        }
        for (guest, host_dir) in &self.authority.dirs {
            b.preopened_dir(host_dir, guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    format!(
                        "cannot open granted directory {}: {e:#}",
                        host_dir.display()
                    )
                })?;
        }
        if self.authority.network {
            b.inherit_network().allow_ip_name_lookup(true);
        }
        Ok((b.build(), stderr))
    }

    /// Run `f` against a fresh instance under this plugin's limits. The error says, in
    /// words an operator understands, what went wrong (without the plugin's name,
    /// which the caller adds).
    pub(crate) fn call<R>(
        &self,
        engine: &Engine,
        ticker: &EpochTicker,
        what: &str,
        f: impl FnOnce(&Plugin, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> std::result::Result<R, String> {
        let (wasi, stderr) = self.wasi()?;
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            plugin: Arc::clone(&self.name),
            settings: Arc::clone(&self.settings),
            limits: MemoryCap {
                cap: self.memory_bytes,
                total: 0,
                hit: false,
            },
            log_lines: 0,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        let _active = ticker.activate();
        store.set_epoch_deadline(deadline_ticks(self.deadline));
        store.epoch_deadline_trap();
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| f(&instance, &mut store));
        result.map_err(|e| self.explain(&e, store.data().limits.hit, &stderr, what))
    }

    fn explain(
        &self,
        e: &wasmtime::Error,
        memory_hit: bool,
        stderr: &MemoryOutputPipe,
        what: &str,
    ) -> String {
        let trap = e.downcast_ref::<Trap>();
        let base = if matches!(trap, Some(Trap::Interrupt)) {
            format!(
                "{what} exceeded its deadline of {} ms and was stopped",
                self.deadline.as_millis()
            )
        } else if memory_hit {
            format!(
                "{what} exceeded its memory cap of {} MiB and was stopped",
                self.memory_bytes >> 20
            )
        } else if matches!(trap, Some(Trap::StackOverflow)) {
            format!("{what} overflowed its stack")
        } else if let Some(t) = trap {
            format!("{what} trapped: {t}")
        } else {
            format!("{what} failed: {e:#}")
        };
        let captured = stderr.contents();
        let text = String::from_utf8_lossy(&captured);
        let text = text.trim();
        if text.is_empty() {
            base
        } else {
            let text = crate::convert::truncate(text.replace('\n', " | "), 512);
            format!("{base} (plugin stderr: {text})")
        }
    }
}

/// Summary of a loaded plugin, for `skiff info`-style output.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PluginSummary {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    /// Name and version the plugin reports about itself.
    pub reports_name: String,
    pub reports_version: String,
    pub hooks: Vec<String>,
    pub selection: Selection,
    pub on_error: FailurePolicy,
    pub deadline_ms: u64,
    pub memory_mib: u64,
    pub compiled_from: ArtifactSource,
    /// Authority actually given: env var names, guest dirs, network.
    pub granted_env: Vec<String>,
    pub granted_dirs: BTreeMap<String, PathBuf>,
    pub granted_network: bool,
}

impl LoadedPlugin {
    pub(crate) fn summary(&self) -> PluginSummary {
        let mut hooks = Vec::new();
        for (flag, name) in [
            (types::HookSet::IMAGE_ADMISSION, "image-admission"),
            (types::HookSet::CONTAINER_ADMISSION, "container-admission"),
            (types::HookSet::LIFECYCLE, "lifecycle"),
            (types::HookSet::SETTINGS_VALIDATION, "settings-validation"),
        ] {
            if self.hooks.contains(flag) {
                hooks.push(name.to_string());
            }
        }
        PluginSummary {
            name: self.name.to_string(),
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            reports_name: self.info_name.clone(),
            reports_version: self.info_version.clone(),
            hooks,
            selection: self.selection,
            on_error: self.on_error,
            deadline_ms: u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX),
            memory_mib: (self.memory_bytes >> 20) as u64,
            compiled_from: self.source,
            granted_env: self.authority.env.iter().map(|(k, _)| k.clone()).collect(),
            granted_dirs: self.authority.dirs.iter().cloned().collect(),
            granted_network: self.authority.network,
        }
    }
}
