//! Signals skiff receives are for the container: they are blocked in every thread and
//! a dedicated thread picks them up with sigwait and hands them on (`skiff_sys::signals`).

use std::io;

/// What a foreground container gets forwarded, as `docker run` does (`SIGWINCH` is
/// turned into a window-size change by the caller).
pub const FORWARDED: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Blocks the forwarded signals in the calling thread; threads spawned later inherit
/// the mask. Child processes do not (std resets the mask before exec).
pub fn block() -> io::Result<()> {
    skiff_sys::signals::block(&FORWARDED)
}

/// Calls `on_signal` for every forwarded signal, on a background thread.
pub fn spawn_forwarder(on_signal: impl Fn(i32) + Send + 'static) {
    skiff_sys::signals::spawn_forwarder(&FORWARDED, on_signal);
}
