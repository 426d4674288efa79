//! The host process of a running container: it boots the microVM, creates the
//! container and starts its main process, holds the main agent connection, writes the
//! process's output to the container log (and to an attached terminal), serves the
//! control socket, and records the exit when the VM powers off.
//!
//! `skiff run` in the foreground is its own supervisor; `run -d` and `start` re-execute
//! skiff as a detached supervisor. Either way `ps`, `logs`, `stop` and `exec` from
//! other shells work, because everything they need is in the record.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use skiff_proto::{ContainerConfig, ExitStatus, GuestNetwork, SharedDir};

use super::control::{self, ControlRequest};
use super::logfile::{LogStream, LogWriter};
use super::records::{process_start_ticks, ContainerSpec, Containers, Status};
use super::session::{Session, MAIN_STREAM};
use crate::network::{passt, resolver, Attachment, NetworkMode, Networks};
use crate::vm::agent_mux::AgentMux;
use crate::vm::hypervisor::{self, Disk, HypervisorKind, NetBackend, NetDevice, Share};
use crate::vm::relay::Output;
use crate::vm::writable;
use crate::{AgentSender, Error, GuestArtifacts, Result, VmConfig, VmSize};
use skiff_sys::time::now_ms;

/// How long the agent may take to come up (TCG with several VMs on 2 cores is slow).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A started container, owned by this process until [`Supervisor::wait`] returns.
pub struct Supervisor {
    containers: Containers,
    spec: ContainerSpec,
    session: Session,
    /// Set when the main process could not be executed (126/127).
    failed: Option<ExitStatus>,
    log: LogWriter,
    /// A restored VM's agent line shared with `exec` and `top` (see `agent_mux`).
    _mux: Option<AgentMux>,
    /// Dropped last: removes the container's TAP once the VM is gone.
    _tap: Plugged,
}

/// The container log, and an attached terminal if any: where the main process's
/// output goes.
struct LogAndAttach<'a, 'b> {
    log: &'a mut LogWriter,
    attach: Option<&'a mut (dyn Output + 'b)>,
}

impl Output for LogAndAttach<'_, '_> {
    fn stdout(&mut self, bytes: &[u8]) {
        self.log.write(LogStream::Stdout, bytes);
        if let Some(a) = self.attach.as_deref_mut() {
            a.stdout(bytes);
        }
    }

    fn stderr(&mut self, bytes: &[u8]) {
        self.log.write(LogStream::Stderr, bytes);
        if let Some(a) = self.attach.as_deref_mut() {
            a.stderr(bytes);
        }
    }
}

/// A container's network plumbing while its VM may use it, undone on drop on every
/// path: the DNS responder stops, passt is killed, the TAP is removed.
#[derive(Default)]
struct Plugged {
    dns: Option<resolver::Responder>,
    passt: Option<passt::Passt>,
    tap: Option<Attachment>,
}

impl Drop for Plugged {
    fn drop(&mut self) {
        self.dns.take();
        self.passt.take();
        if let Some(att) = self.tap.take() {
            let removed = Networks::open().and_then(|n| n.unplug(&att));
            if let Err(e) = removed {
                tracing::warn!("removing {}: {e}", att.tap);
            }
        }
    }
}

/// The backend the container was created for (or the best this host has).
fn selection_for(spec: &ContainerSpec) -> Result<crate::Selection> {
    let requested = spec
        .boot
        .hypervisor
        .as_deref()
        .map(str::parse::<HypervisorKind>)
        .transpose()
        .map_err(Error::Invalid)?;
    hypervisor::select(requested)
}

