//! `exec`: one host proxy process per exec'd process. The proxy (`_exec-proxy`) opens
//! its own agent connection, starts the process, relays stdio and signals, and exits
//! with the process's status, so callers can wait on and signal its pid.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_proto::ProcessSpec;
use skiff_runtime::oci::{Status, Store};
use skiff_runtime::{AgentConn, StartOutcome};

use crate::cli::ExecArgs;
use crate::supervise::Ready;
use crate::{commands, console, relay};

/// The env var carrying the process spec (JSON) to the proxy.
const SPEC_ENV: &str = "SKIFF_RUNTIME_EXEC_SPEC";
const MAX_SPEC: usize = 1 << 20;
const STREAM: u32 = 1;

fn process_of(a: &ExecArgs, store: &Store) -> Result<ProcessSpec> {
    if let Some(path) = &a.process {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        if bytes.len() > MAX_SPEC {
            bail!("{} is larger than 1 MiB", path.display());
        }
        let p: oci_spec::runtime::Process =
            serde_json::from_slice(&bytes).context("invalid process JSON")?;
        let mut spec = skiff_runtime::oci::process::process_from_oci(&p)?;
        // The container's seccomp profile (linux.seccomp) binds its execs too, as in runc.
        let bundle = store.lock(&a.id)?.load()?.bundle;
        spec.seccomp = skiff_runtime::oci::Bundle::load(&bundle)?.process.seccomp;
        return Ok(spec);
    }
    if a.command.is_empty() {
        bail!("exec needs --process or a command after the container ID");
    }
    // The inline form inherits the container's environment and working directory.
    let bundle = store.lock(&a.id)?.load()?.bundle;
    let base = skiff_runtime::oci::Bundle::load(&bundle)
        .map(|b| b.process)
        .unwrap_or_else(|_| ProcessSpec::new(Vec::new()));
    let mut p = base;
    p.args = a.command.clone();
    p.env.extend(a.env.iter().cloned());
    if let Some(cwd) = &a.cwd {
        p.cwd = cwd.clone();
    }
    if let Some(u) = &a.user {
        p.user = skiff_runtime::oci::process::parse_numeric_user(u)?;
    }
    p.terminal = a.tty;
    p.no_new_privileges |= a.no_new_privs;
    Ok(p)
}

pub fn exec(root: &Store, cli_args: Vec<String>, a: &ExecArgs) -> Result<i32> {
    let rec = root.lock(&a.id)?.load()?;
    match rec.status() {
        Status::Running | Status::Created => {}
        s => bail!("cannot exec in a {s} container"),
    }
    let mut p = process_of(a, root)?;
    p.stdin = true;
    let spec = serde_json::to_string(&p)?;
    let pty = if p.terminal {
        let Some(sock) = &a.console_socket else {
            bail!("--tty needs --console-socket");
        };
        let pty = console::open_pty()?;
        console::send_master(sock, &pty.master)?;
        Some(pty)
    } else {
        None
    };
    let (child, ready) = commands::spawn_helper(
        cli_args,
        &["_exec-proxy", &a.id],
        &[(SPEC_ENV, spec.as_str())],
        pty.as_ref().map(|p| &p.slave),
    )?;
    drop(pty);
    let pid = commands::await_ready(child.id(), ready)?;
    if let Some(f) = &a.pid_file {
        skiff_runtime::owner_only::write_atomic(f, pid.to_string().as_bytes())?;
    }
    if a.detach {
        return Ok(0);
    }
    let mut child = child;
    let status = child.wait()?;
    Ok(status.code().unwrap_or(137))
}

/// The proxy itself.
pub fn proxy(store: &Store, id: &str) -> Result<i32> {
    let mut ready = Ready::from_env();
    relay::block_signals();
    let result = (|| -> Result<_> {
        let spec = std::env::var(SPEC_ENV).context("no process spec")?;
        std::env::remove_var(SPEC_ENV);
        let mut p: ProcessSpec = serde_json::from_str(&spec)?;
        if p.terminal {
            console::take_controlling_terminal();
            p.console_size = p.console_size.or_else(console::window_size);
        }
        let rec = store.lock(id)?.load()?;
        let Some(uds) = rec.vsock_uds else {
            bail!("container {id} is not running");
        };
        let mut agent = AgentConn::connect(&uds, skiff_proto::AGENT_PORT, Duration::from_secs(10))?;
        let outcome = agent.start(STREAM, false, &p)?;
        Ok((agent, outcome, p.terminal))
    })();
    // Registered before `exec` returns, so `ps --format json` lists this proxy.
    let result = result.and_then(|v| Ok((v, crate::ps::register_exec(&store.dir(id))?)));
    let ((mut agent, outcome, terminal), _entry) = match result {
        Ok(v) => v,
        Err(e) => {
            ready.fail(&format!("{e:#}"));
            return Err(e);
        }
    };
    ready.ok();
    if let StartOutcome::Failed { status } = outcome {
        let _ = relay::relay_output(&mut agent, STREAM);
        return Ok(status.code());
    }
    let sender = agent.sender();
    relay::spawn_signal_thread(move |sig| {
        if sig == libc::SIGWINCH {
            if let (true, Some((rows, cols))) = (terminal, console::window_size()) {
                let _ = sender.resize(STREAM, rows, cols);
            }
        } else {
            let _ = sender.signal(STREAM, sig);
        }
    });
    relay::spawn_stdin_pump(agent.sender(), STREAM);
    let status = relay::relay_output(&mut agent, STREAM).status;
    agent.sender().hang_up();
    Ok(status.map_or(137, |s| s.code()))
}
