//! A microVM booted ahead of need: its image's layer disks (and optionally a fresh
//! writable disk) are attached and the guest agent has said hello. A pool may also
//! create the container ahead ([`WarmVm::create`], with a fresh hostname) and run a
//! warm-up process in it ([`WarmVm::warm_up`]); [`WarmVm::run`] then only starts the
//! one real process and collects its output and status. The VM is thrown away
//! afterwards (dropping it kills it), so no state leaks from one use to the next. This
//! is what warm pools (skiffd) hold.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use skiff_proto::{ContainerConfig, ExitStatus, ProcessSpec};

use crate::vm::hypervisor::Disk;
use crate::vm::writable;
use crate::{AgentConn, Event, GuestArtifacts, MicroVm, Result, Selection, StartOutcome};
use crate::{BootTimings, VmConfig, VmSize};

/// The stream number of the one process a warm VM runs.
const STREAM: u32 = 1;
/// The stream of the warm-up process run while the VM is pooled.
const WARM_UP_STREAM: u32 = 2;

/// What a warm VM boots: an image's read-only layer disks, bottom first, and a size.
#[derive(Debug, Clone)]
pub struct WarmSpec {
    pub artifacts: GuestArtifacts,
    pub selection: Selection,
    pub layers: Vec<PathBuf>,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// The container's writable layer: a fresh sparse ext4 disk of this size, or with
    /// `None` a tmpfs in guest memory (enough for a VM that is thrown away after one
    /// process, and no disk to make or mount).
    pub writable_disk_bytes: Option<u64>,
    /// Parent of the VM's scratch directory (holds its writable disk too).
    pub scratch_parent: Option<PathBuf>,
    pub boot_timeout: Duration,
}

/// Output and status of the process a warm VM ran.
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Option<ExitStatus>,
    /// True when an output stream was cut at the caller's cap.
    pub truncated: bool,
    /// Where the time went: building the container's root filesystem in the guest
    /// (CreateContainer), and starting the process until its exit status arrived.
    pub create_time: Duration,
    pub process_time: Duration,
}

pub struct WarmVm {
    // Field order matters: the VM goes before the directory holding its writable disk.
    vm: MicroVm,
    agent: AgentConn,
    layers: usize,
    disk_writable: bool,
    used: bool,
    /// Restored from a snapshot: its randomness and clock are its twins' until reseeded.
    reseed: bool,
    /// Set once the container is created (with this hostname).
    hostname: Option<String>,
    _disk_dir: tempfile::TempDir,
}

impl WarmVm {
    /// Boots the VM up to "agent ready". The VM dies with this process.
    pub fn boot(spec: &WarmSpec) -> Result<Self> {
        let parent = spec
            .scratch_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let disk_dir = crate::owner_only::temp_dir(&parent, "skiff-warm-")?;
        let mut disks = Disk::layers(&spec.layers);
        if let Some(bytes) = spec.writable_disk_bytes {
            let rw = disk_dir.path().join("rw.img");
            writable::create(&rw, bytes)?;
            disks.push(Disk::writable(rw));
        }
        let size = VmSize {
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
        };
        let config = VmConfig::sized(spec.artifacts.clone(), spec.selection.clone(), size, disks)
            .with_boot_timeout(spec.boot_timeout)
            .with_scratch_parent(spec.scratch_parent.clone());
        let (vm, agent) = MicroVm::boot(&config)?;
        Ok(Self {
            vm,
            agent,
            layers: spec.layers.len(),
            disk_writable: spec.writable_disk_bytes.is_some(),
            used: false,
            reseed: false,
            hostname: None,
            _disk_dir: disk_dir,
        })
    }

    /// A VM restored from a snapshot (see [`crate::vm::snapshot`]); its writable layer is
    /// a tmpfs.
    pub(crate) fn restored(
        vm: MicroVm,
        agent: AgentConn,
        layers: usize,
        scratch_parent: Option<PathBuf>,
    ) -> Result<Self> {
        let parent = scratch_parent.unwrap_or_else(std::env::temp_dir);
        let disk_dir = crate::owner_only::temp_dir(&parent, "skiff-warm-")?;
        Ok(Self {
            vm,
            agent,
            layers,
            disk_writable: false,
            used: false,
            reseed: true,
            hostname: None,
            _disk_dir: disk_dir,
        })
    }

    pub fn timings(&self) -> BootTimings {
        self.vm.timings
    }

    /// The VMM's host process.
    pub fn pid(&self) -> u32 {
        self.vm.pid()
    }

