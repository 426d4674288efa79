//! The container's host process (`_supervise`), spawned by `create`: boots the VM,
//! creates the container from the bundle, tells `create` it is ready, waits for
//! `start` on its control socket, then relays stdio and signals until the VM powers off
//! and exits with the container's status (128+signal when it was killed).

use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use skiff_proto::{ContainerConfig, GuestInterface, GuestNetwork};
use skiff_runtime::container::{
    process_start_ticks, serve_control, ControlRequest, Session, MAIN_STREAM,
};
use skiff_runtime::oci::cgroup::{self, CpuCgroup, CpuMax};
use skiff_runtime::oci::{netns, vmctl, Bundle, Store};
use skiff_runtime::vm::hypervisor;
use skiff_runtime::vm::relay::Stdio;
use skiff_runtime::{GuestArtifacts, NetBackend, NetDevice, Share, VmConfig, VmSize};

use crate::commands::hook_list;
use crate::{console, relay};
use skiff_runtime::oci::guest_hooks;

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

/// What the main thread waits for while the container is created but not started.
enum Cmd {
    /// A control request (start, the createContainer hooks, a stop) and where its
    /// answer goes.
    Control(
        ControlRequest,
        mpsc::Sender<Result<(), skiff_runtime::Error>>,
    ),
    /// A signal for a container whose process has not started: it ends the container.
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
    let size = VmSize {
        memory_mib: if balloon {
            bundle.memory_max_mib
        } else {
            bundle.memory_mib
        },
        vcpus: bundle.vcpus,
    };
    let mut config =
        VmConfig::sized(artifacts, selection, size, Vec::new()).with_boot_timeout(BOOT_TIMEOUT);
    config.balloon = balloon;
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
    let mut session = Session::boot(
        &config,
        &ContainerConfig {
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
        },
    )?;
    let control = session.control_socket();
    let listener =
        UnixListener::bind(&control).with_context(|| format!("listen on {}", control.display()))?;
    {
        let vm = session.vm();
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

    // Until the process starts, control requests and signals are the main thread's
    // (it waits for them); afterwards the control thread and the signal thread pass
    // them to the agent.
    let (tx, rx) = mpsc::channel::<Cmd>();
    let started = Arc::new(AtomicBool::new(false));
    {
        let tx = tx.clone();
        let started = started.clone();
        let sender = session.sender();
        serve_control(listener, move |req| match req {
            ControlRequest::Signal(sig) if started.load(Ordering::SeqCst) => {
                sender.signal(MAIN_STREAM, sig)
            }
            ControlRequest::Stop { signal, grace_ms } if started.load(Ordering::SeqCst) => {
                sender.stop(signal, Duration::from_millis(grace_ms))
            }
            ControlRequest::Start | ControlRequest::CreateHooks
                if started.load(Ordering::SeqCst) =>
            {
                Err(skiff_runtime::Error::Agent(
                    "the container is already started".into(),
                ))
            }
            req => {
                let (reply, answer) = mpsc::channel();
                tx.send(Cmd::Control(req, reply)).map_err(|_| gone())?;
                answer.recv().map_err(|_| gone())?
            }
        });
    }
    {
        let started = started.clone();
        let sender = session.sender();
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
    let (failed, reply) = loop {
        let cmd = match rx.recv_timeout(Duration::from_millis(500)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = session.vm_exited() {
                    tracing::warn!(status, "the VM exited before the container started");
                    mark_stopped(store, id, 137);
                    return Ok(137);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(anyhow!("the control socket closed"))
            }
            Ok(cmd) => cmd,
        };
        let (req, reply) = match cmd {
            Cmd::Signal(sig) => {
                session.kill();
                mark_stopped(store, id, 128 + sig);
                return Ok(128 + sig);
            }
            Cmd::Control(req, reply) => (req, reply),
        };
        match req {
            ControlRequest::CreateHooks => {
                let hooks = hook_list(&bundle, |h| h.create_container().clone());
                let state = state_of(store, id, "creating");
                let ran = guest_hooks::run_all(session.agent(), "createContainer", &hooks, &state);
                let _ = reply.send(ran);
            }
            ControlRequest::Signal(signal) | ControlRequest::Stop { signal, .. } => {
                // Before the process runs there is nothing to stop gracefully.
                let _ = reply.send(Ok(()));
                session.kill();
                mark_stopped(store, id, 128 + signal);
                return Ok(128 + signal);
            }
            ControlRequest::Start => {
                let hooks = hook_list(&bundle, |h| h.start_container().clone());
                let state = state_of(store, id, "created");
                let outcome =
                    guest_hooks::run_all(session.agent(), "startContainer", &hooks, &state)
                        .and_then(|()| session.start(&process));
                match outcome {
                    Ok((_, failed)) => break (failed, reply),
                    Err(e) => {
                        let _ = reply.send(Err(skiff_runtime::Error::Agent(e.to_string())));
                        session.kill();
                        mark_stopped(store, id, 1);
                        return Err(anyhow!("start: {e}"));
                    }
                }
            }
        }
    };
    started.store(true, Ordering::SeqCst);
    {
        let lock = store.lock(id)?;
        let mut rec = lock.load()?;
        rec.started = true;
        lock.save(&rec)?;
    }
    let _ = reply.send(Ok(()));
    if failed.is_none() {
        relay::spawn_stdin_pump(session.sender(), MAIN_STREAM);
    }
    let relayed = session.relay(&mut Stdio::new(Some(session.sender()), MAIN_STREAM));
    let exit = session.finish(relayed.status.or(failed), relayed.error);
    if let Some(why) = &exit.error {
        tracing::warn!("{why}");
    }
    mark_stopped(store, id, exit.code);
    crate::admission::event(
        &store.dir(id),
        id,
        skiff_plugins::EventKind::Exited(exit.code),
    );
    Ok(exit.code)
}

fn gone() -> skiff_runtime::Error {
    skiff_runtime::Error::Agent("the supervisor is ending".into())
}
