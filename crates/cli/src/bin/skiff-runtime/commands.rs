//! The lifecycle commands: create, start, state, kill, delete, run, list, ps,
//! features, spec. Each takes the container's lock while it reads or changes the record,
//! and fails with the texts callers match ("does not exist", "not running").

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use skiff_runtime::container::{now_ms, rfc3339_ms};
use skiff_runtime::oci::{hooks, state, Bundle, Record, Status, Store, SPEC_VERSION};

use crate::cli::{Cli, Cmd, CreateArgs, LogFormat, UpdateArgs};
use skiff_plugins::EventKind;
use skiff_runtime::container::{control_request, ControlRequest};
use skiff_runtime::oci::bundle::ANNOTATION_MEMORY_MAX;
use skiff_runtime::oci::cgroup::{CpuCgroup, CpuMax};
use skiff_runtime::oci::vmctl;

use crate::{admission, console, exec, supervise};

pub fn dispatch(cli: &Cli) -> Result<i32> {
    if cli.version {
        println!("skiff-runtime version {}", env!("CARGO_PKG_VERSION"));
        println!("spec: {SPEC_VERSION}");
        return Ok(0);
    }
    let Some(cmd) = &cli.cmd else {
        bail!("a command is needed (see --help)");
    };
    init_tracing(cli, cmd);
    let store = Store::new(&cli.root);
    match cmd {
        Cmd::Create(a) => create(cli, &store, a).map(|_| 0),
        Cmd::Run { create: a, detach } => run(cli, &store, a, *detach),
        Cmd::Start { id } => start(&store, id).map(|()| 0),
        Cmd::State { id } => {
            let rec = store.lock(id)?.load()?;
            println!("{}", serde_json::to_string_pretty(&rec.oci_state())?);
            Ok(0)
        }
        Cmd::Kill { id, signal, .. } => kill(&store, id, signal.as_deref()).map(|()| 0),
        Cmd::Delete { force, id } => delete(&store, id, *force).map(|()| 0),
        Cmd::Exec(a) => exec::exec(&store, helper_args(cli), a),
        Cmd::Ps { format, id, .. } => crate::ps::ps(&store, id, format),
        Cmd::List { format, quiet } => list(&store, format, *quiet),
        Cmd::Pause { id } => pause(&store, id, true).map(|()| 0),
        Cmd::Resume { id } => pause(&store, id, false).map(|()| 0),
        Cmd::Events {
            stats,
            interval,
            id,
        } => events(&store, id, *stats, *interval),
        Cmd::Update(a) => update(&store, &a.id, a).map(|()| 0),
        Cmd::Features => features(),
        Cmd::Spec { bundle } => spec(bundle.as_deref()),
        Cmd::Supervise { id } => supervise::run(&store, id),
        Cmd::ExecProxy { id } => exec::proxy(&store, id),
    }
}

/// Diagnostics: the supervisor and proxies write theirs to a file beside the state (their
/// stderr is the container's); other commands to stderr with --debug.
fn init_tracing(cli: &Cli, cmd: &Cmd) {
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::new(level);
    match cmd {
        Cmd::Supervise { id } | Cmd::ExecProxy { id } => {
            let dir = cli.root.join(id);
            if let Ok(f) = skiff_runtime::owner_only::append(&dir.join("debug.log")) {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(f))
                    .try_init();
            }
        }
        _ if cli.debug => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
        _ => {}
    }
}

/// Global flags the helper processes need to find the same state and log.
pub fn helper_args(cli: &Cli) -> Vec<String> {
    let mut v = vec!["--root".to_owned(), cli.root.to_string_lossy().into_owned()];
    if let Some(l) = &cli.log {
        v.push("--log".into());
        v.push(l.to_string_lossy().into_owned());
    }
    if cli.log_format == LogFormat::Json {
        v.push("--log-format=json".into());
    }
    if cli.debug {
        v.push("--debug".into());
    }
    v
}

