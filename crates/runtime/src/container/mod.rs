//! Containers as records on disk and the one host process that runs each of them.
//!
//! A container is a directory `<root>/containers/<id>/` holding its immutable
//! [`ContainerSpec`] (`spec.json`), its mutable [`ContainerState`] (`state.json`,
//! replaced atomically under the container's lock), its writable-layer disk (`rw.img`)
//! and its log (`log.json`). While it runs, one [`supervisor`] process owns the microVM
//! and the main agent connection; other clients reach the container through the
//! supervisor's control socket (signals, stop) or through the VM's vsock socket (exec).

pub mod changes;
mod control;
mod detach;
mod helper_watch;
mod logfile;
pub(crate) mod records;
pub mod session;
pub mod supervisor;
pub mod trace;

pub use changes::{export_changes, ChangesStream};
pub use control::{request as control_request, serve as serve_control, ControlRequest};
pub use helper_watch::HelperWatch;
pub use logfile::{read_from as read_log_from, read_log, LogEntry, LogStream, LogWriter};
pub use records::{
    process_start_ticks, Bind, BootSettings, ContainerSpec, ContainerState, Containers, StateLock,
    Status, STATE_ERROR_GONE,
};
pub use session::{Exit, Session, MAIN_STREAM};
pub use skiff_sys::time::{now_ms, rfc3339_ms};
pub use supervisor::Supervisor;
