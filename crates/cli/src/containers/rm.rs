//! `rm`: the record, its writable layer and its image reference go; `-f` stops it first.

use std::time::Duration;

use anyhow::{bail, Result};
use skiff_image::Store;
use skiff_plugins::EventKind;
use skiff_runtime::container::{Containers, ControlRequest, Status};
use skiff_runtime::network::{NetworkMode, Networks};

use super::*;

pub(super) fn remove(c: &Containers, store: &Store, id: &str, force: bool) -> Result<()> {
    let st = c.state(id)?;
    let busy = st.is_running() || (st.status == Status::Created && st.pid.is_some());
    if busy && !force {
        bail!(
            "cannot remove container {}: it is running; stop it first or use rm -f",
            &id[..12]
        );
    }
    if busy {
        if st.is_running() {
            let _ = control(
                c,
                id,
                ControlRequest::Stop {
                    signal: libc::SIGKILL,
                    grace_ms: 0,
                },
            );
        }
        if wait_exited(c, id, Some(Duration::from_secs(20))).is_err() {
            kill_supervisor(c, id)?;
        }
    }
    let spec = c.spec(id).ok();
    c.remove(id)?;
    store.release_image(id)?;
    if spec
        .as_ref()
        .is_some_and(|s| matches!(s.network, NetworkMode::Network(_)))
    {
        Networks::open()?.detach(id)?;
    }
    if let Some(spec) = spec {
        skiff_engine::policy::get()?.event(c, &spec, EventKind::Removed);
    }
    Ok(())
}
