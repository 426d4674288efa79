//! Sandboxes are skiff containers: records in the same store the CLI uses, labelled
//! with their tenant, each run by its own `skiffd supervise` process (which outlives the
//! daemon). Names are scoped per tenant by storing them as `<tenant>.<name>`; a lookup
//! only ever sees the caller's own sandboxes, so another tenant's ID is "not found".
//!
//! Create, start, stop, delete, list, logs and stats (exec is `sandbox_exec`'s).
//! Everything here blocks (files, locks, supervisors): handlers call it on tokio's
//! blocking pool.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use skiff_runtime::container::{
    read_log, BootSettings, ContainerSpec, ContainerState, LogStream, Status, STATE_ERROR_GONE,
};

use crate::error::ApiError;
use crate::images;
use crate::locks::lock;
use crate::pool;
use crate::requests::{
    check_process_input, generated_name, process_for, size, validate_name, SANDBOX_LABEL,
    TENANT_LABEL,
};
use crate::snapshots;
use crate::state::Daemon;
use crate::tenants::{self, Usage};
use skiff_engine::lifecycle::{self, SupervisorCommand};
use skiff_engine::run_config;

/// Writable layer of every sandbox.
const WRITABLE_BYTES: u64 = 1 << 30;
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    pub image: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Replaces the image's Cmd (the Entrypoint stays).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries on top of the image's Env.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Start it right away (create + start in one call).
    #[serde(default)]
    pub start: bool,
    /// Start its VM from the snapshot of (image, memory, vCPUs), made by the first
    /// such request, instead of booting it. QEMU backend only. Its writable layer is a
    /// tmpfs in the VM's memory: it does not outlive a stop.
    #[serde(default)]
    pub snapshot: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSandbox {
    /// Seconds between the stop signal and SIGKILL (default: 10).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct SandboxView {
    pub id: String,
    pub name: String,
    pub image: String,
    /// created, running, exited, or lost (its supervisor died while the daemon was
    /// away or without recording an exit).
    pub state: &'static str,
    pub cmd: Vec<String>,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub created_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_ms: Option<u64>,
    /// Its VM starts from a snapshot.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
}

pub fn state_name(st: &ContainerState) -> &'static str {
    match st.status {
        Status::Exited if st.error.as_deref() == Some(STATE_ERROR_GONE) => "lost",
        s => s.as_str(),
    }
}

fn holds_resources(st: &ContainerState) -> bool {
    st.status != Status::Exited
}

pub fn view(spec: &ContainerSpec, st: &ContainerState) -> SandboxView {
    let name = spec
        .name
        .split_once('.')
        .map_or(spec.name.as_str(), |(_, n)| n)
        .to_owned();
    SandboxView {
        id: spec.id.clone(),
        name,
        image: spec.image.clone(),
        state: state_name(st),
        cmd: spec.process.args.clone(),
        memory_mib: spec.memory_mib,
        vcpus: spec.vcpus,
        created_ms: spec.created_ms,
        started_ms: st.started_ms,
        finished_ms: st.finished_ms,
        exit_code: st.exit_code,
        error: st.error.clone(),
        boot_ms: st.boot_ms,
        snapshot: spec.boot.snapshot.is_some(),
    }
}

pub fn tenant_of(spec: &ContainerSpec) -> Option<&str> {
    if spec.labels.get(SANDBOX_LABEL).map(String::as_str) != Some("true") {
        return None;
    }
    spec.labels.get(TENANT_LABEL).map(String::as_str)
}

/// Every sandbox of every tenant with its state.
pub fn all(d: &Daemon) -> Result<Vec<(ContainerSpec, ContainerState)>, ApiError> {
    Ok(d.containers
        .list()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .filter(|(s, _)| tenant_of(s).is_some())
        .collect())
}

