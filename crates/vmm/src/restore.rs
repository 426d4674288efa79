//! Builds a microVM from a snapshot directory instead of booting a kernel: guest
//! memory mapped copy-on-write from the snapshot's memory file, VM and vCPU state
//! loaded into fresh KVM objects, devices re-created from their saved backends (or
//! the paths given at restore) with their transport and queue state.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, PoisonError};
use std::time::Instant;

use skiff_virtio::block::{Block, Disk, DiskConfig};
use skiff_virtio::net::{Net, Tap};
use skiff_virtio::vsock::{Vsock, VsockMuxer};
use skiff_virtio::VirtioDevice;
use tracing::info;

use crate::builder::{attach_devices, console_out, io_err, serial_irq, BuildError, Microvm};
use crate::devices::{BootTimer, Devices, SerialConsole, I8042};
use crate::event_loop::EventLoop;
use crate::seccomp::Filters;
use crate::snapshot::format::{read_state, MEMORY_FILE};
use crate::snapshot::state::{DeviceBackend, Snapshot, VmShape};
use crate::snapshot::{kvm_state, map_memory, HostInfo, SnapshotError};
use crate::vmm_config::ConsoleConfig;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::Vm;

/// What to restore and how to connect it to this host.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// Snapshot directory (`state` + `memory`).
    pub snapshot_dir: PathBuf,
    /// Disk images replacing the saved paths, in the order of the saved disks (all or
    /// none). Each must have the size the guest saw.
    pub disks: Vec<PathBuf>,
    /// vsock host socket replacing the saved one (the old one may still be in use).
    pub vsock: Option<PathBuf>,
    /// Console destination.
    pub console: ConsoleConfig,
    /// Memory size the caller expects (MiB); a different snapshot is refused.
    pub memory_mib: Option<u64>,
    /// Leave the vCPUs parked until `resume` arrives on the API socket.
    pub start_paused: bool,
    /// Install the per-thread seccomp filters.
    pub seccomp: bool,
    /// Print boot-timer markers on stderr.
    pub report_boot_time: bool,
}

impl From<&skiff_vmm_config::RestorePlan> for RestoreConfig {
    /// What to restore for `skiff-vmm restore`; the plan's API socket is the run
    /// loop's business.
    fn from(plan: &skiff_vmm_config::RestorePlan) -> Self {
        Self {
            snapshot_dir: plan.snapshot.clone(),
            disks: plan.disks.clone(),
            vsock: plan.vsock.clone(),
            console: plan.console.clone(),
            memory_mib: plan.memory_mib,
            start_paused: plan.paused,
            seccomp: plan.seccomp,
            report_boot_time: plan.report_boot_time,
        }
    }
}

fn mismatch(why: String) -> BuildError {
    BuildError::Snapshot(SnapshotError::Mismatch(why))
}

/// Device models in the snapshot's order, with the backends they were opened on.
type DeviceModels = (Vec<Box<dyn VirtioDevice>>, Vec<DeviceBackend>);

/// Re-creates the device models of `snapshot`, with the overrides of `config`.
fn device_models(snapshot: &Snapshot, config: &RestoreConfig) -> Result<DeviceModels, BuildError> {
    let saved_disks = snapshot
        .devices
        .iter()
        .filter(|d| matches!(d.backend, DeviceBackend::Block { .. }))
        .count();
    if !config.disks.is_empty() && config.disks.len() != saved_disks {
        return Err(mismatch(format!(
            "{} --disk given, the snapshot has {saved_disks} disks",
            config.disks.len()
        )));
    }
    let mut disk_overrides = config.disks.iter();
    let mut models: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut backends = Vec::new();
    for device in &snapshot.devices {
        let mut backend = device.backend.clone();
        match &mut backend {
            DeviceBackend::Block {
                path,
                read_only,
                serial,
                sectors,
            } => {
                if let Some(p) = disk_overrides.next() {
                    *path = p.display().to_string();
                }
                let disk = Disk::open(&DiskConfig {
                    path: PathBuf::from(&*path),
                    read_only: *read_only,
                    serial: serial.clone(),
                })?;
                if disk.sectors() != *sectors {
                    return Err(mismatch(format!(
                        "disk {path} has {} sectors, the guest saw {sectors}",
                        disk.sectors()
                    )));
                }
                models.push(Box::new(Block::new(disk)));
            }
            DeviceBackend::Net { tap, mac } => {
                let t = Tap::open(tap).map_err(|e| BuildError::Config(e.to_string()))?;
                models.push(Box::new(
                    Net::new(t, *mac).map_err(io_err("virtio-net epoll"))?,
                ));
            }
            DeviceBackend::Vsock {
                guest_cid,
                uds_path,
            } => {
                if let Some(p) = &config.vsock {
                    *uds_path = p.display().to_string();
                }
                let path = PathBuf::from(&*uds_path);
                let muxer =
                    VsockMuxer::new(*guest_cid, &path).map_err(|source| BuildError::Vsock {
                        path: uds_path.clone(),
                        source,
                    })?;
                models.push(Box::new(Vsock::new(muxer)));
            }
        }
        backends.push(backend);
    }
    Ok((models, backends))
}

