//! Plain configuration of a microVM, independent of how it was given (CLI, runtime).
//!
//! The device options and their parsers are skiff-vmm-config's (shared with the
//! runtime, which writes them); [`VmConfig`] is what the builder needs of a
//! [`RunPlan`].

pub use skiff_vmm_config::{
    parse_console, parse_disk_spec, parse_fs_spec, parse_net_spec, ConsoleConfig, DiskConfig,
    FsConfig, NetConfig, RestorePlan, RunPlan, SpecError, VsockConfig, DEFAULT_CMDLINE,
};

/// Most vCPUs (bounded by the MP table fitting in the EBDA).
pub const MAX_VCPUS: u8 = 32;

/// Everything needed to build and boot one microVM: the plan `skiff-vmm run` was given
/// (the API socket is the run loop's business).
pub type VmConfig = RunPlan;
