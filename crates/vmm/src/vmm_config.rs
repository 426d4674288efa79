//! Plain configuration of a microVM, independent of how it was given (CLI, runtime).
//!
//! The device options and their parsers are skiff-vmm-config's (shared with the
//! runtime, which writes them); [`VmConfig`] is what the builder needs of a
//! [`RunPlan`].

use std::path::PathBuf;

pub use skiff_vmm_config::{
    parse_console, parse_disk_spec, parse_fs_spec, parse_net_spec, ConsoleConfig, DiskConfig,
    FsConfig, NetConfig, RestorePlan, RunPlan, SpecError, VsockConfig, DEFAULT_CMDLINE,
};

/// Most vCPUs (bounded by the MP table fitting in the EBDA).
pub const MAX_VCPUS: u8 = 32;

/// Everything needed to build and boot one microVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
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
    /// virtio-fs devices served by vhost-user backends (after vsock). Guest RAM is a
    /// shared memfd when there is any.
    pub fs: Vec<FsConfig>,
    /// Console destination.
    pub console: ConsoleConfig,
    /// Print the boot-timer result on stderr.
    pub report_boot_time: bool,
    /// Install the per-thread seccomp filters (see [`crate::seccomp`]).
    pub seccomp: bool,
}

impl From<&RunPlan> for VmConfig {
    /// The VM of `skiff-vmm run`; the plan's API socket is the run loop's business.
    fn from(plan: &RunPlan) -> Self {
        Self {
            kernel: plan.kernel.clone(),
            initramfs: plan.initramfs.clone(),
            cmdline: plan.cmdline.clone(),
            memory_mib: plan.memory_mib,
            vcpus: plan.vcpus,
            disks: plan.disks.clone(),
            nets: plan.nets.clone(),
            vsock: plan.vsock.clone(),
            fs: plan.fs.clone(),
            console: plan.console.clone(),
            report_boot_time: plan.report_boot_time,
            seccomp: plan.seccomp,
        }
    }
}
