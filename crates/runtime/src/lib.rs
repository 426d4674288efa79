//! skiff-runtime: everything on the host side of a container, in three layers, each a
//! module of its own:
//! - [`vm`]: one microVM and its guest agent (backends, boot, snapshots, warm VMs);
//! - [`network`]: host networking (bridges, TAPs, leases, DNS, firewall, passt);
//! - [`container`] and [`oci`]: containers as records with one supervisor each, and OCI
//!   bundles as skiff-runtime (the runc-compatible CLI) receives them.
//!
//! [`names`], [`owner_only`] and the error type are shared by all three.

pub mod container;
mod error;
pub mod names;
pub mod network;
pub mod oci;
pub mod owner_only;
mod rotating;
mod tools;
pub mod vm;

pub use error::{Error, Result};
pub use vm::{
    AgentConn, AgentSender, BootTimings, Disk, Event, GuestArtifacts, HypervisorKind, MicroVm,
    NetBackend, NetDevice, RunOutput, Selection, Share, Snapshot, StartOutcome, VmConfig, VmSize,
    VmSnapshot, WarmSpec, WarmVm,
};
