//! KVM objects: the VM (memory slots, irqchip, PIT) and its vCPUs.

pub mod control;
pub mod memory;
pub mod vcpu;
pub mod vm;
