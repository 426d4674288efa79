//! `start` (attached or detached) and the hidden `supervise`: the process that owns a running container's VM.

use anyhow::{bail, Context, Result};
use skiff_engine::lifecycle::{self, SupervisorCommand};
use skiff_runtime::container::Containers;

use crate::signals;

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
    let exe = std::env::current_exe().context("find the skiff executable")?;
    let cmd = SupervisorCommand {
        exe: &exe,
        root: &ctx.root,
        log_level: &ctx.global.log_level,
    };
    Ok(lifecycle::start(c, id, &cmd)?)
}

/// The hidden `supervise` command: the detached host process of one container.
pub(super) fn supervise(ctx: &Ctx, id: &str) -> Result<u8> {
    let code = lifecycle::supervise(&ctx.containers()?, &ctx.store()?, id)?;
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}
