//! skiff-engine: the container use cases every front end shares, so `skiff`,
//! `skiff-runtime` and `skiffd` (and next the containerd shim and `skiff build`) apply
//! one set of rules instead of each its own copy:
//! - [`run_config`]: an image config plus what the caller asked for becomes the
//!   container's process (Entrypoint/Cmd, Env, WorkingDir, User, StopSignal, labels),
//!   as Docker defines it;
//! - [`policy`]: the WebAssembly plugins' admission of images and containers and
//!   their lifecycle events;
//! - [`lifecycle`]: create, start, stop, kill, remove and wait, each with its rollback
//!   and its typed failures.
//!
//! Errors are typed ([`Error`]): front ends map them to exit codes, HTTP statuses or
//! ttrpc errors by kind, never by message text.

mod error;
pub mod lifecycle;
pub mod policy;
pub mod run_config;

pub use error::{Error, Result, StartFailure};
