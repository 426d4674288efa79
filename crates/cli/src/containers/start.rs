//! `start` (attached or detached) and the hidden `supervise`: the process that owns a running container's VM.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_plugins::EventKind;
use skiff_runtime::container::{read_log, Containers, LogStream, Status, Supervisor, MAIN_STREAM};

use crate::{attach, signals};

use super::*;

pub(super) fn start(ctx: &Ctx, a: &StartArgs) -> Result<u8> {
    let c = ctx.containers()?;
    if a.attach || a.interactive {
        if a.containers.len() != 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        signals::block().context("block signals")?;
        let spec = c.resolve(&a.containers[0])?;
        let code = attach_foreground(&c, &spec, a.interactive)?;
        if spec.auto_remove {
            let _ = remove(&c, &ctx.store()?, &spec.id, true);
        }
        return Ok(code);
    }
    each(ctx, &a.containers, |c, id| {
        if c.state(id)?.is_running() {
            return Ok(());
        }
        start_detached(ctx, c, id)
    })
}

/// Starts `skiff supervise ID` in its own session and waits until the container runs
/// (or fails to).
pub(super) fn start_detached(ctx: &Ctx, c: &Containers, id: &str) -> Result<()> {
    let st = c.state(id)?;
    if st.is_running() || (st.status == Status::Created && st.pid.is_some()) {
        bail!("container {} is already running", &id[..12]);
    }
    let exe = std::env::current_exe().context("find the skiff executable")?;
    let mut child = c.spawn_supervisor(&exe, &ctx.root, &ctx.global.log_level, id)?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = c.state(id)?;
        // Until the supervisor claims the record, the state is the previous run's.
        let claimed = st.pid == Some(child.id());
        match st.status {
            _ if !claimed => {}
            Status::Running if st.guest_pid.is_some() => break,
            // The command could not be executed: report it as `run` would.
            Status::Running | Status::Exited
                if st.started_ms.is_some() || st.status == Status::Exited =>
            {
                if st.status == Status::Exited
                    || wait_exited(c, id, Some(Duration::from_secs(30))).is_ok()
                {
                    let st = c.state(id)?;
                    if st.error.is_some() || matches!(st.exit_code, Some(126 | 127)) {
                        let (entries, _) = read_log(&c.log_path(id)).unwrap_or_default();
                        let msg: String = entries
                            .iter()
                            .filter(|e| e.stream == LogStream::Stderr)
                            .map(|e| e.log.trim_end().to_owned())
                            .collect::<Vec<_>>()
                            .join("; ");
                        let why = st.error.clone().unwrap_or(msg);
                        bail!("container {} failed to start: {why}", &id[..12]);
                    }
                }
                break;
            }
            _ => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            let st = c.state(id)?;
            if st.status == Status::Exited && st.pid == Some(child.id()) {
                if let Some(e) = st.error {
                    bail!("{e}");
                }
                break;
            }
            bail!(
                "the container's supervisor exited ({status}) before the container started; see {}",
                c.dir_of(id).join("supervisor.log").display()
            );
        }
        if Instant::now() >= deadline {
            bail!("container {} did not start within 180 s", &id[..12]);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reap it if it is already done; otherwise init adopts it when we exit.
    let _ = child.try_wait();
    Ok(())
}

/// The hidden `supervise` command: the detached host process of one container.
pub(super) fn supervise(ctx: &Ctx, id: &str) -> Result<u8> {
    signals::block().context("block signals")?;
    let c = ctx.containers()?;
    let target = attach::SignalTarget::spawn(MAIN_STREAM, false);
    let sup = Supervisor::start(&c, id)?;
    target.set(sup.sender(), MAIN_STREAM);
    let spec = sup.spec().clone();
    let auto_remove = spec.auto_remove;
    let policy = skiff_engine::policy::get()?;
    if sup.start_failure().is_none() {
        policy.event(&c, &spec, EventKind::Started);
    }
    let code = sup.wait(None)?;
    policy.event(&c, &spec, EventKind::Exited(code));
    if auto_remove {
        remove(&c, &ctx.store()?, id, true)?;
    }
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}
