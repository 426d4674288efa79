//! `skiff-plugins`: the WebAssembly plugin host of skiff (admission policy and lifecycle
//! hooks). Plugins are components of the world in `plugins/wit/skiff-plugin.wit`
//! (write them with `plugins/sdk`); the operator lists them in a configuration file
//! (format: [`config`]).
//!
//! # Use
//! ```no_run
//! use skiff_plugins::{ContainerAdmission, ContainerEvent, EventKind, ImageAdmission, PluginHost};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once per process (skiff, skiff-runtime): load and validate every plugin.
//! let host = PluginHost::load_file("/etc/skiff/plugins.toml".as_ref())?;
//!
//! // On pull/load of an image.
//! let d = host.admit_image(&ImageAdmission { reference: "docker.io/library/busybox:latest".into(), ..Default::default() });
//! if !d.allowed { /* refuse with d.reason; keep d.records */ }
//!
//! // Before create: deny, or apply `adjustments` to the spec / VM size; store the
//! // whole decision (it is serde) in the container state for `skiff inspect`.
//! let c = host.admit_container(&ContainerAdmission { id: "c1".into(), spec: "{}".into(), ..Default::default() });
//!
//! // At created / started / exited(status) / removed: keep the audit records.
//! let audit = host.lifecycle(&ContainerEvent { id: "c1".into(), kind: EventKind::Exited(0),
//!     annotations: Default::default(), labels: Default::default(), tenant: None, timestamp_ms: 0 });
//! # let _ = (c, audit); Ok(()) }
//! ```
//!
//! # Guarantees
//! - One wasmtime Engine per host with the pooling allocator; each component is
//!   compiled once (or taken from the on-disk cache, keyed by sha256 of the component
//!   and of the engine's settings) and pre-linked (`InstancePre`).
//! - Every call gets a fresh Store and instance: no state survives between calls.
//! - Every call has a deadline (default 100 ms, epoch interruption) and a memory cap
//!   (default 32 MiB over all its memories). A plugin that traps, loops, exhausts
//!   memory or its stack, or returns an invalid answer fails that call with a message
//!   naming the plugin; admission hooks then follow the plugin's failure policy
//!   (`deny` by default, or `allow`); lifecycle observers only warn.
//! - No ambient authority: WASI is linked, but with no env, no preopened dirs, no
//!   network, no stdin; a plugin gets env vars, read-only dirs or network only when
//!   its `describe()` asks for them AND the operator's `grants` allow them. The only
//!   skiff functions a plugin can import are `log` (rate- and size-limited) and
//!   `settings` (its own settings).
//! - Every decision is returned as data ([`Decision`], [`ContainerDecision`]: one
//!   [`DecisionRecord`] per plugin call) and logged with `tracing`.

mod bindings;
pub mod cache;
pub mod config;
mod convert;
mod engine;
pub mod error;
mod host;
mod merge;
pub mod model;
mod plugin;

pub use cache::{ArtifactSource, CacheStats};
pub use config::{FailurePolicy, Grants, PluginConfig, PluginsConfig, Selection};
pub use error::PluginError;
pub use host::{PluginHost, DISABLE_ANNOTATION, ENABLE_ANNOTATION};
pub use model::{
    Adjustments, AuditRecord, ContainerAdmission, ContainerDecision, ContainerEvent, Decision,
    DecisionRecord, EventKind, Hook, HookKind, HookStage, ImageAdmission, LayerInfo, Mount,
    Outcome, Resources, VmSize, PLUGIN_FAILED_ACTION,
};
pub use plugin::PluginSummary;
