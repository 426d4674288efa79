//! skiff-runtime: boots a container's microVM and talks to its guest agent.
//!
//! The data path: [`artifacts`] finds the guest kernel and initramfs; [`hypervisor`]
//! picks a backend (skiff's own VMM where the host's KVM boots Linux, QEMU otherwise)
//! and launches it with the layer disks, the writable disk and a vsock device;
//! [`MicroVm::boot`] waits for the agent to dial in and hands back an [`AgentConn`]
//! over which the container is created, its processes run and their stdio flows.

pub mod agent;
pub mod agent_mux;
pub mod artifacts;
pub mod console_log;
pub mod container;
mod error;
pub mod hypervisor;
mod microvm;
pub mod names;
pub mod network;
pub mod oci;
pub mod owner_only;
pub mod relay;
mod rotating;
pub mod snapshot;
mod tools;
pub mod warm;
pub mod writable;

pub use agent::{AgentConn, AgentSender, Event, StartOutcome};
pub use artifacts::GuestArtifacts;
pub use error::{Error, Result};
pub use hypervisor::{Disk, HypervisorKind, NetBackend, NetDevice, Selection, Share};
pub use microvm::{BootTimings, MicroVm, VmConfig, VmSize, VmSnapshot};
pub use snapshot::Snapshot;
pub use warm::{RunOutput, WarmSpec, WarmVm};