/// Starts this binary as a helper in a session of its own, with a readiness pipe on
/// fd 3 and, if given, a terminal as its stdio.
pub fn spawn_helper(
    global: Vec<String>,
    args: &[&str],
    env: &[(&str, &str)],
    tty: Option<&OwnedFd>,
) -> Result<(Child, std::fs::File)> {
    let (r, w) = skiff_sys::fds::pipe().context("pipe")?;
    let exe = std::env::current_exe().context("find skiff-runtime's own path")?;
    let mut cmd = Command::new(exe);
    cmd.args(global).args(args);
    cmd.env(supervise::READY_FD_ENV, "3");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(t) = tty {
        cmd.stdin(Stdio::from(t.try_clone()?))
            .stdout(Stdio::from(t.try_clone()?))
            .stderr(Stdio::from(t.try_clone()?));
    }
    let wfd = w.as_raw_fd();
    // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // A fresh child leads no process group, so setsid cannot fail.
            let _ = skiff_sys::confine::new_session();
            skiff_sys::fds::inherit_as(wfd, 3)
        });
    }
    let child = cmd.spawn().context("start the helper process")?;
    drop(w);
    Ok((child, std::fs::File::from(r)))
}

/// Waits for the helper's `ok` line; its error line becomes ours.
pub fn await_ready(pid: u32, ready: std::fs::File) -> Result<u32> {
    let mut line = String::new();
    BufReader::new(ready.take(64 << 10)).read_line(&mut line)?;
    match line.trim_end() {
        "ok" => Ok(pid),
        "" => bail!("the container's host process exited before it was ready"),
        other => bail!("{}", other.strip_prefix("error: ").unwrap_or(other)),
    }
}

fn hook_list(
    b: &Bundle,
    pick: impl Fn(&oci_spec::runtime::Hooks) -> Option<Vec<oci_spec::runtime::Hook>>,
) -> Vec<oci_spec::runtime::Hook> {
    b.spec.hooks().as_ref().and_then(pick).unwrap_or_default()
}

