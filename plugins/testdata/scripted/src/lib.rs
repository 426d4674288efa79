//! Test plugin whose answers are scripted by its settings, so host tests can exercise
//! ordering, merging, conflicts, denials and audit records with one component.
//!
//! Settings: `{"image_deny": "reason", "container_deny": "reason",
//!             "adjust": {"env": {"K": "V"}, "annotations": {}, "labels": {},
//!                        "memory_mib": 1, "vcpus": 1, "pids_limit": 1,
//!                        "memory_limit_bytes": 1, "cpu_quota": 1, "cpu_period": 1,
//!                        "mounts": [{"destination": "/d", "source": "/s"}],
//!                        "hooks": [{"path": "/bin/true", "args": [], "env": [],
//!                                   "stage": "poststart"}]},
//!             "records": 1, "reject_settings": "reason", "log": "message"}`

use std::collections::BTreeMap;

use skiff_plugin_sdk::{
    export_plugin, log, Adjustment, AuditRecord, ContainerAdmission, ContainerEvent,
    ContainerVerdict, EventKind, Hook, HookSet, HookStage, ImageAdmission, ImageVerdict, KeyValue,
    Level, Mount, Plugin, Resources, VmSize,
};

#[derive(serde::Deserialize, Default)]
struct MountSpec {
    destination: String,
    source: String,
}

#[derive(serde::Deserialize, Default)]
struct HookSpec {
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    /// An OCI stage name; createRuntime when absent.
    #[serde(default)]
    stage: Option<String>,
}

fn stage(name: Option<&str>) -> HookStage {
    match name {
        Some("createContainer") => HookStage::CreateContainer,
        Some("startContainer") => HookStage::StartContainer,
        Some("poststart") => HookStage::Poststart,
        Some("poststop") => HookStage::Poststop,
        _ => HookStage::CreateRuntime,
    }
}

#[derive(serde::Deserialize, Default)]
struct AdjustSpec {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    memory_mib: Option<u32>,
    vcpus: Option<u32>,
    pids_limit: Option<i64>,
    memory_limit_bytes: Option<u64>,
    cpu_quota: Option<i64>,
    cpu_period: Option<u64>,
    #[serde(default)]
    mounts: Vec<MountSpec>,
    #[serde(default)]
    hooks: Vec<HookSpec>,
}

#[derive(serde::Deserialize, Default)]
struct Settings {
    image_deny: Option<String>,
    container_deny: Option<String>,
    adjust: Option<AdjustSpec>,
    #[serde(default)]
    records: u32,
    reject_settings: Option<String>,
    log: Option<String>,
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<KeyValue> {
    m.iter()
        .map(|(k, v)| KeyValue::new(k.as_str(), v.as_str()))
        .collect()
}

struct Scripted;

impl Plugin for Scripted {
    type Settings = Option<Settings>;
    const NAME: &'static str = "scripted";
    const HOOKS: HookSet = HookSet::all();

    fn check_settings(settings: &Option<Settings>) -> Result<(), String> {
        match settings.as_ref().and_then(|s| s.reject_settings.clone()) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn admit_image(settings: &Option<Settings>, _image: &ImageAdmission) -> ImageVerdict {
        if let Some(message) = settings.as_ref().and_then(|s| s.log.as_ref()) {
            log(Level::Info, message);
        }
        match settings.as_ref().and_then(|s| s.image_deny.clone()) {
            Some(reason) => ImageVerdict::Deny(reason),
            None => ImageVerdict::Allow,
        }
    }

    fn admit_container(settings: &Option<Settings>, _c: &ContainerAdmission) -> ContainerVerdict {
        let Some(settings) = settings else {
            return ContainerVerdict::Allow;
        };
        if let Some(reason) = &settings.container_deny {
            return ContainerVerdict::Deny(reason.clone());
        }
        let Some(a) = &settings.adjust else {
            return ContainerVerdict::Allow;
        };
        Adjustment {
            env: pairs(&a.env),
            annotations: pairs(&a.annotations),
            labels: pairs(&a.labels),
            vm: VmSize {
                memory_mib: a.memory_mib,
                vcpus: a.vcpus,
            },
            resources: Resources {
                pids_limit: a.pids_limit,
                memory_limit_bytes: a.memory_limit_bytes,
                cpu_quota: a.cpu_quota,
                cpu_period: a.cpu_period,
                ..Resources::default()
            },
            mounts: a
                .mounts
                .iter()
                .map(|m| Mount {
                    destination: m.destination.clone(),
                    source: m.source.clone(),
                    kind: "bind".into(),
                    options: vec!["ro".into(), "rbind".into()],
                })
                .collect(),
            hooks: a
                .hooks
                .iter()
                .map(|h| Hook {
                    stage: stage(h.stage.as_deref()),
                    path: h.path.clone(),
                    args: h.args.clone(),
                    env: h.env.clone(),
                    timeout_secs: None,
                })
                .collect(),
        }
        .into_verdict()
    }

    fn on_event(settings: &Option<Settings>, event: &ContainerEvent) -> Vec<AuditRecord> {
        let n = settings.as_ref().map_or(0, |s| s.records);
        let kind = match event.kind {
            EventKind::Created => "created".to_string(),
            EventKind::Started => "started".to_string(),
            EventKind::Exited(status) => format!("exited:{status}"),
            EventKind::Removed => "removed".to_string(),
        };
        (0..n)
            .map(|i| AuditRecord::new(kind.clone(), format!("record {i} for {}", event.id)))
            .collect()
    }
}

export_plugin!(Scripted);
