//! One plan per `skiff-vmm` subcommand, each turned into that subcommand's arguments by
//! `to_args` (every value as one `--name=value` argument, so a value starting with `-`
//! is never read as a flag).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::options::{flag, path_flag, ConsoleConfig, DiskConfig, FsConfig, NetConfig, SpecError};
use crate::VsockConfig;

/// Kernel command line of `run` when none is given.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd";
/// Guest RAM of `run` when none is given (MiB).
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// vCPUs of `run` when none is given.
pub const DEFAULT_VCPUS: u8 = 1;
/// Guest context ID of the vsock device when none is given.
pub const DEFAULT_GUEST_CID: u64 = 3;

/// An argument list being written.
struct Args(Vec<OsString>);

impl Args {
    fn new(subcommand: &str) -> Self {
        Self(vec![subcommand.into()])
    }

    fn flags() -> Self {
        Self(Vec::new())
    }

    fn value(&mut self, name: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.0.push(flag(name, value));
        self
    }

    /// `--name=PATH`; an empty path would not parse back.
    fn path(&mut self, name: &'static str, path: &Path) -> Result<&mut Self, SpecError> {
        if path.as_os_str().is_empty() {
            return Err(SpecError::Unwritable {
                what: name,
                value: String::new(),
                why: "it is empty",
            });
        }
        self.0.push(path_flag(name, path));
        Ok(self)
    }

    fn switch(&mut self, name: &str, on: bool) -> &mut Self {
        if on {
            self.0.push(format!("--{name}").into());
        }
        self
    }
}

/// Everything `skiff-vmm run` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    /// ELF vmlinux (or test guest ELF) or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs (cpio, possibly compressed).
    pub initramfs: Option<PathBuf>,
    /// Kernel command line; virtio-mmio devices are appended to it.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// virtio-blk disks, in order (the guest sees vda, vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// virtio-net devices, in order (after the disks).
    pub nets: Vec<NetConfig>,
    /// Optional vsock device (after disks and nets).
    pub vsock: Option<VsockConfig>,
    /// virtio-fs devices served by vhost-user backends (after vsock).
    pub fs: Vec<FsConfig>,
    /// Console destination.
    pub console: ConsoleConfig,
    /// Print the boot-timer result on stderr.
    pub report_boot_time: bool,
    /// Install the per-thread seccomp filters.
    pub seccomp: bool,
    /// Serve the control API on this UNIX socket.
    pub api_socket: Option<PathBuf>,
}

impl RunPlan {
    /// A plan booting `kernel` with what `skiff-vmm run` does by default.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initramfs: None,
            cmdline: DEFAULT_CMDLINE.to_owned(),
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: DEFAULT_VCPUS,
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            fs: Vec::new(),
            console: ConsoleConfig::Stdout,
            report_boot_time: false,
            seccomp: true,
            api_socket: None,
        }
    }

    /// `run` and its flags, every setting written out; refuses values that would not
    /// parse back to the same plan.
    pub fn to_args(&self) -> Result<Vec<OsString>, SpecError> {
        let mut a = Args::new("run");
        a.path("kernel", &self.kernel)?;
        if let Some(initramfs) = &self.initramfs {
            a.path("initramfs", initramfs)?;
        }
        a.value("cmdline", &self.cmdline)
            .value("memory-mib", self.memory_mib.to_string())
            .value("cpus", self.vcpus.to_string());
        for d in &self.disks {
            a.value("disk", d.to_arg()?);
        }
        for n in &self.nets {
            a.value("net", n.to_arg()?);
        }
        if let Some(v) = &self.vsock {
            a.path("vsock", &v.uds_path)?
                .value("guest-cid", v.guest_cid.to_string());
        }
        for f in &self.fs {
            a.value("fs", f.to_arg()?);
        }
        a.value("console", self.console.to_arg()?)
            .switch("report-boot-time", self.report_boot_time)
            .switch("no-seccomp", !self.seccomp);
        if let Some(api) = &self.api_socket {
            a.path("api-socket", api)?;
        }
        Ok(a.0)
    }
}

/// Everything `skiff-vmm restore` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// Snapshot directory written by `snapshot DIR`.
    pub snapshot: PathBuf,
    /// Serve the control API on this UNIX socket.
    pub api_socket: Option<PathBuf>,
    /// Console destination.
    pub console: ConsoleConfig,
    /// Disk images replacing the saved paths, in the order of the saved disks.
    pub disks: Vec<PathBuf>,
    /// vsock host socket replacing the saved one.
    pub vsock: Option<PathBuf>,
    /// Refuse the snapshot unless its guest has this much memory (MiB).
    pub memory_mib: Option<u64>,
    /// Leave the vCPUs stopped until `resume` arrives on the API socket.
    pub paused: bool,
    /// Print restore and guest markers on stderr.
    pub report_boot_time: bool,
    /// Install the per-thread seccomp filters.
    pub seccomp: bool,
}