fn create(cli: &Cli, store: &Store, a: &CreateArgs) -> Result<Child> {
    state::check_id(&a.id)?;
    let mut bundle = Bundle::load(&a.bundle)?;
    let record = Record {
        id: a.id.clone(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: rfc3339_ms(now_ms()),
        annotations: bundle
            .spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..Record::default()
    };
    store.lock(&a.id)?.create(&record)?;
    let made = admission::admit(&mut bundle, &a.id, &store.dir(&a.id))
        .and_then(|()| create_prepared(cli, store, a, &bundle));
    match made {
        Ok(child) => {
            admission::event(&store.dir(&a.id), &a.id, EventKind::Created);
            Ok(child)
        }
        Err(e) => {
            if let Ok(lock) = store.lock(&a.id) {
                if let Ok(rec) = lock.load() {
                    if let Some(pid) = rec.pid {
                        kill_and_wait(pid);
                    }
                    if let Some(dir) = rec.cgroup {
                        CpuCgroup { dir }.remove();
                    }
                }
                let _ = lock.remove();
            }
            Err(e)
        }
    }
}

fn create_prepared(cli: &Cli, store: &Store, a: &CreateArgs, bundle: &Bundle) -> Result<Child> {
    let pty = if bundle.process.terminal {
        let Some(sock) = &a.console_socket else {
            bail!("process.terminal is set but no --console-socket was given");
        };
        let pty = console::open_pty()?;
        console::send_master(sock, &pty.master)?;
        Some(pty)
    } else {
        None
    };
    let (mut child, ready) = spawn_helper(
        helper_args(cli),
        &["_supervise", &a.id],
        &[],
        pty.as_ref().map(|p| &p.slave),
    )?;
    drop(pty);
    let pid = match await_ready(child.id(), ready) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let rec = store.lock(&a.id)?.load()?;
    let mut st = rec.oci_state();
    st["status"] = "creating".into();
    let mut pre = hook_list(bundle, |h| h.prestart().clone());
    pre.extend(hook_list(bundle, |h| h.create_runtime().clone()));
    hooks::run_all("createRuntime", &pre, &st)?;
    if !hook_list(bundle, |h| h.create_container().clone()).is_empty() {
        control(&rec, ControlRequest::CreateHooks)?;
    }
    if let Some(f) = &a.pid_file {
        skiff_runtime::owner_only::write_atomic(f, pid.to_string().as_bytes())?;
    }
    Ok(child)
}

/// Sends `req` to the container's supervisor and waits for its `ok`.
fn control(rec: &Record, req: ControlRequest) -> Result<()> {
    let ctl = rec
        .control
        .as_ref()
        .ok_or_else(|| anyhow!("container {} has no control socket", rec.id))?;
    Ok(control_request(ctl, req)?)
}

fn start(store: &Store, id: &str) -> Result<()> {
    let rec = store.lock(id)?.load()?;
    match rec.status() {
        Status::Created => {}
        Status::Running | Status::Paused => bail!("cannot start an already running container"),
        Status::Stopped => bail!("cannot start a container that has stopped"),
        Status::Creating => bail!("cannot start a container that is still being created"),
    }
    control(&rec, ControlRequest::Start)?;
    admission::event(&store.dir(id), id, EventKind::Started);
    if let Ok(b) = admission::load_admitted(&rec.bundle, &store.dir(id)) {
        let st = store.lock(id)?.load()?.oci_state();
        if let Err(e) = hooks::run_all("poststart", &hook_list(&b, |h| h.poststart().clone()), &st)
        {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}

/// A signal by number or name (`9`, `KILL`, `SIGKILL`); SIGTERM when omitted.
pub fn parse_signal(s: Option<&str>) -> Result<i32> {
    let Some(s) = s else { return Ok(libc::SIGTERM) };
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("invalid signal {s:?}");
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "ALRM" => libc::SIGALRM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PIPE" => libc::SIGPIPE,
        _ => bail!("invalid signal {s:?}"),
    };
    Ok(n)
}

fn kill(store: &Store, id: &str, signal: Option<&str>) -> Result<()> {
    let sig = parse_signal(signal)?;
    let rec = store.lock(id)?.load()?;
    match (rec.status(), rec.pid) {
        (Status::Created | Status::Running | Status::Paused, Some(pid)) => {
            // The supervisor forwards catchable signals to the container; SIGKILL ends
            // it and, with it, the VM.
            skiff_sys::signals::send(pid, sig).with_context(|| format!("signal container {id}"))
        }
        _ => bail!("container not running"),
    }
}

fn kill_and_wait(pid: u32) {
    // A pid that is gone (or refused: 0, beyond pid_t) is not alive to wait for either.
    let _ = skiff_sys::signals::send(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while state::process_alive(pid, None) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    state::check_id(id)?;
    let lock = store.lock(id)?;
    if !lock.exists() {
        if force {
            let _ = lock.remove();
            return Ok(());
        }
        bail!("container {id} does not exist");
    }
    let rec = lock.load()?;
    let status = rec.status();
    match status {
        Status::Running | Status::Paused if !force => {
            bail!("cannot delete container {id} that is not stopped: {status}")
        }
        Status::Created | Status::Running | Status::Paused => {
            if let Some(pid) = rec.pid {
                if state::process_alive(pid, rec.pid_start) {
                    kill_and_wait(pid);
                }
            }
        }
        Status::Creating | Status::Stopped => {}
    }
    if let Ok(b) = admission::load_admitted(&rec.bundle, lock.dir()) {
        let mut st = rec.oci_state();
        st["status"] = "stopped".into();
        if let Err(e) = hooks::run_all("poststop", &hook_list(&b, |h| h.poststop().clone()), &st) {
            tracing::warn!("{e}");
        }
    }
    if let Some(dir) = &rec.cgroup {
        CpuCgroup { dir: dir.clone() }.remove();
    }
    state::Lock::remove_vm_dir(&rec);
    admission::event(lock.dir(), id, EventKind::Removed);
    lock.remove()?;
    Ok(())
}

fn run(cli: &Cli, store: &Store, a: &CreateArgs, detach: bool) -> Result<i32> {
    let mut child = create(cli, store, a)?;
    if let Err(e) = start(store, &a.id) {
        let _ = delete(store, &a.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let status = child.wait()?;
    let _ = delete(store, &a.id, true);
    Ok(status.code().unwrap_or(137))
}

/// pause/resume: the VM's vCPUs stop or continue (QMP `stop`/`cont` on QEMU, the API
/// socket's `pause`/`resume` on skiff-vmm).
fn pause(store: &Store, id: &str, pause: bool) -> Result<()> {
    let lock = store.lock(id)?;
    let mut rec = lock.load()?;
    match (rec.status(), pause) {
        (Status::Running, true) | (Status::Paused, false) => {}
        (_, true) => bail!("container not running"),
        (_, false) => bail!("container not paused"),
    }
    skiff_runtime::oci::vmctl::set_paused(&rec, pause)?;
    rec.paused = pause;
    lock.save(&rec)?;
    Ok(())
}

/// (CPU time in ns, resident bytes) of one process.
fn usage_of(pid: u32) -> (u64, u64) {
    use skiff_sys::procfs;
    let ns_per_tick = 1_000_000_000 / procfs::clock_ticks();
    procfs::stat(pid).map_or((0, 0), |s| {
        (s.cpu_ticks * ns_per_tick, s.rss_pages * procfs::page_size())
    })
}

fn stats_line(id: &str, pid: u32) -> Value {
    let tree = skiff_sys::procfs::tree(pid);
    let (cpu, mem) = tree
        .iter()
        .map(|p| usage_of(*p))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {"usage": {"total": cpu}},
            "memory": {"usage": {"usage": mem}},
            "pids": {"current": tree.len()},
        },
    })
}

fn events(store: &Store, id: &str, once: bool, interval: u64) -> Result<i32> {
    loop {
        let rec = store.lock(id)?.load()?;
        let (Status::Created | Status::Running | Status::Paused, Some(pid)) =
            (rec.status(), rec.pid)
        else {
            if once {
                bail!("container not running");
            }
            return Ok(0);
        };
        println!("{}", stats_line(id, pid));
        if once {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(interval.max(1)));
    }
}

/// `update`: the CPU bandwidth of the microVM's host cgroup and, through the balloon,
/// the memory its guest may use (up to what it booted with). Everything is checked
/// before anything changes, so a refused update leaves the container as it was.
fn update(store: &Store, id: &str, a: &UpdateArgs) -> Result<()> {
    let lock = store.lock(id)?;
    let mut rec = lock.load()?;
    if !matches!(
        rec.status(),
        Status::Created | Status::Running | Status::Paused
    ) {
        bail!("container not running");
    }
    let mut wanted = match &a.resources {
        Some(path) => {
            let mut bytes = Vec::new();
            if path == std::path::Path::new("-") {
                std::io::stdin().take(1 << 20).read_to_end(&mut bytes)?;
            } else {
                bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            }
            serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&bytes)
                .context("invalid resources JSON")?
        }
        None => oci_spec::runtime::LinuxResources::default(),
    };
    let mut cpu = wanted.cpu().clone().unwrap_or_default();
    if let Some(q) = a.cpu_quota {
        cpu.set_quota(Some(q));
    }
    if let Some(p) = a.cpu_period {
        cpu.set_period(Some(p));
    }
    wanted.set_cpu(Some(cpu));
    let mut memory_limit = wanted.memory().as_ref().and_then(|m| m.limit());
    if let Some(m) = &a.memory {
        memory_limit = Some(parse_bytes(m)?);
    }

    // Plan (and refuse) before changing anything.
    let cpu = wanted.cpu().as_ref();
    // Zero means unchanged, as in runc (Docker sends zeros for what it does not update).
    let (quota, period) = (
        cpu.and_then(|c| c.quota()).filter(|q| *q != 0),
        cpu.and_then(|c| c.period()).filter(|p| *p != 0),
    );
    let cpu_plan = if quota.is_some() || period.is_some() {
        let dir = rec
            .cgroup
            .clone()
            .ok_or_else(|| anyhow!("cannot set the CPU quota: container {id} has no cgroup"))?;
        let cg = CpuCgroup { dir };
        let old = cg.cpu_max()?;
        let new = CpuMax::from_oci(quota, period, old)?;
        Some((cg, old, new))
    } else {
        None
    };
    let memory_plan = match memory_limit {
        None | Some(0) => None,
        Some(limit) => {
            let max = rec.memory_max_mib.filter(|_| rec.balloon).ok_or_else(|| {
                anyhow!(
                    "cannot change the memory of container {id}: its microVM has no balloon device"
                )
            })?;
            let mib = if limit < 0 {
                max
            } else {
                u32::try_from(limit.unsigned_abs() >> 20).unwrap_or(u32::MAX)
            };
            if mib > max {
                bail!("cannot set memory limit to {limit} bytes: the microVM booted with {max} MiB and cannot grow beyond it (boot it larger, e.g. with the {ANNOTATION_MEMORY_MAX} annotation)");
            }
            let min = skiff_runtime::oci::bundle::min_memory_mib();
            if mib < min {
                bail!(
                    "cannot set memory limit to {limit} bytes: a microVM needs at least {min} MiB"
                );
            }
            Some(mib)
        }
    };

    if let Some((cg, _, new)) = &cpu_plan {
        cg.set_cpu_max(*new)?;
    }
    if let Some(mib) = memory_plan {
        if let Err(e) = vmctl::set_memory(&rec, mib) {
            if let Some((cg, old, _)) = &cpu_plan {
                let _ = cg.set_cpu_max(*old);
            }
            return Err(e.into());
        }
        rec.memory_mib = Some(mib);
        lock.save(&rec)?;
    }
    Ok(())
}

/// A size in bytes: a number with an optional k, m, g suffix (binary units, as runc).
fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 10),
        Some((i, 'm')) => (&t[..i], 20),
        Some((i, 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    num.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| anyhow!("invalid memory size {s:?}"))
}

