//! Warm pools: per (tenant, image, size), VMs booted to "agent ready" with the image's
//! layers attached, the container already created (fresh hostname, tmpfs writable
//! layer) and a warm-up process run in it. `POST /v1/invoke` passes plugin admission
//! with its tenant, then takes one (a hit) or boots one (a miss), starts only the
//! command, answers, destroys the VM, and the pool refills in the background.
//! Every warm VM is reserved against its tenant's quota before it boots, so a pool never
//! holds more than the tenant may; pools are simply smaller when the quota is full.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skiff_proto::ProcessSpec;
use skiff_runtime::{hypervisor, GuestArtifacts, WarmSpec, WarmVm};

use crate::admission::{self, Invocation};
use crate::config::PoolConfig;
use crate::error::ApiError;
use crate::images;
use crate::locks::lock;
use crate::requests::{self, generated_name, OUTPUT_CAP};
use crate::sandboxes;
use crate::state::Daemon;
use crate::tenants::{self, Usage};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// A warm VM and the thread that launched it. The VMM is killed when the thread that
/// spawned it exits (PR_SET_PDEATHSIG, so VMs die with the daemon); tokio's blocking
/// threads exit when idle, so each VM gets a launcher thread that lives as long as it.
pub struct PinnedVm {
    // Field order: the VM goes first, then the launcher thread is let go.
    pub vm: WarmVm,
    _launcher: std::sync::mpsc::Sender<()>,
}

/// Boots a VM on a thread of its own (see [`PinnedVm`]); blocks until agent ready.
fn boot_pinned(spec: WarmSpec) -> Result<PinnedVm, ApiError> {
    pinned(move || WarmVm::boot(&spec))
}