pub fn list(d: &Daemon, tenant: &str) -> Result<Vec<SandboxView>, ApiError> {
    Ok(all(d)?
        .iter()
        .filter(|(s, _)| tenant_of(s) == Some(tenant))
        .map(|(s, st)| view(s, st))
        .collect())
}

/// The tenant's sandbox by full ID or by name.
pub fn find(d: &Daemon, tenant: &str, key: &str) -> Result<ContainerSpec, ApiError> {
    let not_found = || ApiError::sandbox_not_found(key);
    if key.len() == 64
        && key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        let spec = d.containers.spec(key).map_err(|_| not_found())?;
        return if tenant_of(&spec) == Some(tenant) {
            Ok(spec)
        } else {
            Err(not_found())
        };
    }
    if validate_name(key).is_err() {
        return Err(not_found());
    }
    let full = format!("{tenant}.{key}");
    all(d)?
        .into_iter()
        .map(|(s, _)| s)
        .find(|s| s.name == full && tenant_of(s) == Some(tenant))
        .ok_or_else(not_found)
}

pub fn get(d: &Daemon, tenant: &str, key: &str) -> Result<SandboxView, ApiError> {
    let spec = find(d, tenant, key)?;
    Ok(view(&spec, &state(d, &spec.id)?))
}

/// The state of the sandbox `id` (a 404 when its record is gone).
pub fn state(d: &Daemon, id: &str) -> Result<ContainerState, ApiError> {
    d.containers
        .state(id)
        .map_err(|_| ApiError::sandbox_not_found(id))
}

/// The tenant's current usage: sandboxes that have not exited plus what this process
/// holds for it (warm VMs, invocations).
pub fn usage(d: &Daemon, tenant: &str) -> Result<Usage, ApiError> {
    let mut u = d.reservations.held(tenant);
    for (s, st) in all(d)? {
        if tenant_of(&s) == Some(tenant) && holds_resources(&st) {
            u.add(Usage::one(s.memory_mib, s.vcpus));
        }
    }
    Ok(u)
}

