//! One booted microVM: its host processes, its scratch directory, and the agent that
//! dialled in. Dropping a [`MicroVm`] kills whatever is left of it and removes the
//! scratch directory, on every path including errors.

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_proto::{AGENT_PORT, READY_PORT};
use skiff_sys::fds;

use crate::vm::agent::AgentConn;
use crate::vm::artifacts::GuestArtifacts;
use crate::vm::console_log::{self, ConsoleLog};
use crate::vm::hypervisor::{
    self, Disk, LaunchSpec, NetDevice, Selection, Share, SnapshotRole, VmProcess,
};
use crate::{Error, Result};

/// How a VM's scratch directory's name starts (records name it; cleanup checks it).
pub const SCRATCH_PREFIX: &str = "skiff-vm-";

/// Lines of console output kept in boot errors.
const CONSOLE_TAIL_LINES: usize = 20;

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub artifacts: GuestArtifacts,
    pub selection: Selection,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub disks: Vec<Disk>,
    /// Host directories shared with the guest (`-v`).
    pub shares: Vec<Share>,
    /// virtio-net devices on host TAPs.
    pub nets: Vec<NetDevice>,
    /// A virtio-balloon device (QEMU backend).
    pub balloon: bool,
    pub cmdline_extra: String,
    /// How long the agent may take to dial in after the VMM starts.
    pub boot_timeout: Duration,
    pub die_with_parent: bool,
    /// Parent of the VM's scratch directory (default: the system temp dir).
    pub scratch_parent: Option<PathBuf>,
    /// A VM to be saved, or one restored from a snapshot (QEMU backend).
    pub snapshot: Option<VmSnapshot>,
}

/// The owned form of [`SnapshotRole`].
#[derive(Debug, Clone)]
pub enum VmSnapshot {
    Template { ram: PathBuf },
    Restore { ram: PathBuf, state: PathBuf },
}

/// How big a VM is: guest RAM and vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    pub memory_mib: u32,
    pub vcpus: u32,
}

impl VmConfig {
    /// A VM of `size` booting `disks`, dying with this process as every VM skiff
    /// starts does; the rest is [`VmConfig::new`]'s defaults (see the `with_` setters).
    pub fn sized(
        artifacts: GuestArtifacts,
        selection: Selection,
        size: VmSize,
        disks: Vec<Disk>,
    ) -> Self {
        Self {
            memory_mib: size.memory_mib,
            vcpus: size.vcpus,
            disks,
            die_with_parent: true,
            ..Self::new(artifacts, selection)
        }
    }

    /// How long the agent may take to dial in.
    pub fn with_boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// Where the VM's scratch directory goes (`None`: the system temp dir).
    pub fn with_scratch_parent(mut self, parent: Option<PathBuf>) -> Self {
        self.scratch_parent = parent;
        self
    }

    /// A 256 MiB, 1-vCPU VM with no disks that outlives its parent (field by field
    /// setup; [`VmConfig::sized`] is the usual start).
    pub fn new(artifacts: GuestArtifacts, selection: Selection) -> Self {
        Self {
            artifacts,
            selection,
            memory_mib: 256,
            vcpus: 1,
            disks: Vec::new(),
            shares: Vec::new(),
            nets: Vec::new(),
            balloon: false,
            cmdline_extra: String::new(),
            boot_timeout: Duration::from_secs(30),
            die_with_parent: false,
            scratch_parent: None,
            snapshot: None,
        }
    }
}

/// Where boot time went, measured on the host (plus the guest's own clock).
#[derive(Debug, Clone, Copy, Default)]
pub struct BootTimings {
    /// Scratch directory, sockets and backend processes, up to the VMM's spawn.
    pub prepare: Duration,
    /// VMM spawn until the agent's hello.
    pub launch_to_ready: Duration,
    /// Guest time since kernel start when the agent said hello.
    pub guest_uptime_at_ready: Option<Duration>,
}

pub struct MicroVm {
    process: Box<dyn VmProcess>,
    /// Before `work_dir`: its thread writes in there until stopped.
    console: ConsoleLog,
    work_dir: tempfile::TempDir,
    vsock_uds: PathBuf,
    pub timings: BootTimings,
}

