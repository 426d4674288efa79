//! The container's host process (`_supervise`), spawned by `create`: boots the VM,
//! creates the container from the bundle, tells `create` it is ready, waits for
//! `start` on its control socket, then relays stdio and signals until the VM powers off
//! and exits with the container's status (128+signal when it was killed).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use skiff_proto::{ContainerConfig, GuestInterface, GuestNetwork};
use skiff_runtime::container::process_start_ticks;
use skiff_runtime::oci::cgroup::{self, CpuCgroup, CpuMax};
use skiff_runtime::oci::{netns, vmctl, Bundle, Store};
use skiff_runtime::{
    hypervisor, GuestArtifacts, MicroVm, NetBackend, NetDevice, Share, StartOutcome, VmConfig,
};

use crate::{console, relay};
use skiff_runtime::oci::guest_hooks;

fn hook_list(
    b: &Bundle,
    pick: impl Fn(&oci_spec::runtime::Hooks) -> Option<Vec<oci_spec::runtime::Hook>>,
) -> Vec<oci_spec::runtime::Hook> {
    b.spec.hooks().as_ref().and_then(pick).unwrap_or_default()
}

/// The container's state for a hook, with the status the spec gives at its point.
fn state_of(store: &Store, id: &str, status: &str) -> serde_json::Value {
    let mut st = store
        .lock(id)
        .and_then(|l| l.load())
        .map(|r| r.oci_state())
        .unwrap_or_else(|_| serde_json::json!({ "id": id }));
    st["status"] = status.into();
    st
}

/// The env var naming the fd on which the supervisor (or an exec proxy) reports
/// readiness: one line, `ok` or `error: <why>`.
pub const READY_FD_ENV: &str = "SKIFF_RUNTIME_READY_FD";
/// The stream of the main process on the supervisor's agent connection.
pub const MAIN_STREAM: u32 = 1;
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const ROOT_TAG: &str = "skiffroot";

/// The readiness pipe from the environment, taken so later children do not inherit it.
pub struct Ready(Option<std::fs::File>);

impl Ready {
    pub fn from_env() -> Self {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
            .filter(|fd| *fd > 2);
        std::env::remove_var(READY_FD_ENV);
        // `create` handed us the pipe's write end at this fd (fds::inherit_as); it is ours.
        Self(fd.and_then(|fd| skiff_sys::fds::take_inherited(fd).ok().map(Into::into)))
    }

    pub fn ok(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"ok\n");
        }
    }

    pub fn fail(&mut self, why: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = writeln!(f, "error: {}", why.replace('\n', " "));
        }
    }
}

enum Cmd {
    Start(UnixStream),
    /// Run the createContainer hooks (asked by `create` after createRuntime's).
    CreateHooks(UnixStream),
    Signal(i32),
}

pub fn run(store: &Store, id: &str) -> Result<i32> {
    let mut ready = Ready::from_env();
    relay::block_signals();
    match prepare_and_run(store, id, &mut ready) {
        Ok(code) => Ok(code),
        Err(e) => {
            ready.fail(&format!("{e:#}"));
            mark_stopped(store, id, 1);
            Err(e)
        }
    }
}

fn mark_stopped(store: &Store, id: &str, code: i32) {
    if let Ok(lock) = store.lock(id) {
        if let Ok(mut rec) = lock.load() {
            rec.stopped = true;
            rec.exit_code = Some(code);
            rec.control = None;
            rec.vsock_uds = None;
            let _ = lock.save(&rec);
        }
    }
}

/// Puts this process (and so the VM it starts) in the container's cgroup with the
/// spec's CPU bandwidth. Where that cannot be done the container still runs, without
/// a CPU limit, and says so in the debug log.
fn join_cgroup(bundle: &Bundle, id: &str) -> Option<CpuCgroup> {
    let linux = bundle.spec.linux().as_ref();
    let joined = (|| -> Result<Option<CpuCgroup>> {
        let rel = cgroup::relative_path(linux.and_then(|l| l.cgroups_path().as_deref()), id)?;
        let Some(cg) = CpuCgroup::create(&rel)? else {
            return Ok(None);
        };
        let cpu = linux
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.cpu().as_ref());
        let max = CpuMax::from_oci(
            cpu.and_then(|c| c.quota()),
            cpu.and_then(|c| c.period()),
            CpuMax::default(),
        )?;
        cg.set_cpu_max(max)?;
        cg.join(std::process::id())?;
        Ok(Some(cg))
    })();
    joined.unwrap_or_else(|e| {
        tracing::warn!("no CPU cgroup for the microVM: {e:#}");
        None
    })
}

