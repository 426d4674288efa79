//! Plugin container admission for `POST /v1/invoke`: the plugins see an invocation as
//! they see a sandbox being created (the process, the image, the requested microVM
//! size, the tenant in the `tenant` label and as the tenant argument) and may deny it
//! or adjust its environment and size. Adjustments an invocation cannot honour (bind
//! mounts, hooks) are refused rather than dropped.

use std::collections::BTreeMap;

use hyper::StatusCode;
use skiff_proto::ProcessSpec;
use skiff_runtime::container::{BootSettings, ContainerSpec};

use crate::error::ApiError;
use crate::requests::{self, SANDBOX_LABEL, TENANT_LABEL};
use skiff_engine::run_config::ImageDefaults;

/// Marks the container plugins see as an invocation (a throw-away VM, no record).
pub const INVOCATION_LABEL: &str = "io.skiff.invocation";

/// What an invocation runs once admitted.
#[derive(Debug)]
pub struct Admitted {
    pub process: ProcessSpec,
    pub memory_mib: u32,
    pub vcpus: u32,
}

/// What the plugins are asked about.
pub struct Invocation<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub image_ref: &'a str,
    pub image_id: &'a str,
    pub image_config: &'a serde_json::Value,
    pub defaults: &'a ImageDefaults,
    pub process: ProcessSpec,
    pub memory_mib: u32,
    pub vcpus: u32,
}

fn denied(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "denied", message)
}

/// Runs container admission for an invocation (blocking: plugins run here).
pub fn admit(inv: Invocation<'_>) -> Result<Admitted, ApiError> {
    let policy = skiff_engine::policy::get().map_err(ApiError::from)?;
    let mut spec = container_view(&inv);
    policy
        .admit_container(&mut spec, inv.image_config)
        .map_err(|e| denied(format!("{e:#}")))?;
    check(spec)
}

/// The invocation as the container record plugins are shown (it is never stored).
fn container_view(inv: &Invocation<'_>) -> ContainerSpec {
    let mut labels: BTreeMap<String, String> = inv.defaults.labels.clone();
    labels.insert(TENANT_LABEL.into(), inv.tenant.to_owned());
    labels.insert(SANDBOX_LABEL.into(), "true".into());
    labels.insert(INVOCATION_LABEL.into(), "true".into());
    ContainerSpec {
        id: inv.id.to_owned(),
        name: format!("{}.{}", inv.tenant, inv.id),
        image: inv.image_ref.to_owned(),
        image_id: inv.image_id.to_owned(),
        created_ms: 0,
        entrypoint: inv.defaults.entrypoint.clone(),
        cmd: inv.process.args.clone(),
        user: inv.defaults.user.clone(),
        process: inv.process.clone(),
        hostname: String::new(),
        readonly_rootfs: false,
        memory_mib: inv.memory_mib,
        vcpus: inv.vcpus,
        labels,
        stop_signal: libc::SIGKILL,
        stop_timeout_s: 0,
        auto_remove: true,
        layers: Vec::new(),
        writable_bytes: 0,
        boot: BootSettings::default(),
        binds: Vec::new(),
        plugin_decision: None,
        network: Default::default(),
        egress: Default::default(),
        passt_ports: Vec::new(),
        hooks: None,
    }
}

/// What an invocation takes from the admitted spec: its process and size, which must
/// still be a size the API allows; bind mounts and hooks it cannot run.
fn check(spec: ContainerSpec) -> Result<Admitted, ApiError> {
    if !spec.binds.is_empty() {
        return Err(denied(
            "a plugin asked for bind mounts, which invocations do not support",
        ));
    }
    if spec.hooks.is_some() {
        return Err(denied(
            "a plugin asked for hooks, which invocations do not support",
        ));
    }
    let (memory_mib, vcpus) =
        requests::size(Some(spec.memory_mib), Some(spec.vcpus)).map_err(|e| {
            denied(format!(
                "a plugin sized the microVM out of bounds: {}",
                e.message
            ))
        })?;
    Ok(Admitted {
        process: spec.process,
        memory_mib,
        vcpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::container::Bind;

    fn spec() -> ContainerSpec {
        let defaults = ImageDefaults::default();
        let config = serde_json::json!({});
        container_view(&Invocation {
            id: "inv-1",
            tenant: "t",
            image_ref: "busybox",
            image_id: "sha256:0",
            image_config: &config,
            defaults: &defaults,
            process: ProcessSpec::new(vec!["true".into()]),
            memory_mib: 256,
            vcpus: 1,
        })
    }

    #[test]
    fn plugins_see_the_tenant_and_that_it_is_an_invocation() {
        let s = spec();
        assert_eq!(s.labels[TENANT_LABEL], "t");
        assert_eq!(s.labels[INVOCATION_LABEL], "true");
        assert_eq!((s.memory_mib, s.vcpus), (256, 1));
    }

    #[test]
    fn adjusted_size_and_env_are_taken() {
        let mut s = spec();
        s.memory_mib = 128;
        s.process.env.push("INJECTED=1".into());
        let a = check(s).unwrap();
        assert_eq!(a.memory_mib, 128);
        assert!(a.process.env.contains(&"INJECTED=1".to_owned()));
    }

    #[test]
    fn what_an_invocation_cannot_honour_is_refused() {
        let mut s = spec();
        s.binds.push(Bind {
            host: "/etc".into(),
            target: "/host".into(),
            readonly: true,
        });
        assert_eq!(check(s).unwrap_err().status, StatusCode::FORBIDDEN);
        let mut s = spec();
        s.hooks = Some(Default::default());
        assert_eq!(check(s).unwrap_err().status, StatusCode::FORBIDDEN);
        let mut s = spec();
        s.memory_mib = 16;
        assert_eq!(check(s).unwrap_err().status, StatusCode::FORBIDDEN);
    }
}
