//! skiff-sys: the host utilities every host-side crate shares, each written once and
//! reviewed in one place (this crate is where host-side `unsafe` belongs):
//! - [`confine`]: what a VM's host processes take on before they run (no_new_privs,
//!   death with their parent), the first steps of the jail;
//! - [`files`]: private (0700/0600) directories and files, atomic replacement,
//!   `flock` locks;
//! - [`procfs`]: processes as /proc shows them (state, parent, CPU ticks, start time,
//!   memory, descendants);
//! - [`signals`]: signals meant for a container, blocked everywhere and taken by one
//!   forwarding thread;
//! - [`time`]: wall-clock times as skiff stores and shows them (RFC 3339, UTC).
//!
//! Leaf crate: it depends on nothing of skiff's, so the image store, the runtime, the
//! daemon, the CLIs and the benchmarks can all use it.

pub mod confine;
pub mod files;
pub mod procfs;
pub mod signals;
pub mod time;
