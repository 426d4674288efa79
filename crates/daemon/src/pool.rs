//! Warm pools, what the daemon holds of them: per (tenant, image, size), VMs booted to
//! "agent ready" with the image's layers attached, the container already created
//! (fresh hostname, tmpfs writable layer) and a warm-up process run in it; and how
//! such a VM is booted or restored from a snapshot (on a thread that lives as long as
//! the VM). Filling the pools and serving invocations from them is `invocations`'s.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use skiff_proto::ProcessSpec;
use skiff_runtime::vm::hypervisor;
use skiff_runtime::{GuestArtifacts, WarmSpec, WarmVm};

use crate::config::PoolConfig;
use crate::error::ApiError;
use crate::locks::lock;
use crate::requests::generated_name;
use crate::snapshots::Snapshots;

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
pub fn boot_pinned(spec: WarmSpec) -> Result<PinnedVm, ApiError> {
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
pub fn restore_pinned(
    snapshots: &Snapshots,
    image_id: &str,
    spec: WarmSpec,
) -> Result<PinnedVm, ApiError> {
    let snap = snapshots.get(image_id, &spec)?;
    pinned(move || snap.restore(&spec.selection, spec.scratch_parent.clone(), BOOT_TIMEOUT))
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

/// One pool: `size` VMs of one tenant's image and size, readied in the background.
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

impl Pool {
    /// The pool `config` asks for, of the image `image_id` (its resolved ID) with VMs
    /// of `spec`, which is already `memory_mib` and `vcpus` in size. It starts empty.
    pub fn new(
        config: &PoolConfig,
        image_id: String,
        memory_mib: u32,
        vcpus: u32,
        spec: WarmSpec,
    ) -> Self {
        Pool {
            tenant: config.tenant.clone(),
            image_id,
            memory_mib,
            vcpus,
            size: config.size,
            spec,
            warm_up: warm_up_process(&config.warm_up),
            snapshot: config.snapshot,
            ready: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Whether it is refilled from a snapshot instead of by booting.
    pub fn uses_snapshot(&self) -> bool {
        self.snapshot
    }

    /// How many VMs wait in it.
    pub fn waiting(&self) -> usize {
        lock(&self.ready).len()
    }

    /// Adds a readied VM.
    pub fn put(&self, vm: PinnedVm) {
        lock(&self.ready).push_back(vm);
    }

    /// Takes the oldest waiting VM, if any, and wakes the refill either way.
    pub fn take(&self) -> Option<PinnedVm> {
        let vm = lock(&self.ready).pop_front();
        self.wake.notify_one();
        vm
    }

    /// Wakes the refill (a VM was taken or a reservation freed).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Resolves when the refill is woken.
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Boots (or restores) one of the pool's VMs and readies it for an invocation: the
    /// container is created (with a fresh hostname, the invocation's identity) and the
    /// warm-up process has run in it, so an invocation only starts its own process.
    pub fn boot_prepared(&self, snapshots: &Snapshots) -> Result<PinnedVm, ApiError> {
        let warm_up = self.warm_up.as_ref();
        let mut vm = if self.snapshot {
            restore_pinned(snapshots, &self.image_id, self.spec.clone())?
        } else {
            boot_pinned(self.spec.clone())?
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
}

/// The configured pools, set once at startup.
#[derive(Default)]
pub struct Pools(OnceLock<Vec<Arc<Pool>>>);

impl Pools {
    fn all(&self) -> &[Arc<Pool>] {
        self.0.get().map_or(&[], Vec::as_slice)
    }

    /// VMs waiting in all pools together.
    pub fn ready(&self) -> u64 {
        self.all().iter().map(|p| p.waiting() as u64).sum()
    }

    /// Sets the configured pools (once; later calls change nothing).
    pub fn set(&self, pools: Vec<Arc<Pool>>) {
        let _ = self.0.set(pools);
    }

    /// The tenant's pool of `image_id` VMs with `m` MiB and `c` vCPUs, if configured.
    pub fn find(&self, tenant: &str, image_id: &str, m: u32, c: u32) -> Option<Arc<Pool>> {
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
/// writable layer, its scratch files under `run_dir`.
pub fn warm_spec(
    run_dir: &Path,
    layers: Vec<PathBuf>,
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
        scratch_parent: Some(run_dir.to_path_buf()),
        boot_timeout: BOOT_TIMEOUT,
    })
}
