//! Wires a microVM from a [`VmConfig`]: memory, kernel and boot state, devices with
//! their irqfds and ioeventfds, vCPUs; then runs it until the guest ends.

use std::fs::OpenOptions;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use linux_loader::loader::Cmdline;
use skiff_virtio::block::{Block, Disk, DiskError};
use skiff_virtio::net::{Net, Tap};
use skiff_virtio::transport::mmio::QUEUE_NOTIFY_OFFSET;
use skiff_virtio::transport::{IrqTrigger, MmioTransport, MMIO_WINDOW_SIZE};
use skiff_virtio::vsock::{Vsock, VsockMuxer};
use skiff_virtio::VirtioDevice;
use tracing::{info, warn};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::boot::{self, BootError};
use crate::arch::layout::{
    CMDLINE_MAX, MAX_VIRTIO_DEVICES, SERIAL_IRQ, VIRTIO_IRQ_BASE, VIRTIO_MMIO_BASE,
};
use crate::arch::{mptable, paging};
use crate::devices::{BootTimer, ConsoleOut, Devices, IrqLine, MmioSlot, SerialConsole, I8042};
use crate::event_loop::EventLoop;
use crate::exit::{GuestExit, EXIT_VMM_ERROR};
use crate::seccomp::{Filters, SeccompError, ThreadKind};
use crate::snapshot::state::{DeviceBackend, VmShape};
use crate::snapshot::SnapshotError;
use crate::vhost_user::frontend::{fs_device, FrontendError};
use crate::vmm_config::{ConsoleConfig, VmConfig, MAX_VCPUS};
use crate::vstate::control::{install_kick_handler, VcpuControl};
use crate::vstate::memory::{create_guest_memory_with, Backing, MemoryError};
use crate::vstate::vcpu::{boot_msr_indices, Vcpu, VcpuRunContext};
use crate::vstate::vm::{Vm, VmError};
use crate::GuestMemoryMmap;

/// Why a microVM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    VhostUser(#[from] FrontendError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("vsock socket {path}: {source}")]
    Vsock {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("console {path}: {source}")]
    Console {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> BuildError {
    move |source| BuildError::Io { what, source }
}

/// A built microVM, ready to run.
pub struct Microvm {
    pub(crate) vm: Arc<Vm>,
    pub(crate) mem: Arc<GuestMemoryMmap>,
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) devices: Arc<Devices>,
    pub(crate) event_loop: EventLoop,
    pub(crate) exit_rx: mpsc::Receiver<GuestExit>,
    pub(crate) filters: Filters,
    /// What a snapshot of this VM must record besides KVM and device state.
    pub(crate) shape: VmShape,
    pub(crate) start_paused: bool,
}

/// How to run a built microVM.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Serve the control API (pause, resume, snapshot) on this UNIX socket.
    pub api_socket: Option<PathBuf>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Why the guest stopped.
    pub exit: GuestExit,
    /// Status byte the guest wrote to the status port, if any.
    pub reported_status: Option<u8>,
}

impl RunOutcome {
    /// Exit status for the VMM process (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        self.exit.exit_code(self.reported_status)
    }
}

pub(crate) fn console_out(config: &ConsoleConfig) -> Result<ConsoleOut, BuildError> {
    Ok(match config {
        ConsoleConfig::Stdout => Box::new(std::io::stdout()),
        ConsoleConfig::Off => Box::new(std::io::sink()),
        ConsoleConfig::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| BuildError::Console {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
    })
}

/// Threads cannot hand errors back: a filter that does not install ends the VMM
/// before the thread runs unconfined.
fn install_or_die(filters: &Filters, kind: ThreadKind) {
    if let Err(e) = filters.install(kind) {
        eprintln!("skiff-vmm: {e}");
        std::process::exit(EXIT_VMM_ERROR);
    }
}

fn validate(config: &VmConfig) -> Result<(), BuildError> {
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(BuildError::Config(format!(
            "--cpus must be 1..={MAX_VCPUS}"
        )));
    }
    let devices = config.disks.len()
        + config.nets.len()
        + usize::from(config.vsock.is_some())
        + config.fs.len();
    if devices > MAX_VIRTIO_DEVICES {
        return Err(BuildError::Config(format!(
            "at most {MAX_VIRTIO_DEVICES} devices"
        )));
    }
    if let Some(v) = &config.vsock {
        if v.guest_cid < 3 || v.guest_cid > u64::from(u32::MAX) {
            return Err(BuildError::Config(
                "--guest-cid must be 3..=4294967295".into(),
            ));
        }
    }
    Ok(())
}

