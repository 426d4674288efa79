//! The host's public request and decision types. They are plain serde data so that
//! skiff can store a decision in the container's state and `skiff inspect` can show it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An image about to be admitted (on pull and on load).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageAdmission {
    /// Normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// Manifest digest, `sha256:...`.
    pub digest: String,
    /// OCI image config JSON.
    pub config: String,
    pub layers: Vec<LayerInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LayerInfo {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// A container about to be created.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerAdmission {
    pub id: String,
    /// OCI runtime spec (config.json) JSON.
    pub spec: String,
    pub image_reference: String,
    /// OCI image config JSON (`{}` when unknown).
    pub image_config: String,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "status")]
pub enum EventKind {
    Created,
    Started,
    /// Exit status (128 + signal when killed by a signal).
    Exited(i32),
    Removed,
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Exited(_) => "exited",
            EventKind::Removed => "removed",
        }
    }
}

/// A lifecycle event of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerEvent {
    pub id: String,
    pub kind: EventKind,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub tenant: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// The hook a record is about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    ImageAdmission,
    ContainerAdmission,
    Lifecycle,
}

impl HookKind {
    pub fn name(&self) -> &'static str {
        match self {
            HookKind::ImageAdmission => "admit-image",
            HookKind::ContainerAdmission => "admit-container",
            HookKind::Lifecycle => "on-event",
        }
    }
}

/// What one plugin did in one hook call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    Allowed,
    Denied {
        reason: String,
    },
    Adjusted {
        adjustments: Adjustments,
    },
    Observed {
        records: usize,
    },
    /// The call failed (trap, deadline, memory cap, invalid answer); `applied` says
    /// what the failure policy made of it: `denied`, `allowed` or `warned`.
    Failed {
        error: String,
        applied: String,
    },
}

/// One plugin call, as shown by `skiff inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionRecord {
    pub plugin: String,
    pub hook: HookKind,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub elapsed_us: u64,
}

/// Result of image admission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Why not, naming the plugin, when `allowed` is false.
    pub reason: Option<String>,
    pub records: Vec<DecisionRecord>,
}

/// Result of container admission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerDecision {
    pub allowed: bool,
    pub reason: Option<String>,
    /// The merged adjustments to apply (empty when denied).
    pub adjustments: Adjustments,
    pub records: Vec<DecisionRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    pub destination: String,
    pub source: String,
    pub kind: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmSize {
    pub memory_mib: Option<u32>,
    pub vcpus: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resources {
    pub memory_limit_bytes: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum HookStage {
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookStage {
    /// The OCI runtime-spec name of the stage.
    pub fn name(self) -> &'static str {
        match self {
            Self::CreateRuntime => "createRuntime",
            Self::CreateContainer => "createContainer",
            Self::StartContainer => "startContainer",
            Self::Poststart => "poststart",
            Self::Poststop => "poststop",
        }
    }

    /// Whether the runtime runs it on the host (the others run inside the guest).
    pub fn runs_on_host(self) -> bool {
        matches!(self, Self::CreateRuntime | Self::Poststart | Self::Poststop)
    }
}

/// An OCI runtime-spec hook to add.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hook {
    pub stage: HookStage,
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout_secs: Option<u32>,
}

/// Declarative changes to a container; what the runtime applies to the spec and the VM.
/// `env`, `annotations` and `labels` are set (replacing existing values), `mounts` and
/// `hooks` are appended, set `vm`/`resources` fields replace the configured ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Adjustments {
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub vm: VmSize,
    pub resources: Resources,
    pub hooks: Vec<Hook>,
}

impl Adjustments {
    pub fn is_empty(&self) -> bool {
        *self == Adjustments::default()
    }
}

/// An audit record from a lifecycle plugin (or about its failure: `action` is then
/// `plugin.failed` and `message` the error).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub plugin: String,
    pub container_id: String,
    /// `created`, `started`, `exited` or `removed`.
    pub event: String,
    pub action: String,
    pub message: String,
    pub fields: BTreeMap<String, String>,
    pub timestamp_ms: u64,
}

/// Action of the audit record that reports a failed lifecycle plugin.
pub const PLUGIN_FAILED_ACTION: &str = "plugin.failed";