impl MicroVm {
    /// Starts the VM and waits for its agent. On any error every host process of the VM
    /// is killed and the scratch directory removed before returning.
    pub fn boot(config: &VmConfig) -> Result<(Self, AgentConn)> {
        match config.snapshot {
            None => {}
            Some(VmSnapshot::Restore { .. }) => return Self::restore(config),
            Some(VmSnapshot::Template { .. }) => {
                return Err(Error::Config(
                    "a snapshot template is started with MicroVm::launch_template".into(),
                ))
            }
        }
        let t0 = Instant::now();
        let (work_dir, vsock_uds, console) = scratch(config)?;
        let ready_path = PathBuf::from(format!("{}_{READY_PORT}", vsock_uds.display()));
        let ready = UnixListener::bind(&ready_path)
            .map_err(Error::io(format!("listen on {}", ready_path.display())))?;
        ready
            .set_nonblocking(true)
            .map_err(Error::io("agent listener"))?;

        let spec = launch_spec(config, &vsock_uds, console.fifo(), work_dir.path(), None);
        let t_launch = Instant::now();
        let process = hypervisor::launch(&config.selection, &spec)?;
        let mut vm = Self {
            process,
            console,
            work_dir,
            vsock_uds,
            timings: BootTimings {
                prepare: t_launch - t0,
                ..BootTimings::default()
            },
        };
        let stream = vm.await_agent(&ready, t_launch + config.boot_timeout, config.boot_timeout)?;
        let conn = AgentConn::handshake(stream, Duration::from_secs(10))?;
        vm.timings.launch_to_ready = t_launch.elapsed();
        vm.timings.guest_uptime_at_ready = conn.guest_uptime_ms.map(Duration::from_millis);
        tracing::debug!(timings = ?vm.timings, pid = vm.pid(), "agent ready");
        Ok((vm, conn))
    }

    /// Starts a VM without waiting for anything: a snapshot template (whose agent
    /// waits on its serial port for a host that never connects) or a restored VM.
    fn start(config: &VmConfig) -> Result<(Self, Instant)> {
        let t0 = Instant::now();
        let (work_dir, vsock_uds, console) = scratch(config)?;
        let role = match &config.snapshot {
            Some(VmSnapshot::Template { ram }) => SnapshotRole::Template { ram },
            Some(VmSnapshot::Restore { ram, state }) => SnapshotRole::Restore { ram, state },
            None => return Err(Error::Config("not a snapshot VM".into())),
        };
        let spec = launch_spec(
            config,
            &vsock_uds,
            console.fifo(),
            work_dir.path(),
            Some(role),
        );
        let t_launch = Instant::now();
        let process = hypervisor::launch(&config.selection, &spec)?;
        Ok((
            Self {
                process,
                console,
                work_dir,
                vsock_uds,
                timings: BootTimings {
                    prepare: t_launch - t0,
                    ..BootTimings::default()
                },
            },
            t_launch,
        ))
    }

    /// Starts a VM that will be saved (see [`crate::vm::snapshot`]).
    pub(crate) fn launch_template(config: &VmConfig) -> Result<Self> {
        Ok(Self::start(config)?.0)
    }

