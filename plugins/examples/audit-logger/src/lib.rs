//! Observes lifecycle events and turns each into an audit record (and a log line).
//!
//! Settings (optional): `{"labels": ["tenant", "team"], "log": true}`: which labels to
//! copy into records, and whether to also write to skiff's log.

use skiff_plugin_sdk::{
    export_plugin, log, AuditRecord, ContainerEvent, EventKind, HookSet, Level, Plugin,
};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    log: bool,
}

struct AuditLogger;

impl Plugin for AuditLogger {
    type Settings = Option<Settings>;
    const NAME: &'static str = "audit-logger";
    const HOOKS: HookSet = HookSet::LIFECYCLE;

    fn on_event(settings: &Option<Settings>, event: &ContainerEvent) -> Vec<AuditRecord> {
        let default = Settings::default();
        let settings = settings.as_ref().unwrap_or(&default);
        let (action, what) = match event.kind {
            EventKind::Created => ("container.created", "created".to_string()),
            EventKind::Started => ("container.started", "started".to_string()),
            EventKind::Exited(status) => {
                ("container.exited", format!("exited with status {status}"))
            }
            EventKind::Removed => ("container.removed", "removed".to_string()),
        };
        let message = format!("container {} {what}", event.id);
        if settings.log {
            log(Level::Info, &message);
        }
        let mut record = AuditRecord::new(action, message)
            .field("id", event.id.as_str())
            .field("time_ms", event.timestamp_ms.to_string());
        if let Some(tenant) = &event.tenant {
            record = record.field("tenant", tenant.as_str());
        }
        if let EventKind::Exited(status) = event.kind {
            record = record.field("status", status.to_string());
        }
        for label in &settings.labels {
            if let Some(value) = event.label(label) {
                record = record.field(format!("label.{label}"), value);
            }
        }
        vec![record]
    }
}

export_plugin!(AuditLogger);
