//! skiff-sys: the host utilities every host-side crate shares, each written once and
//! reviewed in one place (this crate is where host-side `unsafe` belongs):
//! - [`confine`]: what a VM's host processes take on before they run (no_new_privs,
//!   death with their parent), the first steps of the jail;
//! - [`fdpass`]: an fd sent over a Unix socket (SCM_RIGHTS) with a few bytes, and
//!   received with its control data checked;
//! - [`fds`]: pipes, close-on-exec, an fd handed to a child at a fixed number (and
//!   taken on the other side), poll for readability;
//! - [`files`]: private (0700/0600) directories, files and FIFOs, atomic replacement,
//!   `flock` locks;
//! - [`ids`]: the effective user (root or not);
//! - [`net`]: a UDP socket several processes share (`SO_REUSEPORT`);
//! - [`procfs`]: processes as /proc shows them (state, parent, CPU ticks, start time,
//!   memory, descendants);
//! - [`random`]: bytes and hex IDs from the kernel's CSPRNG;
//! - [`signals`]: signals meant for a container, blocked everywhere and taken by one
//!   forwarding thread; kill(2) of a recorded pid; SIGPIPE's default disposition;
//! - [`time`]: wall-clock times as skiff stores and shows them (RFC 3339, UTC);
//! - [`tty`]: terminals: is-a-tty, window size, raw mode (a guard or for good), new
//!   ptys, the controlling terminal.
//!
//! Leaf crate: it depends on nothing of skiff's, so the image store, the runtime, the
//! daemon, the CLIs and the benchmarks can all use it.

pub mod confine;
pub mod fdpass;
pub mod fds;
pub mod files;
pub mod ids;
pub mod net;
pub mod procfs;
pub mod random;
pub mod signals;
pub mod time;
pub mod tty;
