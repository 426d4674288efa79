//! The container lifecycle every front end drives, written once: [`create()`]
//! (admission, the image reference and the network lease under one rollback guard),
//! [`start()`] (a detached supervisor, waited on until the container runs or fails to),
//! [`stop()`] and [`kill()`], [`remove()`] and [`prune()`], [`wait_exited`] and
//! [`usage()`]; [`supervise()`] is the detached process `start` spawns. The CLI, skiffd and
//! (next) the containerd shim call these and only turn their typed errors into exit
//! codes or statuses.

mod create;
mod prune;
mod remove;
mod start;
mod stop;
mod supervise;
mod usage;
mod wait;

pub use crate::error::StartFailure;
pub use create::{create, Create};
pub use prune::{prune, Pruned};
pub use remove::remove;
pub use start::{spawn_supervisor, start, Starting, SupervisorCommand};
pub use stop::{kill, stop};
pub use supervise::supervise;
pub use usage::{usage, Usage};
pub use wait::wait_exited;

#[cfg(test)]
mod tests;
