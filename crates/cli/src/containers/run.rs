//! `run`: create, then start attached in the foreground (or detached with `-d`).

use anyhow::{Context, Result};
use skiff_plugins::EventKind;
use skiff_runtime::container::{self, ContainerSpec, Containers, Supervisor, MAIN_STREAM};
use skiff_runtime::vm::relay::Stdio;

use crate::{attach, signals, terminal};

use super::*;

pub(super) fn run_container(ctx: &Ctx, a: RunArgs) -> Result<u8> {
    if a.detach {
        let spec = create(ctx, &a.create, a.rm)?;
        let c = ctx.containers()?;
        return match start_detached(ctx, &c, &spec.id) {
            Ok(()) => {
                println!("{}", spec.id);
                Ok(0)
            }
            Err(e) => {
                if a.rm {
                    let _ = remove(&c, &ctx.store()?, &spec.id, true);
                }
                Err(e)
            }
        };
    }
    signals::block().context("block signals")?;
    let spec = create(ctx, &a.create, a.rm)?;
    let c = ctx.containers()?;
    let code = attach_foreground(&c, &spec, a.create.interactive);
    if a.rm {
        if let Err(e) = remove(&c, &ctx.store()?, &spec.id, true) {
            eprintln!("skiff: remove {}: {e:#}", &spec.id[..12]);
        }
    }
    container::trace::mark("removed");
    code
}

/// Runs the container's supervisor in this process with our terminal attached.
pub(super) fn attach_foreground(c: &Containers, spec: &ContainerSpec, stdin: bool) -> Result<u8> {
    let tty = spec.process.terminal;
    let target = attach::SignalTarget::spawn(MAIN_STREAM, tty);
    let sup = Supervisor::start(c, &spec.id)?;
    let sender = sup.sender();
    target.set(sender.clone(), MAIN_STREAM);
    let _raw = if tty && terminal::is_tty(0) {
        Some(terminal::RawMode::enable().context("put the terminal in raw mode")?)
    } else {
        None
    };
    if stdin && sup.start_failure().is_none() {
        attach::spawn_stdin_pump(sender.clone(), MAIN_STREAM);
    }
    let policy = skiff_engine::policy::get()?;
    if sup.start_failure().is_none() {
        policy.event(c, spec, EventKind::Started);
    }
    let code = sup.wait(Some(&mut Stdio::new(Some(sender), MAIN_STREAM)))?;
    policy.event(c, spec, EventKind::Exited(code));
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}
