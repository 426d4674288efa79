//! The skiff plugin SDK: implement [`Plugin`] and call [`export_plugin!`]; the SDK
//! does the WebAssembly component plumbing (`plugins/wit/skiff-plugin.wit`).
//!
//! ```ignore
//! use skiff_plugin_sdk::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings { registries: Vec<String> }
//!
//! struct Allowlist;
//!
//! impl Plugin for Allowlist {
//!     type Settings = Settings;
//!     const NAME: &'static str = "allowlist";
//!     const HOOKS: HookSet = HookSet::IMAGE_ADMISSION;
//!
//!     fn admit_image(settings: &Settings, image: &ImageAdmission) -> ImageVerdict {
//!         if settings.registries.iter().any(|r| registry_of(&image.reference) == r) {
//!             ImageVerdict::Allow
//!         } else {
//!             ImageVerdict::Deny(format!("registry of {} is not allowed", image.reference))
//!         }
//!     }
//! }
//!
//! export_plugin!(Allowlist);
//! ```
//!
//! Every call runs in a fresh instance: a plugin keeps no state between calls. Its
//! settings (from the operator's configuration) are parsed into `Settings` with serde
//! before each hook; they were validated once when skiff loaded the plugin.

// The generated bindings and the export macro name this crate by its path, also from
// inside the crate itself.
extern crate self as skiff_plugin_sdk;

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

pub use serde;
pub use serde_json;
pub use wit_bindgen;

/// Raw bindings generated from the WIT world (most authors never need them).
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_skiff_plugin_world",
        default_bindings_module: "skiff_plugin_sdk::bindings",
        runtime_path: "skiff_plugin_sdk::wit_bindgen::rt",
        bitflags_path: "skiff_plugin_sdk::wit_bindgen::rt::bitflags",
        additional_type_attributes: {
            "skiff:plugin/types@0.1.0/vm-size": [#[derive(Default)]],
            "skiff:plugin/types@0.1.0/resources": [#[derive(Default)]],
            "skiff:plugin/types@0.1.0/adjustment": [#[derive(Default)]],
        },
    });
}

pub use bindings::skiff::plugin::host::Level;
pub use bindings::skiff::plugin::types::{
    Adjustment, AuditRecord, CapabilityRequest, ContainerAdmission, ContainerEvent,
    ContainerVerdict, EventKind, Hook, HookSet, HookStage, ImageAdmission, ImageVerdict, KeyValue,
    Layer, Mount, PluginInfo, Resources, VmSize,
};

/// What a plugin author implements. Every hook has a harmless default (allow, no
/// records); list the hooks you implement in [`Plugin::HOOKS`] so skiff only calls those.
pub trait Plugin {
    /// The plugin's settings, deserialized from the operator's JSON/TOML (`()` for none).
    type Settings: DeserializeOwned;

    /// Name reported to skiff at load time.
    const NAME: &'static str;
    /// Version reported to skiff at load time.
    const VERSION: &'static str = "0.1.0";
    /// The hooks this plugin implements.
    const HOOKS: HookSet;

    /// Authority the plugin asks for (the operator must also grant it). None by default.
    fn requests() -> CapabilityRequest {
        CapabilityRequest {
            env: Vec::new(),
            dirs: Vec::new(),
            network: false,
        }
    }

    /// Semantic checks on settings that parsed; called once at load time.
    fn check_settings(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    fn admit_image(_settings: &Self::Settings, _image: &ImageAdmission) -> ImageVerdict {
        ImageVerdict::Allow
    }

    fn admit_container(
        _settings: &Self::Settings,
        _container: &ContainerAdmission,
    ) -> ContainerVerdict {
        ContainerVerdict::Allow
    }

    fn on_event(_settings: &Self::Settings, _event: &ContainerEvent) -> Vec<AuditRecord> {
        Vec::new()
    }
}

/// Export a [`Plugin`] implementation as the component's `hooks` interface.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        type __SkiffPluginExport = $crate::Adapter<$plugin>;
        $crate::bindings::__export_skiff_plugin_world!(__SkiffPluginExport with_types_in $crate::bindings);
    };
}

