//! `supervise`: the detached host process of one container (`skiff supervise ID`,
//! `skiffd supervise ID`), which [`super::start`] spawns. It owns the container's VM
//! until it powers off, forwards the signals it receives to the container's process,
//! tells the plugins the container started and exited, and removes an `--rm`
//! container.

use skiff_image::Store;
use skiff_plugins::EventKind;
use skiff_runtime::container::{Containers, Supervisor, MAIN_STREAM};
use skiff_runtime::vm::forward::{self, SignalTarget};

use super::remove;
use crate::{policy, Error, Result};

/// Runs container `id` until its VM powers off; its exit code.
pub fn supervise(containers: &Containers, store: &Store, id: &str) -> Result<i32> {
    forward::block().map_err(|source| Error::Io {
        context: "block the forwarded signals".into(),
        source,
    })?;
    let target = SignalTarget::spawn(MAIN_STREAM, false);
    let sup = Supervisor::start(containers, id)?;
    target.set(sup.sender(), MAIN_STREAM);
    let spec = sup.spec().clone();
    let policy = policy::get()?;
    if sup.start_failure().is_none() {
        policy.event(containers, &spec, EventKind::Started);
    }
    let code = sup.wait(None)?;
    policy.event(containers, &spec, EventKind::Exited(code));
    if spec.auto_remove {
        remove(containers, store, id, true)?;
    }
    Ok(code)
}