    /// Starts a VM from a snapshot and greets its agent on the serial port. QEMU
    /// loads the device state, resumes the vCPUs by itself, and the agent (saved
    /// while waiting for a host) says hello as soon as we connect.
    fn restore(config: &VmConfig) -> Result<(Self, AgentConn)> {
        let (mut vm, t_launch) = Self::start(config)?;
        let deadline = t_launch + config.boot_timeout;
        // Say go only once the state is loaded, so the byte reaches the restored
        // UART instead of one the incoming state then overwrites.
        let running = (|| {
            let mut qmp = hypervisor::qmp::Qmp::connect(
                &vm.work_dir().join(hypervisor::QMP_SOCKET),
                config.boot_timeout,
            )?;
            if let Some(VmSnapshot::Restore { state, .. }) = &config.snapshot {
                hypervisor::start_incoming(&mut qmp, state)?;
            }
            loop {
                let st = qmp.execute("query-status", serde_json::json!({}))?;
                match st.get("status").and_then(serde_json::Value::as_str) {
                    Some("running") => return Ok(()),
                    Some("inmigrate") => {}
                    // The template was paused when saved, so the copy is too.
                    Some("paused") => {
                        qmp.execute("cont", serde_json::json!({}))?;
                        return Ok(());
                    }
                    other => {
                        return Err(Error::Config(format!(
                            "the restored VM is {} instead of running",
                            other.unwrap_or("in an unknown state")
                        )))
                    }
                }
                if Instant::now() >= deadline {
                    return Err(Error::Config("loading the snapshot timed out".into()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })();
        if let Err(e) = running {
            return Err(vm.restore_failed(&e.to_string()));
        }
        let sock = vm.work_dir().join(hypervisor::AGENT_SERIAL_SOCKET);
        let mut stream = std::os::unix::net::UnixStream::connect(&sock)
            .map_err(|e| vm.restore_failed(&format!("connect {}: {e}", sock.display())))?;
        std::io::Write::write_all(&mut stream, &[skiff_proto::SERIAL_GO])
            .map_err(|e| vm.restore_failed(&format!("write {}: {e}", sock.display())))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let conn = AgentConn::handshake(stream, left.max(Duration::from_millis(1)))
            .map_err(|e| vm.restore_failed(&e.to_string()))?;
        vm.timings.launch_to_ready = t_launch.elapsed();
        vm.timings.guest_uptime_at_ready = conn.guest_uptime_ms.map(Duration::from_millis);
        tracing::debug!(timings = ?vm.timings, pid = vm.pid(), "restored VM's agent ready");
        Ok((vm, conn))
    }

    /// For a snapshot template: connects to the serial port's socket and waits until
    /// the agent says it is ready for a host (its output before that is skipped).
    pub(crate) fn await_serial_ready(&mut self, timeout: Duration) -> Result<()> {
        use std::io::Read;
        let deadline = Instant::now() + timeout;
        let sock = self.work_dir().join(hypervisor::AGENT_SERIAL_SOCKET);
        let early = |vm: &mut Self, what: String| -> Error {
            match vm.process.try_wait() {
                Ok(Some(status)) => {
                    let log = console_log::tail(&vm.work_dir().join("qemu.log"), 3);
                    Error::VmExitedEarly {
                        status: format!("{status}; QEMU said: {}", log.join(" / ")),
                        console_tail: Vec::new(),
                    }
                }
                _ => Error::BootTimeout {
                    after: timeout,
                    console_tail: vec![what],
                },
            }
        };
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(early(self, format!("connect {}: {e}", sock.display())))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let want = skiff_proto::SERIAL_READY;
        let mut window: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(early(self, "the agent never said it was ready".into()));
            }
            stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .map_err(Error::io("serial socket"))?;
            match stream.read(&mut buf) {
                Ok(0) => return Err(early(self, "QEMU closed the serial port".into())),
                Ok(n) => {
                    window.extend_from_slice(&buf[..n]);
                    if window.windows(want.len()).any(|w| w == want) {
                        return Ok(());
                    }
                    // Keep only what could still be the start of the marker.
                    let keep = window.len().saturating_sub(want.len());
                    window.drain(..keep);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Ok(Some(_)) = self.process.try_wait() {
                        return Err(early(self, String::new()));
                    }
                }
                Err(e) => return Err(Error::io("read the serial port")(e)),
            }
        }
    }

    /// One error for a restore that did not come up: QEMU's own complaint (a damaged
    /// state file is reported there) or the console's tail.
    fn restore_failed(&mut self, what: &str) -> Error {
        std::thread::sleep(Duration::from_millis(20));
        let exited = self.process.try_wait().ok().flatten();
        self.process.kill();
        let qemu_log = console_log::tail(&self.work_dir().join("qemu.log"), 3);
        match exited {
            Some(status) => Error::VmExitedEarly {
                status: format!("{status}; QEMU said: {}", qemu_log.join(" / ")),
                console_tail: self.console_tail(CONSOLE_TAIL_LINES),
            },
            None => Error::Protocol(format!(
                "restored VM: {what}; console: {}",
                self.console_tail(5).join(" / ")
            )),
        }
    }

    /// The QMP monitor of a QEMU VM.
    pub(crate) fn qmp(&self, timeout: Duration) -> Result<hypervisor::qmp::Qmp> {
        hypervisor::qmp::Qmp::connect(&self.work_dir().join(hypervisor::QMP_SOCKET), timeout)
    }

    fn await_agent(
        &mut self,
        listener: &UnixListener,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<std::os::unix::net::UnixStream> {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(Error::io("agent socket"))?;
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::io("accept the agent's connection")(e)),
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                self.process.kill();
                return Err(Error::VmExitedEarly {
                    status,
                    console_tail: self.console_tail(CONSOLE_TAIL_LINES),
                });
            }
            if Instant::now() >= deadline {
                self.process.kill();
                return Err(Error::BootTimeout {
                    after: timeout,
                    console_tail: self.console_tail(CONSOLE_TAIL_LINES),
                });
            }
            let _ = fds::poll_readable(&[listener.as_fd()], Some(Duration::from_millis(5)));
        }
    }

