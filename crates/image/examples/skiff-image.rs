//! A stand-in `skiff` binary with only the image commands, for testing
//! `crates/cli/src/image_cmds.rs` before the real CLI wires it in.

#[path = "../../cli/src/image_cmds.rs"]
mod image_cmds;

use clap::Parser;

#[derive(Parser)]
#[command(name = "skiff")]
struct Cli {
    /// Image store root (default /var/lib/skiff, or $XDG_DATA_HOME/skiff)
    #[arg(long, global = true, env = "SKIFF_ROOT")]
    root: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: image_cmds::ImageCommand,
}

fn main() {
    tracing_subscriber_init();
    let cli = Cli::parse();
    match image_cmds::run(cli.cmd, cli.root) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("skiff: {e:#}");
            std::process::exit(125);
        }
    }
}

fn tracing_subscriber_init() {}
