//! runc's commands, one file per verb (`exec`, `ps` and the supervisor have modules of
//! their own beside this one): create, start, state, kill, delete, run, pause/resume,
//! events, update, list, features, spec. Each takes the container's lock while it reads or changes the record,
//! and fails with the texts callers match ("does not exist", "not running").

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use skiff_runtime::container::{now_ms, rfc3339_ms};
use skiff_runtime::oci::state as records;
use skiff_runtime::oci::{hooks, Bundle, Record, Status, Store, SPEC_VERSION};

use crate::cli::{Cli, Cmd, CreateArgs, LogFormat, UpdateArgs};
use skiff_plugins::EventKind;
use skiff_runtime::container::{control_request, ControlRequest};
use skiff_runtime::oci::bundle::ANNOTATION_MEMORY_MAX;
use skiff_runtime::oci::cgroup::{CpuCgroup, CpuMax};
use skiff_runtime::oci::vmctl;

use crate::{admission, console, exec, supervise};

mod create;
mod delete;
mod events;
mod features;
mod kill;
mod list;
mod pause;
mod run;
mod spec;
mod start;
mod state;
mod update;

use create::*;
use delete::*;
use events::*;
use features::*;
use kill::*;
use list::*;
use pause::*;
use run::*;
use spec::*;
use start::*;
use state::*;
use update::*;

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
        Cmd::State { id } => state(&store, id),
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

pub(crate) fn hook_list(
    b: &Bundle,
    pick: impl Fn(&oci_spec::runtime::Hooks) -> Option<Vec<oci_spec::runtime::Hook>>,
) -> Vec<oci_spec::runtime::Hook> {
    b.spec.hooks().as_ref().and_then(pick).unwrap_or_default()
}

/// Sends `req` to the container's supervisor and waits for its `ok`.
fn control(rec: &Record, req: ControlRequest) -> Result<()> {
    let ctl = rec
        .control
        .as_ref()
        .ok_or_else(|| anyhow!("container {} has no control socket", rec.id))?;
    Ok(control_request(ctl, req)?)
}
