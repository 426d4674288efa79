//! A runc-style record's VM, controlled through whichever channel its backend has
//! (both recorded in the state; see `hypervisor::control`).

use super::Record;
use crate::vm::hypervisor::control::VmControl;
use crate::{Error, Result};

fn control(rec: &Record) -> Result<VmControl<'_>> {
    match (&rec.qmp, &rec.vmm_api) {
        (Some(socket), _) => Ok(VmControl::Qmp {
            socket,
            balloon: rec.balloon,
        }),
        (None, Some(socket)) => Ok(VmControl::VmmApi { socket }),
        (None, None) => Err(Error::Unsupported(
            "this container's VM has no control socket to pause or resume it".into(),
        )),
    }
}

/// Stops (`pause`) or continues the VM's vCPUs.
pub fn set_paused(rec: &Record, pause: bool) -> Result<()> {
    control(rec)?.set_paused(pause)
}

/// Sets the memory the guest may use to `mib` through the balloon (QEMU backend).
pub fn set_memory(rec: &Record, mib: u32) -> Result<()> {
    control(rec)?.set_memory(mib)
}
