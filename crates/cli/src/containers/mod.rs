//! The container commands of `skiff`: run, create, start, stop, kill, restart, rm, ps,
//! logs, exec, wait, inspect, top, commit, cp, rename, stats, `container ...`, one file
//! per verb; the clap structs are in `args`. They parse and print;
//! `skiff_runtime::container` keeps the records and runs the supervisor.

use std::path::PathBuf;

use anyhow::{Context, Result};
use skiff_image::Store;
use skiff_runtime::container::{self, Containers};

use crate::GlobalOpts;
use skiff_engine::run_config;

pub mod args;
mod commit;
mod cp;
mod create;
mod exec;
mod inspect;
mod logs;
mod prune;
mod ps;
mod rm;
mod run;
mod start;
mod stats;
mod stop;
mod top;
mod wait;

use args::*;
pub use args::{ContainerCommand, ContainerSubcommand};
use {
    commit::*, create::*, exec::*, inspect::*, logs::*, prune::*, ps::*, rm::*, run::*, start::*,
    stats::*, stop::*, top::*, wait::*,
};

struct Ctx {
    root: PathBuf,
    global: GlobalOpts,
}

impl Ctx {
    fn containers(&self) -> Result<Containers> {
        Containers::open(&self.root)
            .with_context(|| format!("open the container store {}", self.root.display()))
    }

    fn store(&self) -> Result<Store> {
        Store::open(&self.root)
            .with_context(|| format!("open the image store {}", self.root.display()))
    }
}

pub fn run(cmd: ContainerCommand, global: &GlobalOpts) -> Result<u8> {
    container::trace::mark("cli_main");
    // Listing commands end quietly when their reader goes away (`skiff ps | head`);
    // commands that run a container keep writing errors as errors.
    if matches!(
        cmd,
        ContainerCommand::Ps(_)
            | ContainerCommand::Inspect(_)
            | ContainerCommand::Logs(_)
            | ContainerCommand::Stats(_)
            | ContainerCommand::Top(_)
            | ContainerCommand::Container(
                ContainerSubcommand::Ps(_) | ContainerSubcommand::Inspect(_)
            )
    ) {
        // Before any thread starts.
        let _ = skiff_sys::signals::default_sigpipe();
    }
    let ctx = Ctx {
        root: global.root.clone().unwrap_or_else(Store::default_root),
        global: global.clone(),
    };
    match cmd {
        ContainerCommand::Run(a) => run_container(&ctx, a),
        ContainerCommand::Create(a) => {
            let spec = create(&ctx, &a, false)?;
            println!("{}", spec.id);
            Ok(0)
        }
        ContainerCommand::Start(a) => start(&ctx, &a),
        ContainerCommand::Stop(a) => each(&ctx, &a.containers, |c, id| {
            stop(c, id, a.time, a.signal.as_deref())
        }),
        ContainerCommand::Kill(a) => {
            let sig = run_config::parse_signal(&a.signal)?;
            each(&ctx, &a.containers, |c, id| kill(c, id, sig))
        }
        ContainerCommand::Restart(a) => each(&ctx, &a.containers, |c, id| {
            stop(c, id, a.time, a.signal.as_deref())?;
            start_detached(&ctx, c, id)
        }),
        ContainerCommand::Rm(a) | ContainerCommand::Container(ContainerSubcommand::Rm(a)) => {
            let store = ctx.store()?;
            each(&ctx, &a.containers, |c, id| remove(c, &store, id, a.force))
        }
        ContainerCommand::Ps(a) | ContainerCommand::Container(ContainerSubcommand::Ps(a)) => {
            ps(&ctx, &a)
        }
        ContainerCommand::Logs(a) => logs(&ctx, &a),
        ContainerCommand::Exec(a) => exec(&ctx, &a),
        ContainerCommand::Wait(a) => wait(&ctx, &a),
        ContainerCommand::Inspect(a)
        | ContainerCommand::Container(ContainerSubcommand::Inspect(a)) => inspect(&ctx, &a),
        ContainerCommand::Top(a) => top(&ctx, &a),
        ContainerCommand::Commit(a) => commit(&ctx, &a),
        ContainerCommand::Cp(a) => cp::run(&ctx.containers()?, &a.src, &a.dest, a.archive),
        ContainerCommand::Rename(a) => {
            let c = ctx.containers()?;
            let id = c.resolve(&a.container)?.id;
            c.rename(&id, &a.new_name)?;
            Ok(0)
        }
        ContainerCommand::Stats(a) => stats(&ctx, &a),
        ContainerCommand::Port(a) => {
            crate::networks::port(&ctx.containers()?, &a.container, a.private_port.as_deref())
        }
        ContainerCommand::Container(ContainerSubcommand::Prune(_)) => prune(&ctx),
        ContainerCommand::Supervise { id } => supervise(&ctx, &id),
    }
}

/// Applies `f` to each named container, printing the name as given on success (as
/// Docker); the first failure is the command's error after the others were tried.
fn each(ctx: &Ctx, names: &[String], f: impl Fn(&Containers, &str) -> Result<()>) -> Result<u8> {
    let c = ctx.containers()?;
    let mut first_err = None;
    for name in names {
        match c
            .resolve(name)
            .map_err(anyhow::Error::from)
            .and_then(|s| f(&c, &s.id))
        {
            Ok(()) => println!("{name}"),
            Err(e) => {
                if first_err.is_some() {
                    eprintln!("skiff: {e:#}");
                } else {
                    first_err = Some(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(0),
    }
}