impl RestorePlan {
    /// A plan restoring `snapshot` with what `skiff-vmm restore` does by default.
    pub fn new(snapshot: impl Into<PathBuf>) -> Self {
        Self {
            snapshot: snapshot.into(),
            api_socket: None,
            console: ConsoleConfig::Stdout,
            disks: Vec::new(),
            vsock: None,
            memory_mib: None,
            paused: false,
            report_boot_time: false,
            seccomp: true,
        }
    }

    /// `restore` and its flags (disk paths are whole values here: commas are fine).
    pub fn to_args(&self) -> Result<Vec<OsString>, SpecError> {
        let mut a = Args::new("restore");
        a.path("snapshot", &self.snapshot)?;
        if let Some(api) = &self.api_socket {
            a.path("api-socket", api)?;
        }
        a.value("console", self.console.to_arg()?);
        for d in &self.disks {
            a.path("disk", d)?;
        }
        if let Some(v) = &self.vsock {
            a.path("vsock", v)?;
        }
        if let Some(m) = self.memory_mib {
            a.value("memory-mib", m.to_string());
        }
        a.switch("paused", self.paused)
            .switch("report-boot-time", self.report_boot_time)
            .switch("no-seccomp", !self.seccomp);
        Ok(a.0)
    }
}

/// `skiff-vmm vhost-user-vsock`: skiff's vsock model served over vhost-user. Its flags
/// are those of `vhost-device-vsock`, which takes [`VhostUserVsockPlan::flags`] too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserVsockPlan {
    /// Guest context ID.
    pub guest_cid: u64,
    /// vhost-user socket the front end (QEMU) connects to.
    pub socket: PathBuf,
    /// Host UNIX socket for the vsock streams.
    pub uds_path: PathBuf,
}

impl VhostUserVsockPlan {
    /// `vhost-user-vsock` and its flags.
    pub fn to_args(&self) -> Result<Vec<OsString>, SpecError> {
        let mut args = vec![OsString::from("vhost-user-vsock")];
        args.extend(self.flags()?);
        Ok(args)
    }

    /// The flags alone, for a daemon that is its own command (`vhost-device-vsock`).
    pub fn flags(&self) -> Result<Vec<OsString>, SpecError> {
        let mut a = Args::flags();
        a.value("guest-cid", self.guest_cid.to_string())
            .path("socket", &self.socket)?
            .path("uds-path", &self.uds_path)?;
        Ok(a.0)
    }
}

/// `skiff-vmm vhost-user-blk`: skiff's block model served over vhost-user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserBlkPlan {
    /// vhost-user socket the front end (QEMU) connects to.
    pub socket: PathBuf,
    /// The disk served (its path is a whole value here: commas are fine).
    pub disk: DiskConfig,
}

impl VhostUserBlkPlan {
    /// `vhost-user-blk` and its flags.
    pub fn to_args(&self) -> Result<Vec<OsString>, SpecError> {
        let mut a = Args::new("vhost-user-blk");
        a.path("socket", &self.socket)?
            .path("disk", &self.disk.path)?
            .switch("readonly", self.disk.read_only);
        if let Some(id) = &self.disk.serial {
            a.value("id", id);
        }
        Ok(a.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn run_writes_every_setting() {
        let mut plan = RunPlan::new("/k");
        plan.disks.push(DiskConfig {
            path: "/d.img".into(),
            read_only: true,
            serial: Some("layer0".into()),
        });
        plan.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: "/v.sock".into(),
        });
        plan.seccomp = false;
        assert_eq!(
            strings(plan.to_args().unwrap()),
            [
                "run",
                "--kernel=/k",
                &format!("--cmdline={DEFAULT_CMDLINE}"),
                "--memory-mib=128",
                "--cpus=1",
                "--disk=/d.img,ro,id=layer0",
                "--vsock=/v.sock",
                "--guest-cid=3",
                "--console=stdout",
                "--no-seccomp",
            ]
        );
    }

    #[test]
    fn run_refuses_unwritable_values() {
        let mut plan = RunPlan::new("/k");
        plan.disks.push(DiskConfig {
            path: "/a,b.img".into(),
            read_only: false,
            serial: None,
        });
        assert!(plan.to_args().is_err());
        assert!(RunPlan::new("").to_args().is_err());
        let mut plan = RunPlan::new("/k");
        plan.api_socket = Some(PathBuf::new());
        assert!(plan.to_args().is_err());
    }

    #[test]
    fn vhost_user_args() {
        let vsock = VhostUserVsockPlan {
            guest_cid: 3,
            socket: "/s".into(),
            uds_path: "/u".into(),
        };
        assert_eq!(
            strings(vsock.to_args().unwrap()),
            [
                "vhost-user-vsock",
                "--guest-cid=3",
                "--socket=/s",
                "--uds-path=/u"
            ]
        );
        let blk = VhostUserBlkPlan {
            socket: "/s".into(),
            disk: DiskConfig {
                path: "/a,b.img".into(),
                read_only: true,
                serial: Some("rw".into()),
            },
        };
        assert_eq!(
            strings(blk.to_args().unwrap()),
            [
                "vhost-user-blk",
                "--socket=/s",
                "--disk=/a,b.img",
                "--readonly",
                "--id=rw"
            ]
        );
    }
}
