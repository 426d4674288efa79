//! OCI runtime-spec support for `skiff-runtime`: a bundle's config.json turned into a
//! microVM plan ([`bundle`]), and per-container records under the runtime's `--root`
//! ([`state`]), replaced atomically under a per-container lock.

pub mod bundle;
pub mod cgroup;
pub mod guest_hooks;
pub mod hooks;
pub mod mounts;
pub mod netns;
pub mod process;
pub mod seccomp;
pub mod state;
mod syscalls_i386;
mod syscalls_x86_64;
pub mod vmctl;

pub use bundle::Bundle;
pub use mounts::{BundleShare, Mounts};
pub use state::{Record, Status, Store};

/// The runtime-spec version skiff-runtime implements.
pub const SPEC_VERSION: &str = "1.1.0";