/// Builds the microVM described by `config`; `start` is when the VMM process started.
pub fn build(config: &VmConfig, start: Instant) -> Result<Microvm, BuildError> {
    validate(config)?;
    // A vhost-user backend maps guest RAM itself: it must be a shareable memfd.
    let backing = if config.fs.is_empty() {
        Backing::Private
    } else {
        Backing::SharedMemfd
    };
    let mem = Arc::new(create_guest_memory_with(config.memory_mib, backing)?);
    let vm = Vm::new(&mem)?;

    let kernel = boot::load_kernel(&mem, &config.kernel)?;
    let initramfs = match &config.initramfs {
        Some(path) => Some(boot::load_initramfs(&mem, path, kernel.end)?),
        None => None,
    };
    paging::write_boot_tables(&mem).map_err(BootError::from)?;
    mptable::write_mptable(&mem, config.vcpus).map_err(BootError::from)?;

    let mut cmdline = Cmdline::new(CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    if !config.cmdline.trim().is_empty() {
        cmdline
            .insert_str(config.cmdline.trim())
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }

    let mut models: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut backends = Vec::new();
    for disk in &config.disks {
        let opened = Disk::open(disk)?;
        backends.push(DeviceBackend::Block {
            path: disk.path.display().to_string(),
            read_only: disk.read_only,
            serial: disk.serial.clone(),
            sectors: opened.sectors(),
        });
        models.push(Box::new(Block::new(opened)));
    }
    for net in &config.nets {
        let tap = Tap::open(&net.tap).map_err(|e| BuildError::Config(e.to_string()))?;
        models.push(Box::new(
            Net::new(tap, net.mac).map_err(io_err("virtio-net epoll"))?,
        ));
        backends.push(DeviceBackend::Net {
            tap: net.tap.clone(),
            mac: net.mac,
        });
    }
    if let Some(v) = &config.vsock {
        let muxer =
            VsockMuxer::new(v.guest_cid, &v.uds_path).map_err(|source| BuildError::Vsock {
                path: v.uds_path.display().to_string(),
                source,
            })?;
        models.push(Box::new(Vsock::new(muxer)));
        backends.push(DeviceBackend::Vsock {
            guest_cid: v.guest_cid,
            uds_path: v.uds_path.display().to_string(),
        });
    }
    for fs in &config.fs {
        models.push(Box::new(fs_device(&fs.tag, &fs.socket)?));
    }

    let slots = attach_devices(&vm, &mem, models)?;
    for slot in &slots {
        cmdline
            .add_virtio_mmio_device(MMIO_WINDOW_SIZE, GuestAddress(slot.base), slot.irq, None)
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }

    let cmdline_len = boot::write_cmdline(&mem, &cmdline)?;
    boot::write_zero_page(&mem, &kernel, cmdline_len, initramfs)?;

    let serial = SerialConsole::new(serial_irq(&vm)?, console_out(&config.console)?);

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

    let vcpus = (0..config.vcpus)
        .map(|id| Vcpu::new(&vm, id, config.vcpus, kernel.entry))
        .collect::<Result<Vec<_>, _>>()?;
    info!(
        "microVM built in {} us: entry {:#x}, {} MiB, {} vCPUs",
        start.elapsed().as_micros(),
        kernel.entry,
        config.memory_mib,
        config.vcpus
    );
    let filters = if config.seccomp {
        Filters::strict()?
    } else {
        Filters::disabled()
    };
    Ok(Microvm {
        vm: Arc::new(vm),
        mem,
        vcpus,
        devices,
        event_loop,
        exit_rx,
        filters,
        shape: VmShape {
            memory_mib: config.memory_mib,
            vcpus: config.vcpus,
            backends,
        },
        start_paused: false,
    })
}

/// The COM1 interrupt line, wired to the irqchip.
pub(crate) fn serial_irq(vm: &Vm) -> Result<IrqLine, BuildError> {
    let serial_evt = EventFd::new(EFD_NONBLOCK).map_err(io_err("eventfd"))?;
    vm.register_irqfd(&serial_evt, SERIAL_IRQ)?;
    Ok(IrqLine(serial_evt))
}

/// Puts each model behind a virtio-mmio transport at its window with an irqfd and
/// ioeventfds; device `i` gets window `i` and IRQ `VIRTIO_IRQ_BASE + i`.
pub(crate) fn attach_devices(
    vm: &Vm,
    mem: &Arc<GuestMemoryMmap>,
    models: Vec<Box<dyn VirtioDevice>>,
) -> Result<Vec<MmioSlot>, BuildError> {
    let mut slots = Vec::new();
    let mut ioeventfd_ok = true;
    for (i, model) in models.into_iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * MMIO_WINDOW_SIZE;
        let irq = VIRTIO_IRQ_BASE + u32::try_from(i).unwrap_or(0);
        let trigger = Arc::new(IrqTrigger::with_new_eventfd().map_err(io_err("eventfd"))?);
        vm.register_irqfd(trigger.eventfd(), irq)?;
        let transport =
            MmioTransport::new(model, mem.clone(), trigger).map_err(io_err("eventfd"))?;
        for (q, evt) in transport.queue_events().iter().enumerate() {
            let datamatch = u32::try_from(q).unwrap_or(u32::MAX);
            if let Err(e) = vm.register_mmio_ioeventfd(evt, base + QUEUE_NOTIFY_OFFSET, datamatch) {
                // The transport forwards notifications itself; only slower.
                if ioeventfd_ok {
                    warn!("ioeventfd unavailable, notifications go through VM exits: {e}");
                }
                ioeventfd_ok = false;
            }
        }
        slots.push(MmioSlot {
            base,
            irq,
            transport: Arc::new(Mutex::new(transport)),
        });
    }
    Ok(slots)
}