/// Starts a VM with `start` on a thread that lives as long as the VM.
fn pinned(
    start: impl FnOnce() -> skiff_runtime::Result<WarmVm> + Send + 'static,
) -> Result<PinnedVm, ApiError> {
    let (vm_tx, vm_rx) = std::sync::mpsc::channel();
    let (keep_tx, keep_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("vm-launcher".into())
        .spawn(move || {
            let booted = start();
            let ok = booted.is_ok();
            let _ = vm_tx.send(booted);
            if ok {
                // Returns once the PinnedVm (and with it the VM) is dropped.
                let _ = keep_rx.recv();
            }
        })
        .map_err(|e| ApiError::internal(format!("start a VM launcher thread: {e}")))?;
    match vm_rx.recv() {
        Ok(Ok(vm)) => Ok(PinnedVm {
            vm,
            _launcher: keep_tx,
        }),
        Ok(Err(e)) => Err(ApiError::internal(format!("boot: {e}"))),
        Err(_) => Err(ApiError::internal("the VM launcher thread died")),
    }
}

/// Starts a VM from the snapshot of `spec`'s image and size (made first if needed).
fn restore_pinned(d: &Daemon, image_id: &str, spec: WarmSpec) -> Result<PinnedVm, ApiError> {
    let snap = d.snapshots.get(image_id, &spec)?;
    pinned(move || snap.restore(&spec.selection, spec.scratch_parent.clone(), BOOT_TIMEOUT))
}

/// Boots (or restores) a pool's VM and readies it for an invocation: the container is
/// created (with a fresh hostname, the invocation's identity) and the warm-up process
/// has run in it, so an invocation only starts its own process.
fn boot_prepared(d: &Daemon, p: &Pool) -> Result<PinnedVm, ApiError> {
    let warm_up = p.warm_up.as_ref();
    let mut vm = if p.snapshot {
        restore_pinned(d, &p.image_id, p.spec.clone())?
    } else {
        boot_pinned(p.spec.clone())?
    };
    let hostname = generated_name("sb");
    vm.vm
        .create(&hostname)
        .map_err(|e| ApiError::internal(format!("create the warm container: {e}")))?;
    if let Some(w) = warm_up {
        match vm.vm.warm_up(w, WARM_UP_TIMEOUT) {
            Ok(st) if st.code() == 0 => {}
            // Still a usable VM (an image without `true` gets 127): just a colder one.
            Ok(st) => tracing::warn!(
                "the pool's warm-up {:?} exited with {}; check the pool's warm_up",
                w.args,
                st.code()
            ),
            Err(e) => return Err(ApiError::internal(format!("warm-up: {e}"))),
        }
    }
    Ok(vm)
}

/// The warm-up as a process: the configured command in `/` as root with the default
/// PATH (the image's entrypoint and environment do not apply).
fn warm_up_process(cmd: &[String]) -> Option<ProcessSpec> {
    if cmd.is_empty() {
        return None;
    }
    let mut p = ProcessSpec::new(cmd.to_vec());
    p.env = vec![format!("PATH={}", skiff_proto::DEFAULT_PATH)];
    Some(p)
}

pub struct Pool {
    pub tenant: String,
    pub image_id: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub size: u32,
    spec: WarmSpec,
    /// Run in each warm VM's container after it is created (warms the guest's and
    /// QEMU's caches for the fork/exec/exit path).
    warm_up: Option<ProcessSpec>,
    /// Refilled from a snapshot instead of by booting.
    snapshot: bool,
    ready: Mutex<VecDeque<PinnedVm>>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
pub struct Pools(OnceLock<Vec<Arc<Pool>>>);

impl Pools {
    fn all(&self) -> &[Arc<Pool>] {
        self.0.get().map_or(&[], Vec::as_slice)
    }

    pub fn ready(&self) -> u64 {
        self.all().iter().map(|p| lock(&p.ready).len() as u64).sum()
    }

    fn find(&self, tenant: &str, image_id: &str, m: u32, c: u32) -> Option<Arc<Pool>> {
        self.all()
            .iter()
            .find(|p| {
                p.tenant == tenant && p.image_id == image_id && p.memory_mib == m && p.vcpus == c
            })
            .cloned()
    }

    /// Kills every waiting VM (shutdown).
    pub fn drain(&self) {
        for p in self.all() {
            lock(&p.ready).clear();
        }
    }
}

/// The VM of one invocation or snapshot: the image's layers, the size, a tmpfs
/// writable layer.
pub fn warm_spec(
    d: &Daemon,
    layers: Vec<std::path::PathBuf>,
    m: u32,
    c: u32,
) -> Result<WarmSpec, ApiError> {
    let artifacts =
        GuestArtifacts::locate(None, None).map_err(|e| ApiError::internal(e.to_string()))?;
    let selection = hypervisor::select(None).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(WarmSpec {
        artifacts,
        selection,
        layers,
        memory_mib: m,
        vcpus: c,
        // Each invocation's writable layer is a tmpfs in its own (thrown-away) VM.
        writable_disk_bytes: None,
        scratch_parent: Some(d.containers.run_dir().to_path_buf()),
        boot_timeout: BOOT_TIMEOUT,
    })
}

/// Sets up the configured pools and starts filling them.
pub fn start(d: &Arc<Daemon>, configs: &[PoolConfig]) {
    let mut pools = Vec::new();
    for c in configs {
        let made = images::pull(d, &c.image).and_then(|_| {
            let (image, _, layers) = images::image_for(d, &c.image)?;
            let (m, v) = requests::size(Some(c.memory_mib), Some(c.vcpus))?;
            let spec = warm_spec(d, layers, m, v)?;
            if c.snapshot {
                crate::snapshots::check_backend(&spec)?;
            }
            Ok(Pool {
                tenant: c.tenant.clone(),
                image_id: image.id.to_string(),
                memory_mib: m,
                vcpus: v,
                size: c.size,
                spec,
                warm_up: warm_up_process(&c.warm_up),
                snapshot: c.snapshot,
                ready: Mutex::new(VecDeque::new()),
                wake: tokio::sync::Notify::new(),
            })
        });
        match made {
            Ok(p) => pools.push(Arc::new(p)),
            Err(e) => tracing::error!("pool {} for {}: {}", c.image, c.tenant, e.message),
        }
    }
    let _ = d.pools.0.set(pools.clone());
    for p in pools {
        tokio::spawn(fill(d.clone(), p));
    }
}

/// VMs of one pool booted (or restored) at once: two keep both cores of a small host
/// busy without starving the invocations.
const REFILL_PARALLEL: usize = 2;

/// Keeps `size` VMs ready, up to [`REFILL_PARALLEL`] boots at a time.
async fn fill(d: Arc<Daemon>, p: Arc<Pool>) {
    let one = Usage::one(p.memory_mib, p.vcpus);
    let mut backoff = Duration::from_millis(500);
    let mut booting = tokio::task::JoinSet::new();
    loop {
        while booting.len() < REFILL_PARALLEL
            && lock(&p.ready).len() + booting.len() < p.size as usize
        {
            let admitted = {
                let _a = lock(&d.reservations.admission);
                let quota = d.config.quota_of(&p.tenant);
                let ok = sandboxes::usage(&d, &p.tenant)
                    .and_then(|u| tenants::check(&quota, u, one))
                    .is_ok();
                if ok {
                    d.reservations.reserve(&p.tenant, one);
                }
                ok
            };
            if !admitted {
                break; // the tenant's quota is full: a smaller pool, never a bigger bill
            }
            let (d2, p2) = (d.clone(), p.clone());
            booting.spawn_blocking(move || boot_prepared(&d2, &p2));
        }
        if booting.is_empty() {
            // Refill when a VM is taken, and retry now and then in case quota freed up.
            let _ = tokio::time::timeout(Duration::from_secs(2), p.wake.notified()).await;
            continue;
        }
        tokio::select! {
            Some(done) = booting.join_next() => match done {
                Ok(Ok(vm)) => {
                    tracing::debug!(
                        tenant = p.tenant,
                        ms = vm.vm.timings().launch_to_ready.as_millis() as u64,
                        "warm VM ready"
                    );
                    lock(&p.ready).push_back(vm);
                    backoff = Duration::from_millis(500);
                }
                Ok(Err(e)) => {
                    d.reservations.release(&p.tenant, one);
                    tracing::warn!("warm VM for {}: {}", p.tenant, e.message);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(_) => d.reservations.release(&p.tenant, one),
            },
            // A VM was taken: start its replacement beside the boots under way.
            () = p.wake.notified() => {}
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    pub image: String,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Kill the command after this many seconds (default 60, at most 600).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// On a pool miss, start the VM from the image's snapshot (made by the first such
    /// request) instead of booting it. QEMU backend only.
    #[serde(default)]
    pub snapshot: bool,
}

#[derive(Debug, Serialize)]
pub struct InvokeResult {
    /// The exit code, or 128 + signal.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// True when stdout or stderr was cut at 1 MiB.
    pub truncated: bool,
    /// `hit`: a warm VM ran it; `miss`: the pool was empty (or there is none) and a VM
    /// was cold-booted; `snapshot`: no warm VM, and one was restored from a snapshot.
    pub pool: &'static str,
    pub duration_ms: u64,
}

/// Sets the `HOSTNAME=` entry left empty by [`requests::process_for`] (one the image,
/// the request or a plugin set stays).
fn fill_hostname(env: &mut [String], hostname: &str) {
    for e in env.iter_mut().filter(|e| e.as_str() == "HOSTNAME=") {
        *e = format!("HOSTNAME={hostname}");
    }
}

pub async fn invoke(
    d: Arc<Daemon>,
    tenant: String,
    req: InvokeRequest,
) -> Result<InvokeResult, ApiError> {
    let t0 = Instant::now();
    let timeout = req.timeout_s.unwrap_or(60);
    if !(1..=600).contains(&timeout) {
        return Err(ApiError::invalid("timeout_s must be between 1 and 600"));
    }
    let (m, c) = requests::size(req.memory_mib, req.vcpus)?;
    requests::check_process_input(&req.cmd, &req.env, req.workdir.as_deref())?;
    let (d2, t2) = (d.clone(), tenant.clone());
    let (image_id, layers, admitted) = tokio::task::spawn_blocking(move || {
        let (image, defaults, layers) = images::image_for(&d2, &req.image)?;
        // HOSTNAME is filled in once the VM (and with it the hostname) is known.
        let p = requests::process_for(&defaults, &req.cmd, &req.env, req.workdir.as_deref(), "")?;
        let image_id = image.id.to_string();
        let admitted = admission::admit(Invocation {
            id: &generated_name("inv"),
            tenant: &t2,
            image_ref: &req.image,
            image_id: &image_id,
            image_config: &image.config_json,
            defaults: &defaults,
            process: p,
            memory_mib: m,
            vcpus: c,
        })?;
        Ok::<_, ApiError>((image_id, layers, admitted))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    // A plugin may have resized the microVM: the pool and the quota go by its size.
    let (m, c) = (admitted.memory_mib, admitted.vcpus);
    let one = Usage::one(m, c);
    let pool = d.pools.find(&tenant, &image_id, m, c);
    // A warm VM's reservation moves to this invocation; a cold one needs its own.
    let warm = pool.as_ref().and_then(|p| lock(&p.ready).pop_front());
    if let Some(p) = &pool {
        p.wake.notify_one();
    }
    let hit = warm.is_some();
    // A pooled VM's container already has its (fresh, random) hostname.
    let hostname = warm
        .as_ref()
        .and_then(|w| w.vm.hostname().map(str::to_owned))
        .unwrap_or_else(|| generated_name("sb"));
    let mut process = admitted.process;
    fill_hostname(&mut process.env, &hostname);
    if !hit {
        let _a = lock(&d.reservations.admission);
        let quota = d.config.quota_of(&tenant);
        tenants::check(&quota, sandboxes::usage(&d, &tenant)?, one)?;
        d.reservations.reserve(&tenant, one);
    }
    let spec = if hit {
        None
    } else {
        Some(warm_spec(&d, layers, m, c))
    };
    // A miss restores from the snapshot when asked, or when the pool itself is kept
    // full from one (its operator chose restores over boots).
    let restore = !hit && (req.snapshot || pool.as_ref().is_some_and(|p| p.snapshot));
    if let (true, Some(Ok(spec))) = (restore, &spec) {
        if let Err(e) = crate::snapshots::check_backend(spec) {
            d.reservations.release(&tenant, one);
            return Err(e);
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (d2, t2, p2) = (d.clone(), tenant.clone(), pool.clone());
    tokio::task::spawn_blocking(move || {
        let vm = match warm {
            Some(vm) => Ok(vm),
            None => spec
                .unwrap_or_else(|| Err(ApiError::internal("no VM spec")))
                .and_then(|spec| {
                    if restore {
                        restore_pinned(&d2, &image_id, spec)
                    } else {
                        boot_pinned(spec)
                    }
                }),
        };
        match vm {
            Ok(mut vm) => {
                let out = vm
                    .vm
                    .run(
                        &hostname,
                        &process,
                        OUTPUT_CAP,
                        Duration::from_secs(timeout),
                    )
                    .map_err(|e| ApiError::internal(format!("run: {e}")));
                // Answer first: destroying the VM (~70 ms under TCG) happens off the
                // request path, and its quota share is released once it is gone.
                let _ = tx.send(out);
                drop(vm);
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
        d2.reservations.release(&t2, one);
        if let Some(p) = &p2 {
            p.wake.notify_one();
        }
    });
    let out = rx
        .await
        .map_err(|_| ApiError::internal("the invocation's worker died"))??;
    let Some(status) = out.status else {
        return Err(ApiError::internal(
            "the microVM stopped before the command reported its exit status",
        ));
    };
    let elapsed = t0.elapsed();
    if hit {
        d.metrics.pool_hits.fetch_add(1, Ordering::Relaxed);
        d.metrics.invoke_warm.observe(elapsed);
    } else if restore {
        d.metrics.pool_misses.fetch_add(1, Ordering::Relaxed);
        d.metrics.invoke_snapshot.observe(elapsed);
    } else {
        d.metrics.pool_misses.fetch_add(1, Ordering::Relaxed);
        d.metrics.invoke_cold.observe(elapsed);
    }
    d.events
        .publish(&tenant, "invoke.finished", None, Some(status.code()));
    Ok(InvokeResult {
        exit_code: status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        truncated: out.truncated,
        pool: match (hit, restore) {
            (true, _) => "hit",
            (false, true) => "snapshot",
            (false, false) => "miss",
        },
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    })
}