    /// Creates the container (layers + the fresh writable layer) with `hostname`, ahead
    /// of the process: a pool does this while the VM waits, so an invocation only
    /// starts its process. Returns how long the guest took.
    pub fn create(&mut self, hostname: &str) -> Result<Duration> {
        if self.hostname.is_some() {
            return Err(crate::Error::Config(
                "the warm VM's container is already created".into(),
            ));
        }
        let layers = Disk::layer_serials(self.layers);
        let t0 = Instant::now();
        if self.reseed {
            self.agent.reseed()?;
            self.reseed = false;
        }
        self.agent.create_container(&ContainerConfig {
            id: hostname.to_owned(),
            hostname: hostname.to_owned(),
            layers,
            writable: self.disk_writable.then(|| Disk::WRITABLE_SERIAL.into()),
            ..ContainerConfig::default()
        })?;
        self.hostname = Some(hostname.to_owned());
        Ok(t0.elapsed())
    }

    /// The container's hostname once it is created.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// Runs `process` in the created container as a side process, before the real one,
    /// and waits for its exit status (its output is discarded). It warms QEMU's
    /// translation cache and the guest's page cache for the fork/exec/exit path. The
    /// caller chooses a process that leaves nothing behind (such as `true`): it runs in
    /// the container's filesystem and the VM's PID namespace.
    pub fn warm_up(&mut self, process: &ProcessSpec, timeout: Duration) -> Result<ExitStatus> {
        if self.hostname.is_none() || self.used {
            return Err(crate::Error::Config(
                "warm-up runs in a created, unused warm VM".into(),
            ));
        }
        let mut process = process.clone();
        process.stdin = false;
        process.terminal = false;
        if let StartOutcome::Failed { status } =
            self.agent.start(WARM_UP_STREAM, false, &process)?
        {
            return Ok(status);
        }
        let out = self.collect(WARM_UP_STREAM, 0, timeout)?;
        out.status
            .ok_or_else(|| crate::Error::Protocol("the warm VM stopped during its warm-up".into()))
    }

    /// Runs `process` as the container's process until it exits or `timeout` passes
    /// (then it is killed), creating the container first with `hostname` unless
    /// [`WarmVm::create`] already did (then `hostname` must be the one it was given).
    /// Each output stream keeps at most `cap` bytes. A warm VM runs one process;
    /// dropping it afterwards destroys it (callers can do that off their request path).
    pub fn run(
        &mut self,
        hostname: &str,
        process: &ProcessSpec,
        cap: usize,
        timeout: Duration,
    ) -> Result<RunOutput> {
        if std::mem::replace(&mut self.used, true) {
            return Err(crate::Error::Config(
                "a warm VM runs one process; boot another".into(),
            ));
        }
        let create_time = match self.hostname.as_deref() {
            None => self.create(hostname)?,
            Some(h) if h == hostname => Duration::ZERO,
            Some(h) => {
                return Err(crate::Error::Config(format!(
                    "the warm VM's container was created as {h:?}, not {hostname:?}"
                )))
            }
        };
        let t1 = Instant::now();
        let mut process = process.clone();
        process.stdin = false;
        process.terminal = false;
        if let StartOutcome::Failed { status } = self.agent.start(STREAM, true, &process)? {
            return Ok(RunOutput {
                status: Some(status),
                create_time,
                process_time: t1.elapsed(),
                ..RunOutput::default()
            });
        }
        let mut out = self.collect(STREAM, cap, timeout)?;
        out.create_time = create_time;
        out.process_time = t1.elapsed();
        Ok(out)
    }

    /// Output and exit status of the started process on `stream`; a watchdog kills it
    /// at the deadline (the agent connection blocks).
    fn collect(&mut self, stream: u32, cap: usize, timeout: Duration) -> Result<RunOutput> {
        let sender = self.agent.sender();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                let _ = sender.signal(stream, libc::SIGKILL);
            }
        });
        let mut out = RunOutput::default();
        let keep = |buf: &mut Vec<u8>, bytes: &[u8], truncated: &mut bool| {
            let room = cap.saturating_sub(buf.len());
            if bytes.len() > room {
                *truncated = true;
            }
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        };
        let result = loop {
            match self.agent.next_event() {
                Ok(Some(Event::Stdout { stream: s, bytes })) if s == stream => {
                    keep(&mut out.stdout, &bytes, &mut out.truncated);
                }
                Ok(Some(Event::Stderr { stream: s, bytes })) if s == stream => {
                    keep(&mut out.stderr, &bytes, &mut out.truncated);
                }
                Ok(Some(Event::Exited { stream: s, status })) if s == stream => {
                    out.status = Some(status);
                    break Ok(());
                }
                Ok(Some(Event::PoweringOff) | None) => break Ok(()),
                Ok(Some(_)) => {}
                Err(e) => break Err(e),
            }
        };
        let _ = done_tx.send(());
        let _ = watchdog.join();
        result.map(|()| out)
    }
}
