//! `skiff vm run`: the microVM slice end to end. Layer disks and a writable disk in,
//! one process run inside the VM, its stdio relayed and its exit status returned.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_proto::{ContainerConfig, ProcessSpec, DEFAULT_PATH};
use skiff_runtime::container::{Session, MAIN_STREAM};
use skiff_runtime::vm::hypervisor;
use skiff_runtime::vm::relay::Stdio;
use skiff_runtime::vm::writable;
use skiff_runtime::{Disk, GuestArtifacts, VmConfig, VmSize};

use crate::{attach, signals, terminal, GlobalOpts};

#[derive(clap::Subcommand)]
pub enum VmCommand {
    /// Boot a microVM from layer disks and run one command in it.
    Run(RunArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// A read-only layer disk (erofs or ext4 image); repeat, bottom layer first.
    #[arg(long = "layer", value_name = "IMAGE", required = true)]
    layers: Vec<PathBuf>,
    /// The writable layer disk (ext4). Created with --rw-size if it does not exist.
    /// Without it, writes live in guest memory and vanish with the VM.
    #[arg(long = "rw", value_name = "IMAGE")]
    writable: Option<PathBuf>,
    /// Size of a writable disk that --rw creates.
    #[arg(long, default_value = "1G")]
    rw_size: String,
    /// Keep stdin open and send it to the process.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long, default_value = "/")]
    workdir: String,
    /// UID[:GID] to run as.
    #[arg(short, long, default_value = "0:0")]
    user: String,
    /// Container hostname.
    #[arg(long, default_value = "skiff")]
    hostname: String,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Guest memory (e.g. 256M, 1G).
    #[arg(short, long, default_value = "256M")]
    memory: String,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Seconds the guest agent may take to come up.
    #[arg(long, default_value_t = 30.0)]
    boot_timeout: f64,
    /// Extra guest kernel command-line arguments.
    #[arg(long, default_value = "")]
    kernel_args: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(cmd: VmCommand, global: &GlobalOpts) -> Result<u8> {
    match cmd {
        VmCommand::Run(args) => run_vm(&args, global),
    }
}

fn build_process(args: &RunArgs) -> Result<ProcessSpec> {
    let env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", args.hostname),
    ];
    let mut env = skiff_engine::run_config::merge_env(&env, &args.env)?;
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !args.workdir.starts_with('/') {
        bail!("--workdir {:?} must be an absolute path", args.workdir);
    }
    let mut p = ProcessSpec::new(args.command.clone());
    p.env = env;
    p.cwd = args.workdir.clone();
    p.user = skiff_runtime::oci::process::parse_numeric_user(&args.user)?;
    p.terminal = args.tty;
    p.stdin = args.interactive;
    p.console_size = terminal::console_size(args.tty);
    Ok(p)
}

fn run_vm(args: &RunArgs, global: &GlobalOpts) -> Result<u8> {
    signals::block().context("block signals")?;
    let process = build_process(args)?;
    let memory = writable::parse_size(&args.memory)?;
    let memory_mib = u32::try_from(memory >> 20)
        .ok()
        .filter(|m| *m >= 64)
        .context("--memory must be at least 64M")?;
    if args.cpus == 0 || args.cpus > 64 {
        bail!("--cpus must be between 1 and 64");
    }
    if !(args.boot_timeout.is_finite() && args.boot_timeout > 0.0) {
        bail!("--boot-timeout must be a positive number of seconds");
    }
    let artifacts = GuestArtifacts::locate(global.kernel.as_deref(), global.initramfs.as_deref())?;
    let selection = hypervisor::select(global.hypervisor)?;
    tracing::info!(backend = %selection.kind, reason = %selection.reason, "hypervisor");

    let mut disks = Disk::layers(&args.layers);
    if let Some(rw) = &args.writable {
        if !rw.exists() {
            writable::create(rw, writable::parse_size(&args.rw_size)?)?;
        }
        disks.push(Disk::writable(rw.clone()));
    }
    let size = VmSize {
        memory_mib,
        vcpus: args.cpus,
    };
    let config = VmConfig {
        cmdline_extra: args.kernel_args.clone(),
        ..VmConfig::sized(artifacts, selection, size, disks)
            .with_boot_timeout(Duration::from_secs_f64(args.boot_timeout))
    };

    // Signals that arrive before the process runs are delivered once it does.
    let target = attach::SignalTarget::spawn(MAIN_STREAM, args.tty);

    let container = ContainerConfig {
        id: "vm-run".into(),
        hostname: args.hostname.clone(),
        layers: Disk::layer_serials(args.layers.len()),
        writable: args.writable.as_ref().map(|_| Disk::WRITABLE_SERIAL.into()),
        readonly_rootfs: args.read_only,
        ..ContainerConfig::default()
    };
    let mut session =
        Session::boot(&config, &container).context("boot the microVM and create the container")?;

    let _raw = if args.tty && terminal::is_tty(0) {
        Some(terminal::RawMode::enable().context("put the terminal in raw mode")?)
    } else {
        None
    };
    let (_, failed) = session.start(&process).context("start the process")?;
    let sender = session.sender();
    target.set(sender.clone(), MAIN_STREAM);
    if failed.is_none() && args.interactive {
        attach::spawn_stdin_pump(sender.clone(), MAIN_STREAM);
    }
    let relayed = session.relay(&mut Stdio::new(Some(sender), MAIN_STREAM));
    drop(_raw);
    let exit = session.finish(relayed.status.or(failed), relayed.error);
    match exit.error {
        None => Ok(u8::try_from(exit.code.clamp(0, 255)).unwrap_or(255)),
        Some(why) => bail!("{why}"),
    }
}
