//! Plugin admission and lifecycle events for skiff-runtime, through the same policy
//! code as `skiff` and skiffd (`skiff_engine::policy`). `create`
//! admits the bundle and keeps the decision beside the record so the supervisor, which
//! re-reads config.json, applies the same adjustments.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use skiff_plugins::{ContainerDecision, EventKind};
use skiff_runtime::oci::Bundle;

use skiff_engine::policy;

const DECISION_FILE: &str = "admission.json";

/// Admits the bundle of container `id`; stores and applies an allowing decision.
pub fn admit(bundle: &mut Bundle, id: &str, state_dir: &Path) -> Result<()> {
    let config = serde_json::to_value(&bundle.spec)?;
    let annotations: BTreeMap<String, String> = bundle
        .spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let Some(decision) = policy::get()?.admit_oci(id, &config, annotations)? else {
        return Ok(());
    };
    apply(bundle, &decision)?;
    let path = state_dir.join(DECISION_FILE);
    skiff_runtime::owner_only::write_atomic(&path, &serde_json::to_vec(&decision)?)?;
    Ok(())
}

/// The bundle of a created container as admission left it (with plugin hooks and
/// sizes), for the later stages that re-read config.json.
pub fn load_admitted(bundle_dir: &Path, state_dir: &Path) -> Result<Bundle> {
    let mut bundle = Bundle::load(bundle_dir)?;
    reapply(&mut bundle, state_dir)?;
    Ok(bundle)
}

/// Re-applies the decision `create` stored (in the supervisor).
pub fn reapply(bundle: &mut Bundle, state_dir: &Path) -> Result<()> {
    let path = state_dir.join(DECISION_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(());
    };
    let decision: ContainerDecision =
        serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))?;
    apply(bundle, &decision)
}

/// What a microVM can honour of the merged adjustments; the rest is refused.
fn apply(bundle: &mut Bundle, d: &ContainerDecision) -> Result<()> {
    let a = &d.adjustments;
    for (k, v) in &a.env {
        bundle
            .process
            .env
            .retain(|e| e.split('=').next() != Some(k.as_str()));
        bundle.process.env.push(format!("{k}={v}"));
    }
    let (memory_mib, vcpus) = policy::vm_size(a)?;
    if let Some(m) = memory_mib {
        bundle.memory_mib = m;
        bundle.memory_max_mib = bundle.memory_max_mib.max(m);
    }
    if let Some(c) = vcpus {
        bundle.vcpus = c;
    }
    for m in &a.mounts {
        if m.kind != "bind" && !m.options.iter().any(|o| o == "bind" || o == "rbind") {
            bail!(
                "a plugin asked for a {:?} mount at {}; only bind mounts can be added",
                m.kind,
                m.destination
            );
        }
        if !m.destination.starts_with('/') || m.destination.split('/').any(|c| c == "..") {
            bail!("a plugin asked for a mount at {:?}", m.destination);
        }
        bundle.mounts.add_bind(
            Path::new(&m.source),
            &m.destination,
            m.options.iter().any(|o| o == "ro"),
        )?;
    }
    if !a.hooks.is_empty() {
        let mut hooks = bundle.spec.hooks().clone().unwrap_or_default();
        policy::add_hooks(&mut hooks, &a.hooks)?;
        bundle.spec.set_hooks(Some(hooks));
    }
    Ok(())
}

/// A lifecycle event, audited in the container's state directory.
pub fn event(state_dir: &Path, id: &str, kind: EventKind) {
    match policy::get() {
        Ok(p) => p.event_in(state_dir, id, &BTreeMap::new(), kind),
        Err(e) => tracing::warn!("plugins: {e:#}"),
    }
}
