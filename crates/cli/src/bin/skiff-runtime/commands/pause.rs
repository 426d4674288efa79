//! `pause` and `resume`: the VM's vCPUs stopped and started.

use super::*;

/// pause/resume: the VM's vCPUs stop or continue (QMP `stop`/`cont` on QEMU, the API
/// socket's `pause`/`resume` on skiff-vmm).
pub(super) fn pause(store: &Store, id: &str, pause: bool) -> Result<()> {
    let lock = store.lock(id)?;
    let mut rec = lock.load()?;
    match (rec.status(), pause) {
        (Status::Running, true) | (Status::Paused, false) => {}
        (_, true) => bail!("container not running"),
        (_, false) => bail!("container not paused"),
    }
    skiff_runtime::oci::vmctl::set_paused(&rec, pause)?;
    rec.paused = pause;
    lock.save(&rec)?;
    Ok(())
}