/// Plugs the container into its network: the TAP (or passt) for the VM, the network's
/// DNS responder, and the agent's settings. Without a network the agent gets no
/// network settings (it brings lo up by itself), so agents that predate networking
/// still accept the message.
fn plug_network(
    spec: &ContainerSpec,
) -> Result<(Plugged, Vec<NetDevice>, Option<Box<GuestNetwork>>)> {
    let name = match &spec.network {
        NetworkMode::None => return Ok((Plugged::default(), Vec::new(), None)),
        NetworkMode::Passt => return plug_passt(spec),
        NetworkMode::Network(name) => name,
    };
    let networks = Networks::open()?;
    let att = networks.attachment(&spec.id)?.ok_or_else(|| {
        Error::Config(format!(
            "container {} has no address on network {name} (was the network removed?)",
            &spec.id[..12]
        ))
    })?;
    networks.plug(&att)?;
    let mut plugged = Plugged {
        dns: None,
        passt: None,
        tap: Some(att.clone()),
    };
    // User networks resolve names live through their responder; should it not start
    // (port 53 on the gateway taken by a non-skiff process), /etc/hosts still names
    // the peers of the moment.
    if !att.network.is_default() {
        match resolver::start(&networks, &att.network) {
            Ok(r) => plugged.dns = Some(r),
            Err(e) => tracing::warn!("no DNS responder on {}: {e}", att.network.name),
        }
    }
    let guest = networks.guest_config(&att, &spec.hostname, plugged.dns.is_some())?;
    let dev = NetDevice {
        backend: NetBackend::Tap(att.tap.clone()),
        mac: att.lease.mac.clone(),
    };
    Ok((plugged, vec![dev], Some(Box::new(guest))))
}

/// `--network passt`: one passt process for this VM, with the container's ports.
fn plug_passt(
    spec: &ContainerSpec,
) -> Result<(Plugged, Vec<NetDevice>, Option<Box<GuestNetwork>>)> {
    let p = passt::start(&spec.passt_ports)?;
    let dev = NetDevice {
        backend: NetBackend::Stream(p.socket()),
        mac: passt::guest_mac(),
    };
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let guest = passt::guest_config(&[&spec.hostname, &spec.name], &host_resolv);
    let plugged = Plugged {
        dns: None,
        passt: Some(p),
        tap: None,
    };
    Ok((plugged, vec![dev], Some(Box::new(guest))))
}

/// The container's VM with its layer disks and writable disk (created if missing),
/// sized as the spec says, dying with this process: what every boot of the container
/// shares (shares and network are added by the supervisor).
pub(crate) fn disks_vm_config(containers: &Containers, spec: &ContainerSpec) -> Result<VmConfig> {
    let artifacts =
        GuestArtifacts::locate(spec.boot.kernel.as_deref(), spec.boot.initramfs.as_deref())?;
    let selection = selection_for(spec)?;
    let rw = containers.writable_disk(&spec.id);
    if !rw.exists() {
        writable::create(&rw, spec.writable_bytes)?;
    }
    let mut disks = Disk::layers(&spec.layers);
    disks.push(Disk::writable(rw));
    let size = VmSize {
        memory_mib: spec.memory_mib,
        vcpus: spec.vcpus,
    };
    Ok(VmConfig::sized(artifacts, selection, size, disks)
        .with_boot_timeout(BOOT_TIMEOUT)
        .with_scratch_parent(Some(containers.run_dir().to_path_buf())))
}