impl Microvm {
    /// Starts the device thread, the vCPUs and (with an API socket) the control API,
    /// and waits until the guest ends. The vCPU threads are not joined: the caller is
    /// expected to exit the process.
    pub fn run(self, options: RunOptions) -> Result<RunOutcome, BuildError> {
        let Microvm {
            vm,
            mem,
            vcpus,
            devices,
            event_loop,
            exit_rx,
            filters,
            shape,
            start_paused,
        } = self;
        // Bound before any thread starts, so a bad path is an error, not a late warning.
        let listener = match &options.api_socket {
            Some(path) => Some(crate::api::bind(path).map_err(|source| BuildError::Io {
                what: "API socket",
                source,
            })?),
            None => None,
        };
        if start_paused && listener.is_none() {
            return Err(BuildError::Config(
                "a VM that starts paused needs --api-socket to be resumed".into(),
            ));
        }
        install_kick_handler().map_err(io_err("install vCPU kick handler"))?;
        crate::seccomp::install_violation_reporter()
            .map_err(io_err("install seccomp violation reporter"))?;
        let msr_list = Arc::new(crate::snapshot::kvm_state::msr_indices(
            vm.kvm(),
            &boot_msr_indices(),
        ));
        let (control, receivers) = VcpuControl::new(vcpus.len(), start_paused);
        let control = Arc::new(control);
        let device_filters = filters.clone();
        std::thread::Builder::new()
            .name("skiff-devices".into())
            .spawn(move || {
                install_or_die(&device_filters, ThreadKind::Device);
                event_loop.run()
            })
            .map_err(io_err("spawn device thread"))?;
        for (vcpu, commands) in vcpus.into_iter().zip(receivers) {
            let ctx = VcpuRunContext {
                devices: devices.clone(),
                control: control.clone(),
                commands,
                msr_list: msr_list.clone(),
            };
            let vcpu_filters = filters.clone();
            let handle = std::thread::Builder::new()
                .name("skiff-vcpu".into())
                .spawn(move || {
                    install_or_die(&vcpu_filters, ThreadKind::Vcpu);
                    vcpu.run(ctx)
                })
                .map_err(io_err("spawn vCPU thread"))?;
            control.register_thread(handle.as_pthread_t());
        }
        if let Some(listener) = listener {
            let api = crate::api::Api {
                vm: vm.clone(),
                mem: mem.clone(),
                devices: devices.clone(),
                control: control.clone(),
                shape,
            };
            let api_filters = filters.clone();
            std::thread::Builder::new()
                .name("skiff-api".into())
                .spawn(move || {
                    install_or_die(&api_filters, ThreadKind::Api);
                    api.serve(listener)
                })
                .map_err(io_err("spawn API thread"))?;
        }
        filters.install(ThreadKind::Vmm)?;
        let exit = exit_rx
            .recv()
            .unwrap_or_else(|_| GuestExit::Crash("all vCPUs stopped".into()));
        devices.flush_console();
        // Keep VM and memory mapped until here: vCPUs may still be running.
        drop((vm, mem));
        Ok(RunOutcome {
            exit,
            reported_status: devices.reported_status(),
        })
    }
}
