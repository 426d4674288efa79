//! skiff's calls into the WebAssembly plugins (crates/plugins): image admission after a
//! pull or load, container admission before a container is recorded, and lifecycle
//! events. Plugins come from `$SKIFF_PLUGINS_CONFIG`, else `/etc/skiff/plugins.toml`
//! if it exists; with neither, no plugin runs and every decision is "allow".

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use skiff_image::Image;
use skiff_plugins::{
    AuditRecord, ContainerAdmission, ContainerDecision, ContainerEvent, EventKind, ImageAdmission,
    LayerInfo, PluginHost,
};
use skiff_runtime::container::{Bind, ContainerSpec, Containers};

const CONFIG_ENV: &str = "SKIFF_PLUGINS_CONFIG";
const DEFAULT_CONFIG: &str = "/etc/skiff/plugins.toml";
/// Annotations through which plugins see the requested microVM size.
const MEMORY_ANNOTATION: &str = "io.skiff.vm.memory-mib";
const VCPUS_ANNOTATION: &str = "io.skiff.vm.vcpus";
/// Where each container's audit records are appended.
const AUDIT_FILE: &str = "audit.jsonl";

pub struct Policy {
    host: Option<PluginHost>,
}

/// The configured plugins, loaded (and their components compiled or taken from the
/// cache) once per skiff process however many decision points a command passes.
pub fn get() -> Result<&'static Policy> {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    if let Some(p) = POLICY.get() {
        return Ok(p);
    }
    let loaded = load()?;
    Ok(POLICY.get_or_init(|| loaded))
}

fn load() -> Result<Policy> {
    let path = match std::env::var_os(CONFIG_ENV) {
        Some(p) => PathBuf::from(p),
        None if Path::new(DEFAULT_CONFIG).is_file() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok(Policy { host: None }),
    };
    let host = PluginHost::load_file(&path)
        .with_context(|| format!("load plugins from {}", path.display()))?;
    Ok(Policy { host: Some(host) })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Policy {
    /// Image admission for an image just pulled or loaded under `reference`.
    pub fn admit_image(&self, reference: &str, image: &Image) -> Result<()> {
        let Some(host) = &self.host else {
            return Ok(());
        };
        let d = host.admit_image(&ImageAdmission {
            reference: reference.to_owned(),
            digest: image.manifest_digest.to_string(),
            config: image.config_json.to_string(),
            layers: image
                .manifest
                .layers()
                .iter()
                .map(|l| LayerInfo {
                    digest: l.digest().to_string(),
                    media_type: l.media_type().to_string(),
                    size: l.size(),
                })
                .collect(),
        });
        if !d.allowed {
            bail!("image {reference} denied: {}", d.reason.unwrap_or_default());
        }
        Ok(())
    }

    /// Container admission: deny, or apply the plugins' merged adjustments to `spec`.
    /// The decision is kept in the spec for `skiff inspect`.
    pub fn admit_container(
        &self,
        spec: &mut ContainerSpec,
        image_config: &serde_json::Value,
    ) -> Result<()> {
        let Some(host) = &self.host else {
            return Ok(());
        };
        let annotations = BTreeMap::from([
            (MEMORY_ANNOTATION.to_owned(), spec.memory_mib.to_string()),
            (VCPUS_ANNOTATION.to_owned(), spec.vcpus.to_string()),
        ]);
        let oci_view = serde_json::json!({
            "process": {
                "args": spec.process.args,
                "env": spec.process.env,
                "cwd": spec.process.cwd,
                "user": { "uid": spec.process.user.uid, "gid": spec.process.user.gid },
                "terminal": spec.process.terminal,
            },
            "hostname": spec.hostname,
            "root": { "readonly": spec.readonly_rootfs },
            "annotations": annotations,
        });
        let decision = host.admit_container(&ContainerAdmission {
            id: spec.id.clone(),
            spec: oci_view.to_string(),
            image_reference: spec.image.clone(),
            image_config: image_config.to_string(),
            annotations,
            labels: spec.labels.clone(),
            tenant: spec.labels.get("tenant").cloned(),
        });
        if !decision.allowed {
            bail!(
                "container denied: {}",
                decision.reason.clone().unwrap_or_default()
            );
        }
        apply(spec, &decision)?;
        spec.plugin_decision = Some(serde_json::to_value(&decision)?);
        Ok(())
    }

    /// Container admission for an OCI bundle (skiff-runtime): the plugins see the whole
    /// config.json. Denial is an error; an allowed decision is returned for the caller
    /// to apply (`None` when no plugin is configured).
    #[allow(
        dead_code,
        reason = "skiff-runtime compiles this file too and calls it"
    )]
    pub fn admit_oci(
        &self,
        id: &str,
        config: &serde_json::Value,
        annotations: BTreeMap<String, String>,
    ) -> Result<Option<ContainerDecision>> {
        let Some(host) = &self.host else {
            return Ok(None);
        };
        let decision = host.admit_container(&ContainerAdmission {
            id: id.to_owned(),
            spec: config.to_string(),
            image_reference: String::new(),
            image_config: "{}".into(),
            tenant: annotations.get("tenant").cloned(),
            annotations,
            labels: BTreeMap::new(),
        });
        if !decision.allowed {
            bail!(
                "container denied: {}",
                decision.reason.clone().unwrap_or_default()
            );
        }
        Ok(Some(decision))
    }

    /// A lifecycle event; audit records go to the container's audit file (or, once the
    /// container is removed, to the log).
    pub fn event(&self, containers: &Containers, spec: &ContainerSpec, kind: EventKind) {
        self.event_in(&containers.dir_of(&spec.id), &spec.id, &spec.labels, kind);
    }

    /// A lifecycle event for a container whose records live in `dir`.
    pub fn event_in(
        &self,
        dir: &Path,
        id: &str,
        labels: &BTreeMap<String, String>,
        kind: EventKind,
    ) {
        let Some(host) = &self.host else { return };
        let records = host.lifecycle(&ContainerEvent {
            id: id.to_owned(),
            kind,
            annotations: BTreeMap::new(),
            labels: labels.clone(),
            tenant: labels.get("tenant").cloned(),
            timestamp_ms: now_ms(),
        });
        if let Err(e) = append_audit(dir, &records) {
            for r in &records {
                tracing::info!(plugin = %r.plugin, event = %r.event, action = %r.action, "{}", r.message);
            }
            tracing::debug!("audit file: {e}");
        }
    }
}

