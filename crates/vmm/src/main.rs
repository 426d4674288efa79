//! `skiff-vmm`: see the crate documentation of `skiff_vmm` for flags and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use skiff_vmm::builder::{RunOptions, RunOutcome};
use skiff_vmm::exit::EXIT_VMM_ERROR;
use skiff_vmm::restore::RestoreConfig;
use skiff_vmm::vmm_config::{
    parse_console, parse_disk_spec, parse_fs_spec, parse_net_spec, VmConfig, VsockConfig,
    DEFAULT_CMDLINE,
};

#[derive(Parser)]
#[command(name = "skiff-vmm", version, about = "skiff's KVM microVM monitor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a microVM and run it until the guest resets or powers off.
    Run(RunArgs),
    /// Start a microVM from a snapshot directory (see `snapshot` on the API socket).
    Restore(RestoreArgs),
    /// Serve the vsock device model over vhost-user (flags of vhost-device-vsock).
    VhostUserVsock(VhostVsockArgs),
    /// Serve the block device model over vhost-user.
    VhostUserBlk(VhostBlkArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kernel: ELF vmlinux (or a static x86_64 ELF) or bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// initramfs image.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Kernel command line (virtio-mmio devices are appended).
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory_mib: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// virtio-blk disk: PATH[,ro][,id=SERIAL]; repeatable, in guest order.
    #[arg(long = "disk", value_name = "SPEC")]
    disks: Vec<String>,
    /// virtio-net on a TAP: tap=NAME[,mac=XX:XX:XX:XX:XX:XX]; repeatable.
    #[arg(long = "net", value_name = "SPEC")]
    nets: Vec<String>,
    /// Host UNIX socket of a vsock device.
    #[arg(long, value_name = "UDS_PATH")]
    vsock: Option<PathBuf>,
    /// virtio-fs served by a vhost-user backend (virtiofsd): tag=T,socket=PATH;
    /// repeatable, after the vsock device.
    #[arg(long = "fs", value_name = "SPEC")]
    fs: Vec<String>,
    /// Guest context ID of the vsock device.
    #[arg(long, default_value_t = 3)]
    guest_cid: u64,
    /// Console output: stdout, off, or a file path.
    #[arg(long, default_value = "stdout")]
    console: String,
    /// Print `skiff-vmm: boot-timer ...` on stderr when the guest hits the boot timer.
    #[arg(long)]
    report_boot_time: bool,
    /// Do not install the per-thread seccomp filters (debugging only).
    #[arg(long)]
    no_seccomp: bool,
    /// Serve the control API (pause, resume, status, snapshot DIR) on this UNIX socket.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// Snapshot directory written by `snapshot DIR`.
    #[arg(long, value_name = "DIR")]
    snapshot: PathBuf,
    /// Serve the control API on this UNIX socket.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// Console output: stdout, off, or a file path.
    #[arg(long, default_value = "stdout")]
    console: String,
    /// Disk image replacing a saved disk path; repeat for every saved disk, in order.
    #[arg(long = "disk", value_name = "PATH")]
    disks: Vec<PathBuf>,
    /// vsock host socket replacing the saved one.
    #[arg(long, value_name = "UDS_PATH")]
    vsock: Option<PathBuf>,
    /// Refuse the snapshot unless its guest has this much memory (MiB).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Leave the vCPUs stopped until `resume` arrives on the API socket.
    #[arg(long)]
    paused: bool,
    /// Print `skiff-vmm: restored ...` and guest markers on stderr.
    #[arg(long)]
    report_boot_time: bool,
    /// Do not install the per-thread seccomp filters (debugging only).
    #[arg(long)]
    no_seccomp: bool,
}

#[derive(clap::Args)]
struct VhostVsockArgs {
    /// Guest context ID.
    #[arg(long, default_value_t = 3)]
    guest_cid: u64,
    /// vhost-user socket the front end (QEMU) connects to.
    #[arg(long)]
    socket: PathBuf,
    /// Host UNIX socket for the vsock streams.
    #[arg(long)]
    uds_path: PathBuf,
}

#[derive(clap::Args)]
struct VhostBlkArgs {
    /// vhost-user socket the front end (QEMU) connects to.
    #[arg(long)]
    socket: PathBuf,
    /// Raw disk image.
    #[arg(long)]
    disk: PathBuf,
    /// Refuse guest writes.
    #[arg(long)]
    readonly: bool,
    /// Serial returned by GET_ID.
    #[arg(long)]
    id: Option<String>,
}

fn run(args: RunArgs, start: Instant) -> anyhow::Result<i32> {
    let disks = args
        .disks
        .iter()
        .map(|s| parse_disk_spec(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let nets = args
        .nets
        .iter()
        .enumerate()
        .map(|(i, s)| parse_net_spec(s, i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let fs = args
        .fs
        .iter()
        .map(|s| parse_fs_spec(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let config = VmConfig {
        kernel: args.kernel,
        initramfs: args.initramfs,
        cmdline: args.cmdline,
        memory_mib: args.memory_mib,
        vcpus: args.cpus,
        disks,
        nets,
        vsock: args.vsock.map(|uds_path| VsockConfig {
            guest_cid: args.guest_cid,
            uds_path,
        }),
        fs,
        console: parse_console(&args.console),
        report_boot_time: args.report_boot_time,
        seccomp: !args.no_seccomp,
    };
    let vm = skiff_vmm::builder::build(&config, start)?;
    finish(vm.run(RunOptions {
        api_socket: args.api_socket,
    })?)
}

fn restore(args: RestoreArgs, start: Instant) -> anyhow::Result<i32> {
    let config = RestoreConfig {
        snapshot_dir: args.snapshot,
        disks: args.disks,
        vsock: args.vsock,
        console: parse_console(&args.console),
        memory_mib: args.memory_mib,
        start_paused: args.paused,
        seccomp: !args.no_seccomp,
        report_boot_time: args.report_boot_time,
    };
    let vm = skiff_vmm::restore::restore(&config, start)?;
    finish(vm.run(RunOptions {
        api_socket: args.api_socket,
    })?)
}

fn finish(outcome: RunOutcome) -> anyhow::Result<i32> {
    if let skiff_vmm::exit::GuestExit::Crash(why) = &outcome.exit {
        eprintln!("skiff-vmm: guest crashed: {why}");
    }
    tracing::info!("guest ended: {:?}", outcome);
    Ok(outcome.exit_code())
}

fn main() -> ExitCode {
    let start = Instant::now();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_VMM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args, start),
        Command::Restore(args) => restore(args, start),
        Command::VhostUserVsock(a) => {
            skiff_vmm::vhost_user::serve_vsock(a.guest_cid, &a.socket, &a.uds_path).map(|()| 0)
        }
        Command::VhostUserBlk(a) => skiff_vmm::vhost_user::serve_block(
            &a.socket,
            skiff_vmm::vmm_config::DiskConfig {
                path: a.disk,
                read_only: a.readonly,
                serial: a.id,
            },
        )
        .map(|()| 0),
    };
    match result {
        Ok(code) => {
            // vCPU threads may still be inside KVM_RUN: leave without unwinding them.
            std::process::exit(code)
        }
        Err(e) => {
            eprintln!("skiff-vmm: {e:#}");
            ExitCode::from(EXIT_VMM_ERROR as u8)
        }
    }
}
