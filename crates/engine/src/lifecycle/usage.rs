//! `stats`: what a container's microVM costs the host, as its supervisor's process tree
//! shows it (the VMM, the device daemons, the supervisor).

use skiff_runtime::container::{ContainerSpec, ContainerState};

/// One reading of a container's host usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time of the whole process tree, in clock ticks (see `cpu_seconds`).
    pub cpu_ticks: u64,
    /// Proportional set size of the tree, in bytes.
    pub pss_bytes: u64,
    /// The VM's memory size, in bytes: the limit the usage is shown against.
    pub limit_bytes: u64,
}

impl Usage {
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks as f64 / skiff_sys::procfs::clock_ticks() as f64
    }
}

/// The usage of a container now; zero when it is not running.
pub fn usage(spec: &ContainerSpec, st: &ContainerState) -> Usage {
    let (cpu_ticks, pss_bytes) = st
        .pid
        .filter(|_| st.is_running())
        .map_or((0, 0), skiff_sys::procfs::tree_usage);
    Usage {
        cpu_ticks,
        pss_bytes,
        limit_bytes: u64::from(spec.memory_mib) << 20,
    }
}