    /// The host process that is the VM (QEMU or skiff-vmm).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The device daemons serving the VM (virtiofsd, the vsock daemon), with their pids.
    pub fn helpers(&self) -> Vec<(String, u32)> {
        self.process.helpers()
    }

    /// The vsock device's UNIX socket (for `CONNECT <port>`).
    pub fn vsock_uds(&self) -> &Path {
        &self.vsock_uds
    }

    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// A further connection to the agent (e.g. for an `exec` from another client).
    pub fn connect(&self) -> Result<AgentConn> {
        AgentConn::connect(&self.vsock_uds, AGENT_PORT, Duration::from_secs(10))
    }

    /// Waits up to `timeout` for the VM to power off; `Some(status)` if it did.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .process
                .try_wait()
                .map_err(Error::io("wait for the VM"))?
            {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills the VM's host processes at once.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// The last `n` lines the guest printed on its serial console.
    pub fn console_tail(&self, n: usize) -> Vec<String> {
        self.console.tail(n)
    }
}

impl Drop for MicroVm {
    fn drop(&mut self) {
        self.process.kill();
        self.console.stop();
    }
}

/// What the backend launches for `config`, with the VM's scratch paths. A VM that is
/// saved or restored gets no balloon: both sides of a snapshot need the same devices.
fn launch_spec<'a>(
    config: &'a VmConfig,
    vsock_uds: &'a Path,
    console: &'a Path,
    work_dir: &'a Path,
    snapshot: Option<SnapshotRole<'a>>,
) -> LaunchSpec<'a> {
    LaunchSpec {
        artifacts: &config.artifacts,
        memory_mib: config.memory_mib,
        vcpus: config.vcpus,
        disks: &config.disks,
        shares: &config.shares,
        nets: &config.nets,
        balloon: config.balloon && snapshot.is_none(),
        cmdline_extra: &config.cmdline_extra,
        vsock_uds,
        console,
        work_dir,
        die_with_parent: config.die_with_parent,
        snapshot,
    }
}

/// A VM's scratch directory (under `config.scratch_parent`, else the temp dir; 0700),
/// with the path of its vsock socket and its console, drained from here on.
fn scratch(config: &VmConfig) -> Result<(tempfile::TempDir, PathBuf, ConsoleLog)> {
    let parent = config
        .scratch_parent
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let work_dir = crate::owner_only::temp_dir(&parent, SCRATCH_PREFIX)?;
    let vsock_uds = work_dir.path().join("vsock.sock");
    let console = ConsoleLog::start(work_dir.path())?;
    Ok((work_dir, vsock_uds, console))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::hypervisor::{Accel, HypervisorKind};

    #[test]
    fn sized_sets_what_every_caller_sets() {
        let artifacts = GuestArtifacts {
            kernel: "/k".into(),
            initramfs: "/i".into(),
        };
        let selection = Selection {
            kind: HypervisorKind::Vmm,
            accel: Accel::Kvm,
            reason: String::new(),
        };
        let size = VmSize {
            memory_mib: 512,
            vcpus: 2,
        };
        let config = VmConfig::sized(artifacts, selection, size, Disk::layers(&["/l0".into()]))
            .with_boot_timeout(Duration::from_secs(7))
            .with_scratch_parent(Some("/run/x".into()));
        assert_eq!((config.memory_mib, config.vcpus), (512, 2));
        assert_eq!(config.disks.len(), 1);
        assert!(config.die_with_parent);
        assert_eq!(config.boot_timeout, Duration::from_secs(7));
        assert_eq!(config.scratch_parent, Some(PathBuf::from("/run/x")));
        assert!(config.shares.is_empty() && config.nets.is_empty() && !config.balloon);
    }
}
