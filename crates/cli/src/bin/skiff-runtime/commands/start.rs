//! `start`: the created container's process started through its supervisor, then the poststart hooks.

use super::*;

pub(super) fn start(store: &Store, id: &str) -> Result<()> {
    let rec = store.lock(id)?.load()?;
    match rec.status() {
        Status::Created => {}
        Status::Running | Status::Paused => bail!("cannot start an already running container"),
        Status::Stopped => bail!("cannot start a container that has stopped"),
        Status::Creating => bail!("cannot start a container that is still being created"),
    }
    control(&rec, ControlRequest::Start)?;
    admission::event(&store.dir(id), id, EventKind::Started);
    if let Ok(b) = admission::load_admitted(&rec.bundle, &store.dir(id)) {
        let st = store.lock(id)?.load()?.oci_state();
        if let Err(e) = hooks::run_all("poststart", &hook_list(&b, |h| h.poststart().clone()), &st)
        {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}