/// Builds the microVM saved in `config.snapshot_dir`; `start` is when the VMM started.
pub fn restore(config: &RestoreConfig, start: Instant) -> Result<Microvm, BuildError> {
    let parsed = read_state(&config.snapshot_dir)?;
    let snapshot = &parsed.snapshot;
    let machine = &snapshot.machine;
    if let Some(mib) = config.memory_mib {
        if mib != machine.memory_mib {
            return Err(mismatch(format!(
                "--memory-mib {mib}, but the snapshot's guest has {} MiB",
                machine.memory_mib
            )));
        }
    }
    let mem = Arc::new(map_memory(
        &config.snapshot_dir.join(MEMORY_FILE),
        &machine.regions,
        parsed.memory_len,
    )?);
    let vm = Vm::new(&mem)?;
    snapshot
        .host
        .check_compatible(&HostInfo::current(vm.kvm().get_api_version()))?;
    kvm_state::restore_vm(vm.fd(), &snapshot.vm)?;

    let (models, backends) = device_models(snapshot, config)?;
    let slots = attach_devices(&vm, &mem, models)?;
    for (i, (slot, saved)) in slots.iter().zip(&snapshot.devices).enumerate() {
        slot.transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .restore_state(&saved.transport)
            .map_err(|e| mismatch(format!("device {i}: {e}")))?;
    }
    let serial = SerialConsole::restore(
        &snapshot.serial,
        serial_irq(&vm)?,
        console_out(&config.console)?,
    )
    .map_err(|e| BuildError::Snapshot(SnapshotError::Invalid(e)))?;
    let event_loop = EventLoop::new(slots.iter().map(|s| s.transport.clone()).collect())
        .map_err(io_err("device event loop"))?;
    let (exit_tx, exit_rx) = mpsc::channel();
    let devices = Arc::new(Devices::new(
        serial,
        I8042::default(),
        BootTimer::new(start, config.report_boot_time),
        slots,
        exit_tx,
    ));
    devices.restore_status(machine.reported_status);
    let vcpus = snapshot
        .vcpus
        .iter()
        .map(|v| Vcpu::restore(&vm, v))
        .collect::<Result<Vec<_>, _>>()?;
    let filters = if config.seccomp {
        Filters::strict()?
    } else {
        Filters::disabled()
    };
    info!(
        "microVM restored from {} in {} us: {} MiB, {} vCPUs, {} devices",
        config.snapshot_dir.display(),
        start.elapsed().as_micros(),
        machine.memory_mib,
        machine.vcpus,
        backends.len()
    );
    if config.report_boot_time {
        // A fixed format that benchmarks parse.
        eprintln!(
            "skiff-vmm: restored {} us since VMM start, monotonic {} ns",
            start.elapsed().as_micros(),
            crate::devices::boot_timer::monotonic_ns()
        );
    }
    Ok(Microvm {
        vm: Arc::new(vm),
        mem,
        vcpus,
        devices,
        event_loop,
        exit_rx,
        filters,
        shape: VmShape {
            memory_mib: machine.memory_mib,
            vcpus: machine.vcpus,
            backends,
        },
        start_paused: config.start_paused,
    })
}
