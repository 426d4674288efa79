//! `POST /v1/invoke` and the upkeep of the warm pools it is served from. An invocation
//! passes plugin admission with its tenant, then takes a warm VM from its pool (a hit)
//! or boots one (a miss), starts only the command, answers, destroys the VM, and the
//! pool refills in the background. Every warm VM is reserved against its tenant's
//! quota before it boots, so a pool never holds more than the tenant may; pools are
//! simply smaller when the quota is full.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::admission::{self, Invocation};
use crate::config::PoolConfig;
use crate::error::ApiError;
use crate::images;
use crate::locks::lock;
use crate::pool::{self, boot_pinned, restore_pinned, Pool};
use crate::requests::{self, generated_name, OUTPUT_CAP};
use crate::sandboxes;
use crate::snapshots;
use crate::state::Daemon;
use crate::tenants::{self, Usage};

/// Sets up the configured pools and starts filling them.
pub fn start(d: &Arc<Daemon>, configs: &[PoolConfig]) {
    let mut pools = Vec::new();
    for c in configs {
        let made = images::pull(d, &c.image).and_then(|_| {
            let (image, _, layers) = images::image_for(d, &c.image)?;
            let (m, v) = requests::size(Some(c.memory_mib), Some(c.vcpus))?;
            let spec = pool::warm_spec(d.containers.run_dir(), layers, m, v)?;
            if c.snapshot {
                snapshots::check_backend(&spec)?;
            }
            Ok(Pool::new(c, image.id.to_string(), m, v, spec))
        });
        match made {
            Ok(p) => pools.push(Arc::new(p)),
            Err(e) => tracing::error!("pool {} for {}: {}", c.image, c.tenant, e.message),
        }
    }
    d.pools.set(pools.clone());
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
        while booting.len() < REFILL_PARALLEL && p.waiting() + booting.len() < p.size as usize {
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
            booting.spawn_blocking(move || p2.boot_prepared(&d2.snapshots));
        }
        if booting.is_empty() {
            // Refill when a VM is taken, and retry now and then in case quota freed up.
            let _ = tokio::time::timeout(Duration::from_secs(2), p.woken()).await;
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
                    p.put(vm);
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
            () = p.woken() => {}
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
    let warm = pool.as_ref().and_then(|p| p.take());
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
        Some(pool::warm_spec(d.containers.run_dir(), layers, m, c))
    };
    // A miss restores from the snapshot when asked, or when the pool itself is kept
    // full from one (its operator chose restores over boots).
    let restore = !hit && (req.snapshot || pool.as_ref().is_some_and(|p| p.uses_snapshot()));
    if let (true, Some(Ok(spec))) = (restore, &spec) {
        if let Err(e) = snapshots::check_backend(spec) {
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
                        restore_pinned(&d2.snapshots, &image_id, spec)
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
            p.notify();
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
