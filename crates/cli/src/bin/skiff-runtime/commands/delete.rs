//! `delete`: the record and everything the container held on the host go; `--force` kills it first.

use super::*;

pub(super) fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    records::check_id(id)?;
    let lock = store.lock(id)?;
    if !lock.exists() {
        if force {
            let _ = lock.remove();
            return Ok(());
        }
        bail!("container {id} does not exist");
    }
    let rec = lock.load()?;
    let status = rec.status();
    match status {
        Status::Running | Status::Paused if !force => {
            bail!("cannot delete container {id} that is not stopped: {status}")
        }
        Status::Created | Status::Running | Status::Paused => {
            if let Some(pid) = rec.pid {
                if records::process_alive(pid, rec.pid_start) {
                    kill_and_wait(pid);
                }
            }
        }
        Status::Creating | Status::Stopped => {}
    }
    if let Ok(b) = admission::load_admitted(&rec.bundle, lock.dir()) {
        let mut st = rec.oci_state();
        st["status"] = "stopped".into();
        if let Err(e) = hooks::run_all("poststop", &hook_list(&b, |h| h.poststop().clone()), &st) {
            tracing::warn!("{e}");
        }
    }
    if let Some(dir) = &rec.cgroup {
        CpuCgroup { dir: dir.clone() }.remove();
    }
    records::Lock::remove_vm_dir(&rec);
    admission::event(lock.dir(), id, EventKind::Removed);
    lock.remove()?;
    Ok(())
}
