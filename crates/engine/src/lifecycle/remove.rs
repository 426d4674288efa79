//! `rm`: the record, its writable layer, its image reference and its network lease go;
//! with `force` a running container is killed first.

use skiff_image::Store;
use skiff_plugins::EventKind;
use skiff_runtime::container::Containers;
use skiff_runtime::network::{NetworkMode, Networks};

use super::start::busy;
use super::stop;
use crate::{policy, Error, Result};

pub fn remove(containers: &Containers, store: &Store, id: &str, force: bool) -> Result<()> {
    let st = containers.state(id)?;
    if busy(&st) {
        if !force {
            return Err(Error::Running { id: id.to_owned() });
        }
        stop(containers, id, libc::SIGKILL, 0)?;
    }
    let spec = containers.spec(id).ok();
    containers.remove(id)?;
    store.release_image(id)?;
    if let Some(spec) = spec {
        if matches!(spec.network, NetworkMode::Network(_)) {
            Networks::open()?.detach(id)?;
        }
        policy::get()?.event(containers, &spec, EventKind::Removed);
    }
    Ok(())
}
