//! The skiff-vmm command line as types: the runtime builds a plan and turns it into
//! arguments; skiff-vmm parses the same arguments back into it.
//!
//! [`options`] holds the device options (`--disk`, `--net`, `--fs`, `--console`, the
//! vsock device) with their parsers and the formatting that is their exact inverse;
//! [`plan`] holds one plan per `skiff-vmm` subcommand ([`RunPlan`], [`RestorePlan`],
//! [`VhostUserVsockPlan`], [`VhostUserBlkPlan`]), each with `to_args`. Formatting
//! refuses what would not parse back to the same value (a comma in a disk path, say)
//! instead of writing something that means something else.
//!
//! Paths stay `PathBuf`/`OsString` throughout: nothing is converted lossily.

pub mod options;
pub mod plan;

pub use options::{
    default_mac, format_mac, parse_console, parse_disk_spec, parse_fs_spec, parse_mac,
    parse_net_option, parse_net_spec, ConsoleConfig, DiskConfig, FsConfig, NetConfig, NetSpec,
    SpecError, VsockConfig, MAX_DISK_ID_LEN, MAX_FS_TAG_LEN, MAX_TAP_LEN,
};
pub use plan::{
    RestorePlan, RunPlan, VhostUserBlkPlan, VhostUserVsockPlan, DEFAULT_CMDLINE, DEFAULT_GUEST_CID,
    DEFAULT_MEMORY_MIB, DEFAULT_VCPUS,
};
