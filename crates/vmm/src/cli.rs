//! The `skiff-vmm` command line (clap): each subcommand's flags, parsed with
//! skiff-vmm-config's parsers into that crate's plans, which the runtime writes with
//! `to_args`.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{Parser, Subcommand};
use skiff_vmm_config::{
    parse_console, parse_disk_spec, parse_fs_spec, parse_net_option, ConsoleConfig, DiskConfig,
    FsConfig, NetSpec, RestorePlan, RunPlan, SpecError, VhostUserBlkPlan, VhostUserVsockPlan,
    VsockConfig, DEFAULT_CMDLINE, DEFAULT_GUEST_CID, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS,
};

/// A clap value parser from one of skiff-vmm-config's parsers, on the raw bytes of the
/// argument (paths need not be UTF-8).
fn spec<T, F>(parse: F) -> impl TypedValueParser<Value = T>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(&OsStr) -> Result<T, SpecError> + Clone + Send + Sync + 'static,
{
    OsStringValueParser::new().try_map(move |s: OsString| parse(&s))
}

#[derive(Parser, Debug)]
#[command(name = "skiff-vmm", version, about = "skiff's KVM microVM monitor")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand, as the plan it describes.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Run(RunPlan),
    Restore(RestorePlan),
    VhostUserVsock(VhostUserVsockPlan),
    VhostUserBlk(VhostUserBlkPlan),
}

impl Cli {
    /// The plan of the subcommand given.
    pub fn into_plan(self) -> Plan {
        match self.command {
            Command::Run(a) => Plan::Run(a.into()),
            Command::Restore(a) => Plan::Restore(a.into()),
            Command::VhostUserVsock(a) => Plan::VhostUserVsock(VhostUserVsockPlan {
                guest_cid: a.guest_cid,
                socket: a.socket,
                uds_path: a.uds_path,
            }),
            Command::VhostUserBlk(a) => Plan::VhostUserBlk(VhostUserBlkPlan {
                socket: a.socket,
                disk: DiskConfig {
                    path: a.disk,
                    read_only: a.readonly,
                    serial: a.id,
                },
            }),
        }
    }
}

/// The option error behind a clap error, if a skiff-vmm-config parser refused a value
/// (reported like any other bad input: one line, [`crate::exit::EXIT_VMM_ERROR`]).
pub fn spec_error(e: &clap::Error) -> Option<&SpecError> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<SpecError>())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a microVM and run it until the guest resets or powers off.
    Run(RunArgs),
    /// Start a microVM from a snapshot directory (see `snapshot` on the API socket).
    Restore(RestoreArgs),
    /// Serve the vsock device model over vhost-user (flags of vhost-device-vsock).
    VhostUserVsock(VhostVsockArgs),
    /// Serve the block device model over vhost-user.
    VhostUserBlk(VhostBlkArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
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
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB)]
    memory_mib: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = DEFAULT_VCPUS)]
    cpus: u8,
    /// virtio-blk disk: PATH[,ro][,id=SERIAL]; repeatable, in guest order.
    #[arg(long = "disk", value_name = "SPEC", value_parser = spec(|s| parse_disk_spec(s)))]
    disks: Vec<DiskConfig>,
    /// virtio-net on a TAP: tap=NAME[,mac=XX:XX:XX:XX:XX:XX]; repeatable.
    #[arg(long = "net", value_name = "SPEC", value_parser = spec(|s| parse_net_option(s)))]
    nets: Vec<NetSpec>,
    /// Host UNIX socket of a vsock device.
    #[arg(long, value_name = "UDS_PATH")]
    vsock: Option<PathBuf>,
    /// virtio-fs served by a vhost-user backend (virtiofsd): tag=T,socket=PATH;
    /// repeatable, after the vsock device.
    #[arg(long = "fs", value_name = "SPEC", value_parser = spec(|s| parse_fs_spec(s)))]
    fs: Vec<FsConfig>,
    /// Guest context ID of the vsock device.
    #[arg(long, default_value_t = DEFAULT_GUEST_CID)]
    guest_cid: u64,
    /// Console output: stdout, off, or a file path.
    #[arg(long, default_value = "stdout", value_parser = spec(|s| parse_console(s)))]
    console: ConsoleConfig,
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