fn list(store: &Store, format: &str, quiet: bool) -> Result<i32> {
    let mut states = Vec::new();
    for id in store.list()? {
        if let Ok(rec) = store.lock(&id)?.load() {
            states.push(rec.oci_state());
        }
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" if quiet => {
            for s in &states {
                println!("{}", s["id"].as_str().unwrap_or_default());
            }
        }
        "table" => {
            println!(
                "{:<24} {:<8} {:<10} {:<40} {:<30} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &states {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {:<30} root",
                    s["id"].as_str().unwrap_or_default(),
                    s["pid"],
                    s["status"].as_str().unwrap_or_default(),
                    s["bundle"].as_str().unwrap_or_default(),
                    s["created"].as_str().unwrap_or_default()
                );
            }
        }
        f => bail!("invalid format {f:?}"),
    }
    Ok(0)
}

fn features() -> Result<i32> {
    let f = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "bind", "rbind", "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
            "sync", "async", "dirsync", "mand", "nomand", "atime", "noatime", "diratime",
            "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime",
        ],
        "linux": {
            "namespaces": ["mount", "network", "pid", "ipc", "uts"],
            // The microVM's VMM joins a cgroup of the cpu controller on either
            // hierarchy (see skiff_runtime::oci::cgroup); systemd's slice form of
            // cgroupsPath falls back to skiff-runtime/<id> rather than asking systemd.
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
        },
        "annotations": {
            "io.skiff.runtime.microvm": "true",
        },
    });
    println!("{}", serde_json::to_string_pretty(&f)?);
    Ok(0)
}

fn spec(bundle: Option<&std::path::Path>) -> Result<i32> {
    let dir = bundle.unwrap_or(std::path::Path::new("."));
    let path = dir.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let mut s = oci_spec::runtime::Spec::default();
    if let Some(p) = s.process_mut() {
        p.set_args(Some(vec!["sh".into()]));
        p.set_terminal(Some(true));
    }
    s.set_hostname(Some("skiff".into()));
    let json = serde_json::to_string_pretty(&s)?;
    std::fs::write(&path, json).with_context(|| format!("write {}", path.display()))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_number_and_name() {
        assert_eq!(parse_signal(None).unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal(Some("9")).unwrap(), 9);
        assert_eq!(parse_signal(Some("KILL")).unwrap(), 9);
        assert_eq!(parse_signal(Some("sigterm")).unwrap(), 15);
        assert!(parse_signal(Some("0")).is_err());
        assert!(parse_signal(Some("NOPE")).is_err());
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("256m").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64kb").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        for bad in ["", "m", "-5", "12x", "99999999999g"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
