//! `skiff`: the command line. It parses and reports; the runtime crates act.

mod attach;
mod containers;
mod images;
mod info;
mod networks;
mod signals;
mod template;
mod terminal;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// skiff's own failures, as Docker reports them.
pub const EXIT_SKIFF_ERROR: u8 = 125;

#[derive(Parser)]
#[command(name = "skiff", version, about = "Containers, each in its own microVM")]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct GlobalOpts {
    /// Hypervisor backend: vmm (skiff's own, needs hardware KVM) or qemu. Default: the
    /// best one this host can run (see `skiff info`).
    #[arg(long, global = true, env = "SKIFF_HYPERVISOR")]
    pub hypervisor: Option<skiff_runtime::HypervisorKind>,
    /// Guest kernel (bzImage). Default: $SKIFF_KERNEL or the installed guest.
    #[arg(long, global = true)]
    pub kernel: Option<PathBuf>,
    /// Guest initramfs. Default: $SKIFF_INITRAMFS or the installed guest.
    #[arg(long, global = true)]
    pub initramfs: Option<PathBuf>,
    /// Image and container store (default /var/lib/skiff for root, else
    /// $XDG_DATA_HOME/skiff).
    #[arg(long, global = true, env = "SKIFF_ROOT")]
    pub root: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, global = true, env = "SKIFF_LOG", default_value = "warn")]
    pub log_level: String,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Container(containers::ContainerCommand),
    #[command(flatten)]
    Image(images::ImageCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Low-level microVM commands (layer disks in, a process out).
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Show the hypervisor backend this host uses and why, and the guest artifacts.
    Info(info::InfoArgs),
}

fn main() -> ExitCode {
    // As Docker: a bad command line is one line and exit 125; help and version are not
    // errors.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("skiff: {}", first.trim_start_matches("error: "));
            return ExitCode::from(EXIT_SKIFF_ERROR);
        }
    };
    init_logging(&cli.global.log_level);
    let result = match cli.command {
        Command::Container(cmd) => containers::run(cmd, &cli.global),
        Command::Image(cmd) => images::run(cmd, cli.global.root.clone())
            .map(|code| u8::try_from(code).unwrap_or(EXIT_SKIFF_ERROR)),
        Command::Vm(cmd) => vm::run(cmd, &cli.global),
        Command::Network(cmd) => {
            let root = cli
                .global
                .root
                .clone()
                .unwrap_or_else(skiff_image::Store::default_root);
            skiff_runtime::container::Containers::open(&root)
                .map_err(anyhow::Error::from)
                .and_then(|c| networks::run(cmd, &c))
        }
        Command::Info(args) => info::run(&args, &cli.global),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("skiff: {}", one_line(&e));
            ExitCode::from(EXIT_SKIFF_ERROR)
        }
    }
}

/// The error and its causes on one line (console tails keep their own lines).
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
