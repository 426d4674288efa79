//! `create`: a container record from a spec the front end assembled, admitted by the
//! plugins, holding its image and its network lease; all or nothing.

use skiff_image::Store;
use skiff_plugins::EventKind;
use skiff_runtime::container::{ContainerSpec, Containers};
use skiff_runtime::network::{NetworkMode, Networks, PortMapping};

use crate::{policy, Result};

/// What a front end asks to create.
pub struct Create<'a> {
    /// The container as asked for; `id`, `created_ms` (and an empty name or hostname)
    /// are filled in.
    pub spec: ContainerSpec,
    /// The image's config, as the plugins see it.
    pub image_config: &'a serde_json::Value,
    /// Ports to lease on the container's named network (ignored without one).
    pub ports: Vec<PortMapping>,
}

/// Records the container once the plugins admitted it (their adjustments applied) and
/// `after_admission` (the front end's own last word: a tenant's labels, a snapshot's
/// size) agreed, marks its image in use and leases its network. A failure at any step
/// undoes the steps before it.
pub fn create(
    containers: &Containers,
    store: &Store,
    req: Create<'_>,
    after_admission: impl FnOnce(&mut ContainerSpec) -> Result<()>,
) -> Result<ContainerSpec> {
    let policy = policy::get()?;
    let spec = containers.create_admitted(req.spec, |spec| {
        policy.admit_container(spec, req.image_config)?;
        after_admission(spec)
    })?;
    let mut undo = Rollback {
        containers,
        store,
        id: &spec.id,
        image: false,
        network: false,
    };
    // The image store keeps the image while the container exists.
    store.use_image(&spec.id, &spec.image_id)?;
    undo.image = true;
    if let NetworkMode::Network(name) = &spec.network {
        Networks::open()?.attach(
            name,
            &spec.id,
            &spec.name,
            &containers.dir_of(&spec.id),
            req.ports,
            spec.egress,
        )?;
        undo.network = true;
    }
    std::mem::forget(undo);
    policy.event(containers, &spec, EventKind::Created);
    Ok(spec)
}

/// Undoes a half-made container when dropped: its lease, its image reference, its
/// record. Forgotten once the container is complete.
struct Rollback<'a> {
    containers: &'a Containers,
    store: &'a Store,
    id: &'a str,
    image: bool,
    network: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.network {
            if let Err(e) = Networks::open().and_then(|n| n.detach(self.id)) {
                tracing::warn!("undo the network lease of {}: {e}", self.id);
            }
        }
        if self.image {
            if let Err(e) = self.store.release_image(self.id) {
                tracing::warn!("undo the image reference of {}: {e}", self.id);
            }
        }
        if let Err(e) = self.containers.remove(self.id) {
            tracing::warn!("undo the record of {}: {e}", self.id);
        }
    }
}