pub fn create(d: &Daemon, tenant: &str, req: CreateSandbox) -> Result<SandboxView, ApiError> {
    let (memory_mib, vcpus) = size(req.memory_mib, req.vcpus)?;
    let name = match &req.name {
        Some(n) => {
            validate_name(n)?;
            n.clone()
        }
        None => generated_name("sb"),
    };
    let cmd = req.cmd.clone().unwrap_or_default();
    check_process_input(&cmd, &req.env, req.workdir.as_deref())?;
    let (image, defaults, layers) = images::image_for(d, &req.image)?;
    // The hostname is filled in by the store (the short ID), as for `skiff run`.
    let process = process_for(&defaults, &cmd, &req.env, req.workdir.as_deref(), "")?;
    let mut labels: BTreeMap<String, String> = defaults.labels.clone();
    labels.insert(TENANT_LABEL.into(), tenant.to_owned());
    labels.insert(SANDBOX_LABEL.into(), "true".into());
    let stop_signal = defaults
        .stop_signal
        .as_deref()
        .and_then(|s| run_config::parse_signal(s).ok())
        .unwrap_or(libc::SIGTERM);
    let spec = ContainerSpec {
        id: String::new(),
        name: format!("{tenant}.{name}"),
        image: req.image.clone(),
        image_id: image.id.to_string(),
        created_ms: 0,
        entrypoint: defaults.entrypoint.clone(),
        cmd,
        user: defaults.user.clone(),
        process,
        hostname: String::new(),
        readonly_rootfs: false,
        memory_mib,
        vcpus,
        labels,
        stop_signal,
        stop_timeout_s: 10,
        auto_remove: false,
        layers,
        writable_bytes: WRITABLE_BYTES,
        boot: BootSettings::default(),
        binds: Vec::new(),
        plugin_decision: None,
        network: Default::default(),
        egress: Default::default(),
        passt_ports: Vec::new(),
        hooks: None,
    };
    let snapshot = if req.snapshot {
        // Quota first: making a snapshot boots a VM.
        let quota = d.config.quota_of(tenant);
        tenants::check(&quota, usage(d, tenant)?, Usage::one(memory_mib, vcpus))?;
        let warm = pool::warm_spec(
            d.containers.run_dir(),
            spec.layers.clone(),
            memory_mib,
            vcpus,
        )?;
        snapshots::check_backend(&warm)?;
        Some(d.snapshots.get(&spec.image_id, &warm)?)
    } else {
        None
    };
    let mut resized = false;
    let spec = {
        let _admission = lock(&d.reservations.admission);
        let quota = d.config.quota_of(tenant);
        tenants::check(&quota, usage(d, tenant)?, Usage::one(memory_mib, vcpus))?;
        let request = lifecycle::Create {
            spec,
            image_config: &image.config_json,
            ports: Vec::new(),
        };
        let created = lifecycle::create(&d.containers, &d.store, request, |spec| {
            // A plugin may resize the VM or relabel it; the tenant is not its to change.
            spec.labels.insert(TENANT_LABEL.into(), tenant.to_owned());
            spec.labels.insert(SANDBOX_LABEL.into(), "true".into());
            if let Some(snap) = &snapshot {
                if (snap.memory_mib(), snap.vcpus()) != (spec.memory_mib, spec.vcpus) {
                    resized = true;
                    return Err(skiff_engine::Error::Adjustment(format!(
                        "a plugin resized the sandbox to {} MiB and {} vCPUs; its snapshot is of the size asked for",
                        spec.memory_mib, spec.vcpus
                    )));
                }
                spec.boot.snapshot = Some(snap.dir().to_path_buf());
            }
            Ok(())
        });
        match created {
            Ok(s) => s,
            Err(e) if resized => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "snapshot_size",
                    e.to_string(),
                ))
            }
            Err(skiff_engine::Error::Runtime(skiff_runtime::Error::NameInUse { .. })) => {
                return Err(ApiError::conflict(
                    "name_in_use",
                    format!("a sandbox named {name:?} already exists"),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    };
    d.events
        .publish(tenant, "sandbox.created", Some(&spec.id), None);
    if req.start {
        start_id(d, tenant, &spec)?;
    }
    Ok(view(&spec, &state(d, &spec.id)?))
}

pub fn start(d: &Daemon, tenant: &str, key: &str) -> Result<SandboxView, ApiError> {
    let spec = find(d, tenant, key)?;
    start_id(d, tenant, &spec)?;
    Ok(view(&spec, &state(d, &spec.id)?))
}

/// Runs `skiffd supervise ID` detached (it outlives the daemon) and waits until the main
/// process runs or the start failed.
fn start_id(d: &Daemon, tenant: &str, spec: &ContainerSpec) -> Result<(), ApiError> {
    let id = spec.id.as_str();
    let t0 = Instant::now();
    let cmd = SupervisorCommand {
        exe: &d.exe,
        root: &d.root,
        log_level: &d.log_level,
    };
    let mut starting = {
        let _admission = lock(&d.reservations.admission);
        if state(d, id)?.status == Status::Exited {
            // An exited sandbox holds nothing; starting it again takes its share.
            let quota = d.config.quota_of(tenant);
            tenants::check(
                &quota,
                usage(d, tenant)?,
                Usage::one(spec.memory_mib, spec.vcpus),
            )?;
        }
        lifecycle::spawn_supervisor(&d.containers, id, &cmd).map_err(start_error)?
    };
    let result = starting.wait_running();
    // The supervisor is our child until the daemon exits: reap it when it ends.
    let mut child = starting.into_child();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    result.map_err(start_error)?;
    d.metrics.sandbox_start.observe(t0.elapsed());
    d.events.publish(tenant, "sandbox.started", Some(id), None);
    Ok(())
}

/// A start's failure in the API's words.
fn start_error(e: skiff_engine::Error) -> ApiError {
    use skiff_engine::lifecycle::StartFailure;
    use skiff_engine::Error as E;
    match e {
        E::AlreadyRunning { .. } => {
            ApiError::conflict("already_running", "the sandbox is already running")
        }
        E::StartFailed {
            failure: StartFailure::Recorded(e),
            ..
        } => ApiError::internal(format!("the sandbox failed to start: {e}")),
        E::StartFailed {
            failure: StartFailure::NotRunnable { exit_code, stderr },
            ..
        } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "start_failed",
            format!("the command could not be run (exit {exit_code}): {stderr}"),
        ),
        E::SupervisorExited { status, log, .. } => ApiError::internal(format!(
            "the sandbox's supervisor exited ({status}) before it started: {}",
            tail_of(&log)
        )),
        E::Timeout { secs, .. } => {
            ApiError::internal(format!("the sandbox did not start within {secs} s"))
        }
        other => other.into(),
    }
}

fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

pub fn stop(
    d: &Daemon,
    tenant: &str,
    key: &str,
    req: &StopSandbox,
) -> Result<SandboxView, ApiError> {
    let spec = find(d, tenant, key)?;
    let grace = req.timeout_s.unwrap_or(spec.stop_timeout_s);
    if grace > 3600 {
        return Err(ApiError::invalid("timeout_s must be at most 3600"));
    }
    stop_id(d, &spec.id, spec.stop_signal, grace);
    Ok(view(&spec, &state(d, &spec.id)?))
}

/// Stop signal, `grace` seconds, SIGKILL; a supervisor that does not answer is killed
/// (its VM dies with it). Stopping a stopped sandbox is fine.
fn stop_id(d: &Daemon, id: &str, signal: i32, grace: u64) {
    if let Err(e) = lifecycle::stop(&d.containers, id, signal, grace) {
        tracing::warn!("stop sandbox {id}: {e}");
    }
}

pub fn delete(d: &Daemon, tenant: &str, key: &str) -> Result<(), ApiError> {
    let spec = find(d, tenant, key)?;
    lifecycle::remove(&d.containers, &d.store, &spec.id, true)?;
    d.events
        .publish(tenant, "sandbox.deleted", Some(&spec.id), None);
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct LogLine {
    pub stream: &'static str,
    pub time: String,
    pub log: String,
}

pub fn logs(
    d: &Daemon,
    tenant: &str,
    key: &str,
    tail: Option<usize>,
) -> Result<Vec<LogLine>, ApiError> {
    let spec = find(d, tenant, key)?;
    let (entries, _) = read_log(&d.containers.log_path(&spec.id)).unwrap_or_default();
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    Ok(entries
        .into_iter()
        .skip(skip)
        .map(|e| LogLine {
            stream: match e.stream {
                LogStream::Stdout => "stdout",
                LogStream::Stderr => "stderr",
            },
            time: e.time,
            log: e.log,
        })
        .collect())
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub id: String,
    pub state: &'static str,
    pub memory_limit_mib: u32,
    pub vcpus: u32,
    /// Proportional set size of the sandbox's host processes (supervisor, VMM, device
    /// daemons): what it costs the host in memory.
    pub host_pss_bytes: u64,
    /// CPU time of those processes.
    pub cpu_seconds: f64,
}

pub fn stats(d: &Daemon, tenant: &str, key: &str) -> Result<Stats, ApiError> {
    let spec = find(d, tenant, key)?;
    let st = state(d, &spec.id)?;
    let usage = lifecycle::usage(&spec, &st);
    Ok(Stats {
        id: spec.id.clone(),
        state: state_name(&st),
        memory_limit_mib: spec.memory_mib,
        vcpus: spec.vcpus,
        host_pss_bytes: usage.pss_bytes,
        cpu_seconds: usage.cpu_seconds(),
    })
}
