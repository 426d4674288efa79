//! The one container of this VM: its mounts, its mount namespace and its main process,
//! and the stop sequence (signal, grace period, kill, sync, unmount, power off).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use skiff_proto::ContainerConfig;

use crate::process::MainSetup;
use crate::rootfs::{self, Mounted};

#[derive(Default)]
struct State {
    mounted: Option<Mounted>,
    namespace: Option<Arc<OwnedFd>>,
    /// What the container's process sets up as PID 1 of its namespace (taken by it).
    main_setup: Option<Arc<MainSetup>>,
    /// The container's PID namespace once its process runs, for execs to join.
    pid_ns: Option<Arc<OwnedFd>>,
    /// OCI containers (skiff-runtime) get a PID namespace; skiff's own share the VM's.
    own_pid_ns: bool,
    /// Set once a main process has been asked for; `main_pid` once it runs.
    main_claimed: bool,
    main_pid: Option<i32>,
    main_exited: bool,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = state();
    f(guard.get_or_insert_with(State::default))
}

pub fn create(config: &ContainerConfig) -> io::Result<()> {
    if with(|s| s.namespace.is_some()) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the container is already created",
        ));
    }
    if !config.hostname.is_empty() {
        // SAFETY: pointer and length describe the hostname's bytes.
        let ret =
            unsafe { libc::sethostname(config.hostname.as_ptr().cast(), config.hostname.len()) };
        crate::sys::check(ret)
            .map_err(|e| io::Error::new(e.kind(), format!("set hostname: {e}")))?;
    }
    let etc_files = match &config.network {
        Some(n) => crate::net::configure(n)
            .map_err(|e| io::Error::new(e.kind(), format!("network: {e}")))?,
        None => {
            if let Err(e) = crate::net::loopback_up() {
                crate::log!("bring lo up: {e}");
            }
            Vec::new()
        }
    };
    let mounted = rootfs::assemble(config)?;
    let (ns, procs) = rootfs::enter_namespace(&mounted.rootfs, config, etc_files)?;
    let setup = MainSetup {
        new_pid_ns: config.mounts.is_some(),
        masked: crate::mounts::under_procs(&config.masked_paths, &procs),
        readonly: crate::mounts::under_procs(&config.readonly_paths, &procs),
        procs,
    };
    with(|s| {
        s.mounted = Some(mounted);
        s.namespace = Some(Arc::new(ns));
        s.own_pid_ns = setup.new_pid_ns;
        s.main_setup = Some(Arc::new(setup));
    });
    Ok(())
}

/// The container's process: PID 1 of a new PID namespace, with this setup.
pub fn main_setup() -> Arc<MainSetup> {
    with(|s| s.main_setup.clone()).unwrap_or_default()
}

/// The container's PID namespace while its process runs.
pub fn pid_namespace() -> io::Result<Arc<OwnedFd>> {
    with(|s| s.pid_ns.clone()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "the container's process is not running",
        )
    })
}

/// Where an exec runs: the container's PID namespace while its process runs, one of
/// its own before it was started (as hooks that run before the container's process
/// do), an error once it ended; the VM's for skiff's own containers.
pub fn exec_pid_namespace() -> io::Result<ExecNs> {
    with(|s| match (&s.pid_ns, s.main_claimed, s.own_pid_ns) {
        (_, _, false) => Ok(ExecNs::Vm),
        (Some(ns), _, true) => Ok(ExecNs::Join(ns.clone())),
        (None, false, true) => Ok(ExecNs::Fresh),
        (None, true, true) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the container's process is not running",
        )),
    })
}

pub enum ExecNs {
    Vm,
    Join(Arc<OwnedFd>),
    Fresh,
}

/// The container's root filesystem as the agent sees it (for reading /etc/passwd).
pub fn rootfs() -> Option<std::path::PathBuf> {
    with(|s| s.mounted.as_ref().map(|m| m.rootfs.clone()))
}

/// The container's mount namespace, for `setns` in new processes.
pub fn namespace() -> io::Result<Arc<OwnedFd>> {
    with(|s| s.namespace.clone()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "the container has not been created",
        )
    })
}

/// Reserves the main-process slot; there is exactly one per container.
pub fn claim_main() -> io::Result<()> {
    with(|s| {
        if s.main_claimed {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the container's process was already started",
            ))
        } else {
            s.main_claimed = true;
            Ok(())
        }
    })
}

pub fn set_main_pid(pid: i32, pid_ns: Option<OwnedFd>) {
    with(|s| {
        s.main_pid = Some(pid);
        s.pid_ns = pid_ns.map(Arc::new);
    });
}

/// The main process is gone: nothing else may outlive it.
pub fn main_exited() {
    with(|s| {
        s.main_exited = true;
        s.main_pid = None;
        s.pid_ns = None;
    });
    kill_all();
}

fn kill_all() {
    // SAFETY: kill(-1) from PID 1 signals every process except PID 1 itself.
    unsafe { libc::kill(-1, libc::SIGKILL) };
}

/// `stop`: `signal` to the main process, SIGKILL to all after `grace`. The main
/// process's waiter then runs the shutdown. Without a running main process the VM shuts
/// down directly.
pub fn stop(signal: i32, grace: Duration) {
    let main = with(|s| s.main_pid);
    let Some(pid) = main else {
        std::thread::spawn(|| {
            unmount_all();
            power_off();
        });
        return;
    };
    // SAFETY: plain kill(2); an invalid signal is reported as EINVAL and handled below.
    if unsafe { libc::kill(pid, signal) } != 0 {
        crate::log!(
            "stop: signal {signal} to {pid}: {}",
            io::Error::last_os_error()
        );
    }
    std::thread::spawn(move || {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if with(|s| s.main_exited) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_all();
    });
}

/// Syncs and unmounts everything the container used (after its processes are gone).
pub fn unmount_all() {
    let mounted = with(|s| {
        s.namespace = None;
        s.mounted.take()
    });
    if let Some(mut m) = mounted {
        m.unmount();
    } else {
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
    }
}

/// Ends the VM. With `reboot=t`/`reboot=k` and a VMM that exits on reset, this is how
/// a skiff microVM powers off.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions; we are PID 1.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    // reboot only returns on error (e.g. not PID 1 in a test); nothing sane remains.
    std::process::exit(1)
}

/// Waits until every user process except PID 1 has exited and been reaped, so the
/// container's mount namespace is gone before its filesystems are unmounted.
pub fn wait_for_no_processes(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !any_user_process() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    crate::log!("processes still present after {timeout:?}; unmounting anyway");
}

fn any_user_process() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        if pid == 1 {
            return false;
        }
        // Kernel threads are children of kthreadd (pid 2) or kthreadd itself.
        std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().nth(1)?.parse::<u32>().ok()
            })
            .is_some_and(|ppid| ppid != 2 && pid != 2)
    })
}

/// The overlay upper directory of the container's writable layer, once assembled.
pub fn upper_dir() -> io::Result<std::path::PathBuf> {
    let upper = std::path::Path::new(crate::rootfs::WRITABLE_DIR).join("upper");
    if rootfs().is_none() || !upper.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the container has no writable layer (not created, or its root is a shared directory)",
        ));
    }
    Ok(upper)
}