fn append_audit(dir: &Path, records: &[AuditRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    if !dir.is_dir() {
        bail!("{} is gone", dir.display());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(AUDIT_FILE))?;
    let mut buf = Vec::new();
    for r in records {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    Ok(())
}

/// Audit records of a container, for `skiff inspect`.
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(AUDIT_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Applies merged adjustments to what `skiff run` controls; anything it cannot honour is
/// refused rather than silently dropped.
fn apply(spec: &mut ContainerSpec, d: &ContainerDecision) -> Result<()> {
    let a = &d.adjustments;
    for (k, v) in &a.env {
        spec.process
            .env
            .retain(|e| e.split('=').next() != Some(k.as_str()));
        spec.process.env.push(format!("{k}={v}"));
    }
    for (k, v) in &a.labels {
        spec.labels.insert(k.clone(), v.clone());
    }
    if let Some(m) = a.vm.memory_mib {
        spec.memory_mib = m;
    }
    if let Some(c) = a.vm.vcpus {
        spec.vcpus = c;
    }
    for m in &a.mounts {
        if m.kind != "bind" && !m.options.iter().any(|o| o == "bind" || o == "rbind") {
            bail!(
                "a plugin asked for a {:?} mount at {}; skiff run only adds bind mounts",
                m.kind,
                m.destination
            );
        }
        spec.binds.push(Bind {
            host: PathBuf::from(&m.source),
            target: m.destination.clone(),
            readonly: m.options.iter().any(|o| o == "ro"),
        });
    }
    if !a.hooks.is_empty() {
        bail!("a plugin asked for OCI hooks, which skiff run does not run (skiff-runtime will)");
    }
    if a.resources != skiff_plugins::Resources::default() {
        bail!("a plugin asked for cgroup resources; size the microVM (vm.memory_mib, vm.vcpus) instead");
    }
    Ok(())
}
