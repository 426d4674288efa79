//! skiff's calls into the WebAssembly plugins (crates/plugins): image admission after a
//! pull or load, container admission before a container is recorded, and lifecycle
//! events. Plugins come from `$SKIFF_PLUGINS_CONFIG`, else `/etc/skiff/plugins.toml`
//! if it exists; with neither, no plugin runs and every decision is "allow".

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use skiff_image::Image;
use skiff_plugins::{
    AuditRecord, ContainerAdmission, ContainerDecision, ContainerEvent, EventKind, ImageAdmission,
    LayerInfo, PluginHost,
};
use skiff_runtime::container::{Bind, ContainerSpec, Containers};

use crate::{Error, Result};

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
    let host = PluginHost::load_file(&path).map_err(|source| Error::Plugins {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Policy { host: Some(host) })
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
            return Err(Error::Denied(format!(
                "image {reference} denied: {}",
                d.reason.unwrap_or_default()
            )));
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
            return Err(Error::Denied(format!(
                "container denied: {}",
                decision.reason.clone().unwrap_or_default()
            )));
        }
        apply(spec, &decision)?;
        spec.plugin_decision = Some(serde_json::to_value(&decision)?);
        Ok(())
    }

    /// Container admission for an OCI bundle (skiff-runtime): the plugins see the whole
    /// config.json. Denial is an error; an allowed decision is returned for the caller
    /// to apply (`None` when no plugin is configured).
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
            return Err(Error::Denied(format!(
                "container denied: {}",
                decision.reason.clone().unwrap_or_default()
            )));
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
            timestamp_ms: skiff_sys::time::now_ms(),
        });
        if let Err(e) = append_audit(dir, &records) {
            for r in &records {
                tracing::info!(plugin = %r.plugin, event = %r.event, action = %r.action, "{}", r.message);
            }
            tracing::debug!("audit file: {e}");
        }
    }
}

fn append_audit(dir: &Path, records: &[AuditRecord]) -> std::io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    let mut f =
        skiff_runtime::owner_only::append(&dir.join(AUDIT_FILE)).map_err(std::io::Error::other)?;
    let mut buf = Vec::new();
    for r in records {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)
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
    let (memory_mib, vcpus) = vm_size(a)?;
    if let Some(m) = memory_mib {
        spec.memory_mib = m;
    }
    if let Some(c) = vcpus {
        spec.vcpus = c;
    }
    for m in &a.mounts {
        if m.kind != "bind" && !m.options.iter().any(|o| o == "bind" || o == "rbind") {
            return Err(Error::Adjustment(format!(
                "a plugin asked for a {:?} mount at {}; skiff run only adds bind mounts",
                m.kind, m.destination
            )));
        }
        spec.binds.push(Bind {
            host: PathBuf::from(&m.source),
            target: m.destination.clone(),
            readonly: m.options.iter().any(|o| o == "ro"),
        });
    }
    if !a.hooks.is_empty() {
        add_hooks(spec.hooks.get_or_insert_with(Default::default), &a.hooks)?;
    }
    Ok(())
}

/// The microVM size the adjustments ask for. A container's microVM is sized, not
/// throttled: a memory limit becomes the VM's memory and a CPU quota its vCPU count.
/// CPU shares and a pids limit have no meaning for a VM of one container and are refused
/// rather than dropped.
pub fn vm_size(a: &skiff_plugins::Adjustments) -> Result<(Option<u32>, Option<u32>)> {
    let r = &a.resources;
    if r.cpu_shares.is_some() || r.pids_limit.is_some() {
        return Err(Error::Adjustment(
            "a plugin asked for cpu-shares or pids-limit; a microVM is sized instead \
             (vm.memory-mib, vm.vcpus, or resources memory-limit-bytes and cpu-quota)"
                .into(),
        ));
    }
    let from_limit = r
        .memory_limit_bytes
        .map(|b| u32::try_from(b.div_ceil(1 << 20)).unwrap_or(u32::MAX));
    let from_quota = match r.cpu_quota {
        Some(q) if q > 0 => {
            let period = r.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
            Some(u32::try_from((q as u64).div_ceil(period)).unwrap_or(u32::MAX))
        }
        Some(q) => {
            return Err(Error::Adjustment(format!(
                "a plugin asked for cpu-quota {q}; it must be positive"
            )))
        }
        None => None,
    };
    let pick = |what: &str, sized: Option<u32>, derived: Option<u32>| match (sized, derived) {
        (Some(s), Some(d)) if s != d => Err(Error::Adjustment(format!(
            "a plugin asked for a microVM with {what} {s} and resources that mean {d}"
        ))),
        (s, d) => Ok(s.or(d)),
    };
    Ok((
        pick("memory-mib", a.vm.memory_mib, from_limit)?,
        pick("vcpus", a.vm.vcpus, from_quota)?,
    ))
}

/// Appends plugin hooks to the OCI hooks of their stage (after the spec's own).
pub fn add_hooks(hooks: &mut oci_spec::runtime::Hooks, add: &[skiff_plugins::Hook]) -> Result<()> {
    use skiff_plugins::HookStage;
    for h in add {
        let mut b = oci_spec::runtime::HookBuilder::default()
            .path(&h.path)
            .args(h.args.clone())
            .env(h.env.clone());
        if let Some(t) = h.timeout_secs {
            b = b.timeout(i64::from(t));
        }
        let hook = b
            .build()
            .map_err(|e| Error::Adjustment(format!("plugin hook: {e}")))?;
        let list = match h.stage {
            HookStage::CreateRuntime => hooks.create_runtime_mut(),
            HookStage::CreateContainer => hooks.create_container_mut(),
            HookStage::StartContainer => hooks.start_container_mut(),
            HookStage::Poststart => hooks.poststart_mut(),
            HookStage::Poststop => hooks.poststop_mut(),
        };
        list.get_or_insert_with(Vec::new).push(hook);
    }
    Ok(())
}