fn prepare_and_run(store: &Store, id: &str, ready: &mut Ready) -> Result<i32> {
    let bundle_dir = store.lock(id)?.load()?.bundle;
    let mut bundle = Bundle::load(&bundle_dir)?;
    crate::admission::reapply(&mut bundle, &store.dir(id))?;
    let mut process = bundle.process.clone();
    // stdio is whatever `create` was given; a terminal is the pty slave on fd 0.
    process.stdin = true;
    if process.terminal {
        console::take_controlling_terminal();
        if process.console_size.is_none() {
            process.console_size = console::window_size();
        }
    }
    let artifacts = GuestArtifacts::locate(None, None)?;
    let selection = hypervisor::select(None)?;
    let cgroup = join_cgroup(&bundle, id);
    if let Some(cg) = &cgroup {
        // Recorded at once, so a create or delete that ends this early removes it.
        let lock = store.lock(id)?;
        let mut rec = lock.load()?;
        rec.cgroup = Some(cg.dir.clone());
        lock.save(&rec)?;
    }
    // The caller's network namespace (CNI): the VM's processes and TAP live in it.
    // Joined before any thread exists, so everything started from here is inside.
    let uplink = match netns::path(&bundle.spec) {
        Some(path) => {
            netns::enter(&path)?;
            netns::plumb()?
        }
        None => None,
    };
    // QEMU boots with the maximum and a balloon holds it down to the limit, so that
    // `update` can move it either way; skiff-vmm has no balloon and boots with the limit.
    let balloon = selection.kind == hypervisor::HypervisorKind::Qemu;
    let mut config = VmConfig::new(artifacts, selection);
    config.memory_mib = if balloon {
        bundle.memory_max_mib
    } else {
        bundle.memory_mib
    };
    config.balloon = balloon;
    config.vcpus = bundle.vcpus;
    config.shares.push(Share {
        host_path: bundle.rootfs.clone(),
        tag: ROOT_TAG.into(),
        readonly: bundle.readonly_rootfs,
    });
    for s in &bundle.mounts.shares {
        config.shares.push(Share {
            host_path: s.host.clone(),
            tag: s.tag.clone(),
            readonly: s.readonly,
        });
    }
    let network = uplink.map(|up| {
        config.nets.push(NetDevice {
            backend: NetBackend::Tap(netns::TAP.into()),
            mac: up.mac.clone(),
        });
        Box::new(GuestNetwork {
            interface: Some(GuestInterface {
                mac: up.mac,
                address: up.address.to_string(),
                prefix_len: up.prefix_len,
                gateway: up.gateway.map(|g| g.to_string()),
                mtu: Some(up.mtu),
            }),
            hosts: String::new(),
            resolv_conf: String::new(),
        })
    });
    config.boot_timeout = BOOT_TIMEOUT;
    config.die_with_parent = true;
    let (mut vm, mut agent) = MicroVm::boot(&config)?;
    // A share daemon dying under the VM would hang the guest: stop it instead.
    let watch = skiff_runtime::container::HelperWatch::start(vm.helpers(), vm.pid());
    agent.create_container(&ContainerConfig {
        id: id.to_owned(),
        hostname: bundle.hostname.clone(),
        layers: Vec::new(),
        writable: None,
        readonly_rootfs: bundle.readonly_rootfs,
        shares: Vec::new(),
        root_share: Some(ROOT_TAG.into()),
        masked_paths: bundle.masked_paths.clone(),
        readonly_paths: bundle.readonly_paths.clone(),
        network,
        mounts: Some(bundle.mounts.entries.clone()),
    })?;
    let control = vm.work_dir().join("ctl.sock");
    let listener =
        UnixListener::bind(&control).with_context(|| format!("listen on {}", control.display()))?;
    {
        let lock = store.lock(id)?;
        let mut rec = lock.load()?;
        let me = std::process::id();
        rec.pid = Some(me);
        rec.pid_start = process_start_ticks(me);
        rec.vsock_uds = Some(vm.vsock_uds().to_path_buf());
        rec.control = Some(control.clone());
        rec.vm_dir = Some(vm.work_dir().to_path_buf());
        let qmp = vm.work_dir().join(hypervisor::QMP_SOCKET);
        rec.qmp = qmp.exists().then_some(qmp);
        let api = vm.work_dir().join(hypervisor::VMM_API_SOCKET);
        rec.vmm_api = api.exists().then_some(api);
        rec.cgroup = cgroup.map(|c| c.dir);
        rec.balloon = balloon && rec.qmp.is_some();
        rec.memory_max_mib = Some(config.memory_mib);
        rec.memory_mib = Some(config.memory_mib);
        if rec.balloon && bundle.memory_mib < config.memory_mib {
            vmctl::set_memory(&rec, bundle.memory_mib)?;
            rec.memory_mib = Some(bundle.memory_mib);
        }
        lock.save(&rec)?;
    }

    let (tx, rx) = mpsc::channel::<Cmd>();
    let started = Arc::new(AtomicBool::new(false));
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut line = String::new();
                let mut r = BufReader::new(&conn);
                if r.read_line(&mut line).is_ok() {
                    let _ = match line.trim() {
                        "start" => tx.send(Cmd::Start(conn)),
                        "create-hooks" => tx.send(Cmd::CreateHooks(conn)),
                        _ => Ok(()),
                    };
                }
            }
        });
    }
    {
        let started = started.clone();
        let sender = agent.sender();
        let terminal = process.terminal;
        relay::spawn_signal_thread(move |sig| {
            if !started.load(Ordering::SeqCst) {
                if sig != libc::SIGWINCH && sig != libc::SIGCONT {
                    let _ = tx.send(Cmd::Signal(sig));
                }
            } else if sig == libc::SIGWINCH {
                if let (true, Some((rows, cols))) = (terminal, console::window_size()) {
                    let _ = sender.resize(MAIN_STREAM, rows, cols);
                }
            } else {
                let _ = sender.signal(MAIN_STREAM, sig);
            }
        });
    }
    ready.ok();
    tracing::debug!(id, "created; waiting for start");

    // Created: wait for `start` or a signal that ends the container before it ran; a
    // VM that dies meanwhile ends the container too, instead of leaving it "created".
    let next = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = vm.wait(Duration::ZERO) {
                    tracing::warn!(status, "the VM exited before the container started");
                    mark_stopped(store, id, 137);
                    return Ok(137);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err(()),
            Ok(Cmd::CreateHooks(mut conn)) => {
                let hooks = hook_list(&bundle, |h| h.create_container().clone());
                let reply = guest_hooks::run_all(
                    &mut agent,
                    "createContainer",
                    &hooks,
                    &state_of(store, id, "creating"),
                )
                .map_or_else(|e| format!("error: {e:#}\n"), |()| "ok\n".to_owned());
                let _ = conn.write_all(reply.as_bytes());
            }
            Ok(cmd) => break Ok(cmd),
        }
    };
    let failed = {
        match next {
            Ok(Cmd::Start(mut conn)) => match guest_hooks::run_all(
                &mut agent,
                "startContainer",
                &hook_list(&bundle, |h| h.start_container().clone()),
                &state_of(store, id, "created"),
            )
            .and_then(|()| agent.start(MAIN_STREAM, true, &process))
            {
                Ok(outcome) => {
                    started.store(true, Ordering::SeqCst);
                    let lock = store.lock(id)?;
                    let mut rec = lock.load()?;
                    rec.started = true;
                    lock.save(&rec)?;
                    drop(lock);
                    let _ = conn.write_all(b"ok\n");
                    match outcome {
                        StartOutcome::Running { .. } => None,
                        StartOutcome::Failed { status } => Some(status),
                    }
                }
                Err(e) => {
                    let _ = writeln!(conn, "error: {e}");
                    vm.kill();
                    mark_stopped(store, id, 1);
                    return Err(anyhow!("start: {e}"));
                }
            },
            // Handled while waiting for start; never breaks the loop.
            Ok(Cmd::CreateHooks(_)) => return Err(anyhow!("unexpected control command")),
            Ok(Cmd::Signal(sig)) => {
                vm.kill();
                mark_stopped(store, id, 128 + sig);
                return Ok(128 + sig);
            }
            Err(()) => return Err(anyhow!("the control socket closed")),
        }
    };
    if failed.is_none() {
        relay::spawn_stdin_pump(agent.sender(), MAIN_STREAM);
    }
    let (status, error) = relay::relay_output(&mut agent, MAIN_STREAM, true);
    watch.stop();
    let error = watch.failure().or(error);
    agent.sender().hang_up();
    if !matches!(vm.wait(Duration::from_secs(10)), Ok(Some(_))) {
        vm.kill();
    }
    let code = match status.or(failed) {
        Some(s) => s.code(),
        None => {
            tracing::warn!(?error, "the VM stopped without reporting the exit status");
            137
        }
    };
    mark_stopped(store, id, code);
    crate::admission::event(&store.dir(id), id, skiff_plugins::EventKind::Exited(code));
    Ok(code)
}
