//! The VM layer: one microVM with its guest agent, whatever runs in it.
//!
//! [`artifacts`] finds the guest kernel and initramfs; [`hypervisor`] picks a backend
//! (skiff's own VMM where the host's KVM boots Linux, QEMU otherwise) and launches it
//! with its disks, shares, network devices and vsock; [`MicroVm::boot`] waits for the
//! agent to dial in and hands back an [`AgentConn`] over which the container is
//! created, its processes run and their stdio flows ([`relay`]). [`snapshot`] saves and
//! restores booted VMs, [`warm`] keeps VMs ready for one-shot invocations.

pub mod agent;
pub mod agent_mux;
pub mod artifacts;
pub mod console_log;
pub mod forward;
pub mod hypervisor;
pub(crate) mod microvm;
pub mod relay;
pub mod snapshot;
pub mod warm;
pub mod writable;

pub use agent::{AgentConn, AgentSender, Event, StartOutcome};
pub use artifacts::GuestArtifacts;
pub use hypervisor::{Disk, HypervisorKind, NetBackend, NetDevice, Selection, Share};
pub use microvm::{BootTimings, MicroVm, VmConfig, VmSize, VmSnapshot, SCRATCH_PREFIX};
pub use snapshot::Snapshot;
pub use warm::{RunOutput, WarmSpec, WarmVm};