impl Supervisor {
    /// Claims the container (it must not be running), boots its VM and starts its main
    /// process. On error the container is recorded as exited with the reason.
    pub fn start(containers: &Containers, id: &str) -> Result<Self> {
        let spec = {
            let lock = containers.lock(id)?;
            let spec = lock.spec()?;
            let mut st = lock.refreshed_state()?;
            if st.status == Status::Running || (st.status == Status::Created && st.pid.is_some()) {
                return Err(Error::Config(format!(
                    "container {} is already running",
                    &spec.id[..12]
                )));
            }
            let me = std::process::id();
            st = super::ContainerState {
                status: Status::Created,
                pid: Some(me),
                pid_start: process_start_ticks(me),
                ..Default::default()
            };
            lock.save(&st)?;
            spec
        };
        match Self::boot(containers, spec) {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = record_exit(containers, id, 125, Some(format!("start failed: {e}")));
                Err(e)
            }
        }
    }

    /// The container's VM with its disks, shares and network (plugged in now).
    fn vm_config(
        containers: &Containers,
        spec: &ContainerSpec,
    ) -> Result<(VmConfig, Plugged, Option<Box<GuestNetwork>>)> {
        let mut config = disks_vm_config(containers, spec)?;
        config.shares = spec
            .binds
            .iter()
            .enumerate()
            .map(|(i, b)| Share {
                host_path: b.host.clone(),
                tag: format!("skiffv{i}"),
                readonly: b.readonly,
            })
            .collect();
        let (tap, nets, guest_network) = plug_network(spec)?;
        if tap.passt.is_some() {
            // passt learns the guest's MAC from its first frame and cannot deliver a
            // connection to a published port before; the guest announces itself
            // (gratuitous ARP) when the agent brings eth0 up.
            config.cmdline_extra = passt::GUEST_CMDLINE.into();
        }
        config.nets = nets;
        Ok((config, tap, guest_network))
    }

    /// Starts the container's VM from its snapshot and gives it its own identity; its
    /// one agent line is shared through a multiplexer.
    fn restore_vm(
        spec: &ContainerSpec,
        dir: &std::path::Path,
        scratch_parent: PathBuf,
        container: &ContainerConfig,
    ) -> Result<(Session, AgentMux)> {
        if !spec.binds.is_empty() || spec.network != NetworkMode::None {
            return Err(Error::Config(
                "a container started from a snapshot has no shares and no network".into(),
            ));
        }
        let snapshot = crate::Snapshot::open(dir)?;
        snapshot.check_fits(&spec.layers, spec.memory_mib, spec.vcpus)?;
        let selection = selection_for(spec)?;
        let (vm, line) = snapshot.restore_vm(&selection, Some(scratch_parent), BOOT_TIMEOUT)?;
        let (mux, mut agent) = AgentMux::start(line, &vm.work_dir().join("agent-mux.sock"))?;
        agent.reseed()?;
        Ok((Session::create(vm, agent, container)?, mux))
    }

    fn boot(containers: &Containers, spec: ContainerSpec) -> Result<Self> {
        let id = spec.id.clone();
        let log = LogWriter::open(&containers.log_path(&id))?;
        let (mut session, tap, mux) = match &spec.boot.snapshot {
            Some(dir) => {
                // A restored VM's writable layer is a tmpfs (see `Snapshot`).
                let container = container_config(&spec, None, None);
                let run_dir = containers.run_dir().to_path_buf();
                let (session, mux) = Self::restore_vm(&spec, dir, run_dir, &container)?;
                (session, Plugged::default(), Some(mux))
            }
            None => {
                let (config, tap, network) = Self::vm_config(containers, &spec)?;
                let writable = Some(Disk::WRITABLE_SERIAL.to_owned());
                let session = Session::boot(&config, &container_config(&spec, writable, network))?;
                (session, tap, None)
            }
        };
        let control_path = session.control_socket();
        let listener = UnixListener::bind(&control_path)
            .map_err(Error::io(format!("listen on {}", control_path.display())))?;
        run_hooks(containers, &spec, "createRuntime", "creating", true)?;
        if let Some(hooks) = &spec.hooks {
            for (stage, list, status) in [
                ("createContainer", hooks.create_container(), "creating"),
                ("startContainer", hooks.start_container(), "created"),
            ] {
                if let Some(list) = list.as_deref().filter(|l| !l.is_empty()) {
                    let state = hook_state(containers, &spec, status);
                    crate::oci::guest_hooks::run_all(session.agent(), stage, list, &state)?;
                }
            }
        }
        let (guest_pid, failed) = session.start(&spec.process)?;
        let sender = session.sender();
        control::serve(listener, move |req| match req {
            ControlRequest::Signal(sig) => sender.signal(MAIN_STREAM, sig),
            ControlRequest::Stop { signal, grace_ms } => {
                sender.stop(signal, Duration::from_millis(grace_ms))
            }
            ControlRequest::Start | ControlRequest::CreateHooks => {
                Err(Error::Agent("the container is already started".into()))
            }
        });
        {
            let vm = session.vm();
            let lock = containers.lock(&id)?;
            let mut st = lock.state()?;
            st.status = Status::Running;
            st.vm_pid = Some(vm.pid());
            st.guest_pid = guest_pid;
            st.started_ms = Some(now_ms());
            st.vsock_uds = Some(match &mux {
                Some(m) => m.socket().to_path_buf(),
                None => vm.vsock_uds().to_path_buf(),
            });
            st.control_socket = Some(control_path);
            st.boot_ms = u64::try_from(vm.timings.launch_to_ready.as_millis()).ok();
            lock.save(&st)?;
            tracing::debug!(id, timings = ?vm.timings, "container running");
        }
        if failed.is_none() {
            let _ = run_hooks(containers, &spec, "poststart", "running", false);
        }
        Ok(Self {
            containers: containers.clone(),
            spec,
            session,
            failed,
            log,
            _mux: mux,
            _tap: tap,
        })
    }

    pub fn spec(&self) -> &ContainerSpec {
        &self.spec
    }

    /// For stdin, signals and window sizes of the main process.
    pub fn sender(&self) -> AgentSender {
        self.session.sender()
    }

    /// `Some(status)` if the main process could not be executed at all.
    pub fn start_failure(&self) -> Option<ExitStatus> {
        self.failed
    }

    pub fn boot_timings(&self) -> crate::BootTimings {
        self.session.vm().timings
    }

    /// Relays output until the VM powers off; records and returns the exit code.
    pub fn wait(mut self, attach: Option<&mut dyn Output>) -> Result<i32> {
        let relayed = self.session.relay(&mut LogAndAttach {
            log: &mut self.log,
            attach,
        });
        if relayed.status.is_some() {
            super::trace::mark("exited");
        }
        self.log.flush();
        let exit = self
            .session
            .finish(relayed.status.or(self.failed), relayed.error);
        record_exit(&self.containers, &self.spec.id, exit.code, exit.error)?;
        let _ = run_hooks(&self.containers, &self.spec, "poststop", "stopped", false);
        Ok(exit.code)
    }
}

