//! The image commands of `skiff`: pull, push, images, tag, rmi, load, save, import,
//! `image ...` and `system df`, one file per verb; the clap structs are in `args`.
//! They parse and print; skiff-image acts.

use std::path::PathBuf;

use anyhow::Context;
use skiff_image::fsutil::human_size;
use skiff_image::{busybox, Store};

pub mod args;
mod df;
mod history;
mod import;
mod inspect;
mod load;
mod ls;
mod pull;
mod push;
mod rmi;
mod save;

pub use args::ImageCommand;
use args::*;
use {df::*, history::*, import::*, inspect::*, load::*, ls::*, pull::*, push::*, rmi::*, save::*};

/// Run an image command against the store at `root` (default: see
/// `Store::default_root`). Returns the process exit code.
pub fn run(cmd: ImageCommand, root: Option<PathBuf>) -> anyhow::Result<i32> {
    let root = root.unwrap_or_else(Store::default_root);
    let store =
        Store::open(&root).with_context(|| format!("open image store {}", root.display()))?;
    match cmd {
        ImageCommand::Pull(a) => pull(&store, a),
        ImageCommand::Push(a) => push(&store, a),
        ImageCommand::Images(a) | ImageCommand::Image(ImageSubcommand::Ls(a)) => images(&store, a),
        ImageCommand::Tag(a) | ImageCommand::Image(ImageSubcommand::Tag(a)) => {
            store.tag(&a.source, &a.target)?;
            Ok(0)
        }
        ImageCommand::Rmi(a) | ImageCommand::Image(ImageSubcommand::Rm(a)) => rmi(&store, a),
        ImageCommand::Load(a) => load(&store, a),
        ImageCommand::Save(a) => save(&store, a),
        ImageCommand::Import(a) => import(&store, a),
        ImageCommand::Image(ImageSubcommand::Inspect(a)) => inspect(&store, a),
        ImageCommand::Image(ImageSubcommand::History(a)) => history(&store, a),
        ImageCommand::Image(ImageSubcommand::Prune(a)) => {
            let (deleted, freed) = store.prune(a.all)?;
            if !deleted.is_empty() {
                println!("Deleted Images:");
                for d in deleted {
                    println!("deleted: {d}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(freed));
            Ok(0)
        }
        ImageCommand::Image(ImageSubcommand::BuildBusybox(a)) => {
            let img = busybox::build(&store, &a.from, &a.tag)?;
            println!("{}", img.id);
            Ok(0)
        }
        ImageCommand::System(SystemSubcommand::Df(a)) => df(&store, a),
    }
}
