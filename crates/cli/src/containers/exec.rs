//! `exec`: a process in a running container, through its agent.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_runtime::container::{Containers, MAIN_STREAM};
use skiff_runtime::vm::relay::{relay, Output, Stdio, Until};
use skiff_runtime::{AgentConn, StartOutcome};

use crate::{attach, signals, terminal};
use skiff_engine::run_config;

use super::*;

pub(crate) fn agent_of(c: &Containers, id: &str) -> Result<AgentConn> {
    let st = c.state(id)?;
    let running = st.is_running();
    let Some(uds) = st.vsock_uds.filter(|_| running) else {
        bail!("container {} is not running", &id[..12]);
    };
    AgentConn::connect(&uds, skiff_proto::AGENT_PORT, Duration::from_secs(10))
        .with_context(|| format!("connect to the agent of container {}", &id[..12]))
}

pub(super) fn exec(ctx: &Ctx, a: &ExecArgs) -> Result<u8> {
    signals::block().context("block signals")?;
    let c = ctx.containers()?;
    let spec = c.resolve(&a.container)?;
    let mut p = spec.process.clone();
    p.args = a.command.clone();
    p.env = run_config::merge_env(&p.env, &a.env)?;
    if a.tty && !p.env.iter().any(|e| e.starts_with("TERM=")) {
        p.env.push("TERM=xterm".into());
    }
    if let Some(w) = &a.workdir {
        if !w.starts_with('/') {
            bail!("the working directory {w:?} is invalid: it needs to be an absolute path");
        }
        p.cwd = w.clone();
    }
    if let Some(u) = &a.user {
        (p.user, p.user_name) = run_config::parse_user(u)?;
    }
    p.terminal = a.tty;
    p.stdin = a.interactive;
    p.console_size = terminal::console_size(a.tty);
    let mut agent = agent_of(&c, &spec.id)?;
    let target = attach::SignalTarget::spawn(MAIN_STREAM, a.tty);
    let _raw = if a.tty && terminal::is_tty(0) {
        Some(terminal::RawMode::enable().context("put the terminal in raw mode")?)
    } else {
        None
    };
    let outcome = agent
        .start(MAIN_STREAM, false, &p)
        .context("start the process")?;
    let sender = agent.sender();
    if a.detach {
        sender.hang_up();
        return Ok(0);
    }
    target.set(sender.clone(), MAIN_STREAM);
    let mut status = match outcome {
        StartOutcome::Failed { status } => Some(status),
        StartOutcome::Running { .. } => {
            if a.interactive {
                attach::spawn_stdin_pump(sender.clone(), MAIN_STREAM);
            }
            None
        }
    };
    let mut out = Stdio::new(Some(sender.clone()), MAIN_STREAM);
    if status.is_none() {
        status = relay(&mut agent, MAIN_STREAM, Until::Exit, &mut out).status;
    }
    sender.hang_up();
    drop(_raw);
    match status {
        Some(s) => Ok(attach::exit_code(s)),
        None => bail!("the container stopped before the exec'd process reported its exit status"),
    }
}

/// Runs `args` in the container and returns its stdout (for top).
pub(super) fn exec_capture(c: &Containers, id: &str, args: Vec<String>) -> Result<(i32, Vec<u8>)> {
    let mut agent = agent_of(c, id)?;
    let mut p = c.spec(id)?.process;
    p.args = args;
    p.terminal = false;
    p.stdin = false;
    let mut status = match agent.start(MAIN_STREAM, false, &p)? {
        StartOutcome::Failed { status } => Some(status),
        StartOutcome::Running { .. } => None,
    };
    let mut out = Capture(Vec::new());
    if status.is_none() {
        status = relay(&mut agent, MAIN_STREAM, Until::Exit, &mut out).status;
    }
    let out = out.0;
    agent.sender().hang_up();
    Ok((status.map_or(137, |s| s.code()), out))
}

/// Up to 4 MiB of a process's stdout (for `top`); stderr is dropped.
struct Capture(Vec<u8>);

impl Output for Capture {
    fn stdout(&mut self, bytes: &[u8]) {
        let room = (4usize << 20).saturating_sub(self.0.len());
        self.0.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn stderr(&mut self, _: &[u8]) {}
}