/// What the agent is asked to create: the image's layers (and writable disk) with the
/// container's shares and network.
fn container_config(
    spec: &ContainerSpec,
    writable: Option<String>,
    network: Option<Box<GuestNetwork>>,
) -> ContainerConfig {
    ContainerConfig {
        id: spec.id.clone(),
        hostname: spec.hostname.clone(),
        layers: Disk::layer_serials(spec.layers.len()),
        writable,
        readonly_rootfs: spec.readonly_rootfs,
        shares: spec
            .binds
            .iter()
            .enumerate()
            .map(|(i, b)| SharedDir {
                tag: format!("skiffv{i}"),
                target: b.target.clone(),
                readonly: b.readonly,
            })
            .collect(),
        root_share: None,
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
        network,
        mounts: None,
    }
}

/// The OCI state a hook reads on stdin: the supervisor stands for the container's
/// process, the container's record directory for its bundle, its labels for annotations.
fn hook_state(containers: &Containers, spec: &ContainerSpec, status: &str) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": spec.id,
        "status": status,
        "pid": std::process::id(),
        "bundle": containers.dir_of(&spec.id),
        "annotations": spec.labels,
    })
}

/// Runs the host-side OCI hooks of one stage (plugins add them, see `ContainerSpec::hooks`)
/// with the container's state on stdin; the in-guest stages run through the agent in
/// `boot`. A failing createRuntime hook fails the start;
/// poststart and poststop failures are only logged, as the runtime spec says.
fn run_hooks(
    containers: &Containers,
    spec: &ContainerSpec,
    stage: &str,
    status: &str,
    fatal: bool,
) -> Result<()> {
    let Some(hooks) = &spec.hooks else {
        return Ok(());
    };
    let list = match stage {
        "createRuntime" => hooks.create_runtime(),
        "poststart" => hooks.poststart(),
        _ => hooks.poststop(),
    };
    let Some(list) = list.as_deref().filter(|l| !l.is_empty()) else {
        return Ok(());
    };
    let state = hook_state(containers, spec, status);
    match crate::oci::hooks::run_all(stage, list, &state) {
        Err(e) if !fatal => {
            tracing::warn!("container {}: {e}", &spec.id[..12.min(spec.id.len())]);
            Ok(())
        }
        other => other,
    }
}

fn record_exit(containers: &Containers, id: &str, code: i32, error: Option<String>) -> Result<()> {
    let lock = containers.lock(id)?;
    let mut st = lock.state()?;
    st.status = Status::Exited;
    st.exit_code = Some(code);
    st.error = error;
    st.finished_ms = Some(now_ms());
    st.vsock_uds = None;
    st.control_socket = None;
    st.guest_pid = None;
    lock.save(&st)
}