impl From<RunArgs> for RunPlan {
    fn from(a: RunArgs) -> Self {
        RunPlan {
            kernel: a.kernel,
            initramfs: a.initramfs,
            cmdline: a.cmdline,
            memory_mib: a.memory_mib,
            vcpus: a.cpus,
            disks: a.disks,
            nets: a
                .nets
                .into_iter()
                .enumerate()
                .map(|(i, n)| n.into_config(i))
                .collect(),
            vsock: a.vsock.map(|uds_path| VsockConfig {
                guest_cid: a.guest_cid,
                uds_path,
            }),
            fs: a.fs,
            console: a.console,
            report_boot_time: a.report_boot_time,
            seccomp: !a.no_seccomp,
            api_socket: a.api_socket,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot directory written by `snapshot DIR`.
    #[arg(long, value_name = "DIR")]
    snapshot: PathBuf,
    /// Serve the control API on this UNIX socket.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// Console output: stdout, off, or a file path.
    #[arg(long, default_value = "stdout", value_parser = spec(|s| parse_console(s)))]
    console: ConsoleConfig,
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

impl From<RestoreArgs> for RestorePlan {
    fn from(a: RestoreArgs) -> Self {
        RestorePlan {
            snapshot: a.snapshot,
            api_socket: a.api_socket,
            console: a.console,
            disks: a.disks,
            vsock: a.vsock,
            memory_mib: a.memory_mib,
            paused: a.paused,
            report_boot_time: a.report_boot_time,
            seccomp: !a.no_seccomp,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct VhostVsockArgs {
    /// Guest context ID.
    #[arg(long, default_value_t = DEFAULT_GUEST_CID)]
    guest_cid: u64,
    /// vhost-user socket the front end (QEMU) connects to.
    #[arg(long)]
    socket: PathBuf,
    /// Host UNIX socket for the vsock streams.
    #[arg(long)]
    uds_path: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct VhostBlkArgs {
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

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use skiff_vmm_config::NetConfig;

    use super::*;

    fn parse(args: Vec<OsString>) -> Result<Plan, clap::Error> {
        let argv = std::iter::once(OsString::from("skiff-vmm")).chain(args);
        Cli::try_parse_from(argv).map(Cli::into_plan)
    }

    fn odd(name: &str) -> PathBuf {
        let mut p = b"/odd dir/-x=y/".to_vec();
        p.extend_from_slice(name.as_bytes());
        p.push(0xff);
        PathBuf::from(OsStr::from_bytes(&p))
    }

    #[test]
    fn run_plans_survive_the_command_line() {
        let defaults = RunPlan::new("/k");
        let full = RunPlan {
            kernel: odd("kernel"),
            initramfs: Some(odd("initrd")),
            cmdline: "--not-a-flag console=ttyS0 x=\"a, b\"".into(),
            memory_mib: 4096,
            vcpus: 32,
            disks: vec![
                DiskConfig {
                    path: odd("a.img"),
                    read_only: true,
                    serial: Some("layer0".into()),
                },
                DiskConfig {
                    path: "-rw.img".into(),
                    read_only: false,
                    serial: None,
                },
            ],
            nets: vec![NetConfig {
                tap: "tap0".into(),
                mac: [2, 0x73, 0xa, 0x59, 0, 2],
            }],
            vsock: Some(VsockConfig {
                guest_cid: 42,
                uds_path: odd("v.sock"),
            }),
            fs: vec![FsConfig {
                tag: "data".into(),
                socket: odd("fs.sock"),
            }],
            console: ConsoleConfig::File(odd("console")),
            report_boot_time: true,
            seccomp: false,
            api_socket: Some(odd("api.sock")),
        };
        let off = RunPlan {
            console: ConsoleConfig::Off,
            cmdline: String::new(),
            ..defaults.clone()
        };
        for plan in [defaults, full, off] {
            let args = plan.to_args().unwrap();
            assert_eq!(parse(args).unwrap(), Plan::Run(plan));
        }
    }

    #[test]
    fn other_plans_survive_the_command_line() {
        let restore = RestorePlan {
            snapshot: odd("snap"),
            api_socket: Some(odd("api")),
            console: ConsoleConfig::Off,
            disks: vec![odd("a,b.img"), "-x".into()],
            vsock: Some(odd("v")),
            memory_mib: Some(512),
            paused: true,
            report_boot_time: true,
            seccomp: false,
        };
        let vsock = VhostUserVsockPlan {
            guest_cid: 3,
            socket: odd("s"),
            uds_path: odd("u"),
        };
        let blk = VhostUserBlkPlan {
            socket: odd("s"),
            disk: DiskConfig {
                path: odd("a,b.img"),
                read_only: true,
                serial: Some("rw".into()),
            },
        };
        let plain_blk = VhostUserBlkPlan {
            disk: DiskConfig {
                path: "/d".into(),
                read_only: false,
                serial: None,
            },
            ..blk.clone()
        };
        for plan in [
            Plan::Restore(RestorePlan::new("/s")),
            Plan::Restore(restore),
            Plan::VhostUserVsock(vsock),
            Plan::VhostUserBlk(blk),
            Plan::VhostUserBlk(plain_blk),
        ] {
            let args = match &plan {
                Plan::Run(p) => p.to_args(),
                Plan::Restore(p) => p.to_args(),
                Plan::VhostUserVsock(p) => p.to_args(),
                Plan::VhostUserBlk(p) => p.to_args(),
            }
            .unwrap();
            assert_eq!(parse(args).unwrap(), plan);
        }
    }

    #[test]
    fn bad_specs_are_option_errors() {
        for (flag, value) in [
            ("--disk", "x.img,bogus"),
            ("--net", "tap=t,mac=02:00"),
            ("--fs", "tag=x"),
            ("--console", ""),
        ] {
            let e = Cli::try_parse_from(["skiff-vmm", "run", "--kernel", "/k", flag, value])
                .unwrap_err();
            assert!(spec_error(&e).is_some(), "{flag} {value}: {e}");
        }
        let e =
            Cli::try_parse_from(["skiff-vmm", "run", "--kernel", "/k", "--cpus", "x"]).unwrap_err();
        assert!(spec_error(&e).is_none());
    }

    #[test]
    fn default_macs_follow_the_net_order() {
        let Plan::Run(plan) = Cli::try_parse_from([
            "skiff-vmm",
            "run",
            "--kernel",
            "/k",
            "--net",
            "tap=a",
            "--net",
            "tap=b",
        ])
        .unwrap()
        .into_plan() else {
            panic!("not run")
        };
        assert_eq!(plan.nets[1].mac, skiff_vmm_config::default_mac(1));
    }
}