/// Bridges a [`Plugin`] to the generated `Guest` trait. Used by [`export_plugin!`].
#[doc(hidden)]
pub struct Adapter<P>(PhantomData<P>);

fn parse_settings<S: DeserializeOwned>(json: &str) -> Result<S, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid settings: {e}"))
}

fn current_settings<S: DeserializeOwned>() -> Result<S, String> {
    parse_settings(&bindings::skiff::plugin::host::settings())
}

impl<P: Plugin> bindings::exports::skiff::plugin::hooks::Guest for Adapter<P> {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: P::NAME.to_string(),
            version: P::VERSION.to_string(),
            hooks: P::HOOKS,
            requests: P::requests(),
        }
    }

    fn validate_settings(settings: String) -> Result<(), String> {
        let parsed: P::Settings = parse_settings(&settings)?;
        P::check_settings(&parsed)
    }

    fn admit_image(request: ImageAdmission) -> ImageVerdict {
        match current_settings::<P::Settings>() {
            Ok(settings) => P::admit_image(&settings, &request),
            Err(e) => ImageVerdict::Deny(e),
        }
    }

    fn admit_container(request: ContainerAdmission) -> ContainerVerdict {
        match current_settings::<P::Settings>() {
            Ok(settings) => P::admit_container(&settings, &request),
            Err(e) => ContainerVerdict::Deny(e),
        }
    }

    fn on_event(event: ContainerEvent) -> Vec<AuditRecord> {
        match current_settings::<P::Settings>() {
            Ok(settings) => P::on_event(&settings, &event),
            Err(e) => {
                log(Level::Error, &e);
                Vec::new()
            }
        }
    }
}

/// Write to skiff's log, tagged with this plugin's configured name.
pub fn log(level: Level, message: &str) {
    bindings::skiff::plugin::host::log(level, message);
}

fn lookup<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

/// `registry` part of an image reference, with Docker Hub's default for short names
/// (`busybox` and `library/busybox` are on `docker.io`).
pub fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

impl ImageAdmission {
    /// The image config as JSON (`Null` when it does not parse).
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.config).unwrap_or(serde_json::Value::Null)
    }
}

impl ContainerAdmission {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        lookup(&self.annotations, key)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        lookup(&self.labels, key)
    }

    /// The OCI runtime spec as JSON (`Null` when it does not parse).
    pub fn spec_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.spec).unwrap_or(serde_json::Value::Null)
    }

    /// The tenant: the explicit one, or else the value of `label`.
    pub fn tenant_or_label(&self, label: &str) -> Option<&str> {
        self.tenant.as_deref().or_else(|| self.label(label))
    }
}

impl ContainerEvent {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        lookup(&self.annotations, key)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        lookup(&self.labels, key)
    }
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Adjustment {
    /// True when the adjustment changes nothing.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.mounts.is_empty()
            && self.annotations.is_empty()
            && self.labels.is_empty()
            && self.vm.memory_mib.is_none()
            && self.vm.vcpus.is_none()
            && self.resources.memory_limit_bytes.is_none()
            && self.resources.cpu_shares.is_none()
            && self.resources.cpu_quota.is_none()
            && self.resources.cpu_period.is_none()
            && self.resources.pids_limit.is_none()
            && self.hooks.is_empty()
    }

    /// `Allow` when empty, `Adjust(self)` otherwise.
    pub fn into_verdict(self) -> ContainerVerdict {
        if self.is_empty() {
            ContainerVerdict::Allow
        } else {
            ContainerVerdict::Adjust(self)
        }
    }
}

impl AuditRecord {
    pub fn new(action: impl Into<String>, message: impl Into<String>) -> Self {
        AuditRecord {
            action: action.into(),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push(KeyValue::new(key, value));
        self
    }
}
