//! A microVM booted ahead of need: its image's layer disks (and optionally a fresh
//! writable disk) are attached and the guest agent has said hello, but no container exists in it yet.
//! [`WarmVm::run`] creates the container (with the caller's hostname) and runs one
//! process to completion; the VM is then thrown away (dropping it kills it), so no
//! state leaks from one use to the next. This is what warm pools (skiffd) hold.

use std::path::PathBuf;
use std::time::Duration;

use skiff_proto::{ContainerConfig, ExitStatus, ProcessSpec};

use crate::hypervisor::Disk;
use crate::{writable, AgentConn, Event, GuestArtifacts, MicroVm, Result, Selection, StartOutcome};
use crate::{BootTimings, VmConfig};

/// The stream number of the one process a warm VM runs.
const STREAM: u32 = 1;

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
    _disk_dir: tempfile::TempDir,
}

impl WarmVm {
    /// Boots the VM up to "agent ready". The VM dies with this process.
    pub fn boot(spec: &WarmSpec) -> Result<Self> {
        let parent = spec
            .scratch_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let disk_dir = tempfile::Builder::new()
            .prefix("skiff-warm-")
            .tempdir_in(parent)
            .map_err(crate::Error::io("create the warm VM's disk directory"))?;
        let mut disks: Vec<Disk> = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, p)| Disk {
                path: p.clone(),
                readonly: true,
                serial: format!("layer{i}"),
            })
            .collect();
        if let Some(bytes) = spec.writable_disk_bytes {
            let rw = disk_dir.path().join("rw.img");
            writable::create(&rw, bytes)?;
            disks.push(Disk {
                path: rw,
                readonly: false,
                serial: "rw".into(),
            });
        }
        let mut config = VmConfig::new(spec.artifacts.clone(), spec.selection.clone());
        config.memory_mib = spec.memory_mib;
        config.vcpus = spec.vcpus;
        config.disks = disks;
        config.boot_timeout = spec.boot_timeout;
        config.die_with_parent = true;
        config.scratch_parent = spec.scratch_parent.clone();
        let (vm, agent) = MicroVm::boot(&config)?;
        Ok(Self {
            vm,
            agent,
            layers: spec.layers.len(),
            disk_writable: spec.writable_disk_bytes.is_some(),
            used: false,
            reseed: false,
            _disk_dir: disk_dir,
        })
    }

    /// A VM restored from a snapshot (see [`crate::snapshot`]); its writable layer is
    /// a tmpfs.
    pub(crate) fn restored(
        vm: MicroVm,
        agent: AgentConn,
        layers: usize,
        scratch_parent: Option<PathBuf>,
    ) -> Result<Self> {
        let disk_dir = tempfile::Builder::new()
            .prefix("skiff-warm-")
            .tempdir_in(scratch_parent.unwrap_or_else(std::env::temp_dir))
            .map_err(crate::Error::io("create the warm VM's directory"))?;
        Ok(Self {
            vm,
            agent,
            layers,
            disk_writable: false,
            used: false,
            reseed: true,
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

    /// Creates the container (layers + the fresh writable disk, `hostname`) and runs
    /// `process` until it exits or `timeout` passes (then it is killed). Each output
    /// stream keeps at most `cap` bytes. A warm VM runs one process; dropping it
    /// afterwards destroys it (callers can do that off their request path).
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
        let layers = (0..self.layers).map(|i| format!("layer{i}")).collect();
        let t0 = std::time::Instant::now();
        if self.reseed {
            self.agent.reseed(crate::snapshot::host_entropy()?)?;
        }
        self.agent.create_container(&ContainerConfig {
            id: hostname.to_owned(),
            hostname: hostname.to_owned(),
            layers,
            writable: self.disk_writable.then(|| "rw".into()),
            readonly_rootfs: false,
            shares: Vec::new(),
            root_share: None,
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            network: None,
            mounts: None,
        })?;
        let mut out = RunOutput {
            create_time: t0.elapsed(),
            ..RunOutput::default()
        };
        let t1 = std::time::Instant::now();
        let mut process = process.clone();
        process.stdin = false;
        process.terminal = false;
        if let StartOutcome::Failed { status } = self.agent.start(STREAM, true, &process)? {
            out.status = Some(status);
            out.process_time = t1.elapsed();
            return Ok(out);
        }
        // The agent connection blocks; a watchdog kills the process at the deadline.
        let sender = self.agent.sender();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                let _ = sender.signal(STREAM, libc::SIGKILL);
            }
        });
        let keep = |buf: &mut Vec<u8>, bytes: &[u8], truncated: &mut bool| {
            let room = cap.saturating_sub(buf.len());
            if bytes.len() > room {
                *truncated = true;
            }
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        };
        loop {
            match self.agent.next_event()? {
                Some(Event::Stdout { stream, bytes }) if stream == STREAM => {
                    keep(&mut out.stdout, &bytes, &mut out.truncated);
                }
                Some(Event::Stderr { stream, bytes }) if stream == STREAM => {
                    keep(&mut out.stderr, &bytes, &mut out.truncated);
                }
                Some(Event::Exited { stream, status }) if stream == STREAM => {
                    out.status = Some(status);
                    break;
                }
                Some(Event::PoweringOff) | None => break,
                Some(_) => {}
            }
        }
        out.process_time = t1.elapsed();
        let _ = done_tx.send(());
        let _ = watchdog.join();
        Ok(out)
    }
}
