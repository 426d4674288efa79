//! Signals skiff receives are for the container: they are blocked in every thread and
//! a dedicated thread picks them up with sigwait and hands them on.

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

fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Blocks the forwarded signals in the calling thread; threads spawned later inherit
/// the mask. Child processes do not (std resets the mask before exec).
pub fn block() -> io::Result<()> {
    let set = forwarded_set();
    // SAFETY: set is a valid sigset_t; the old mask is not needed.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Calls `on_signal` for every forwarded signal, on a background thread.
pub fn spawn_forwarder(on_signal: impl Fn(i32) + Send + 'static) {
    std::thread::spawn(move || {
        let set = forwarded_set();
        loop {
            let mut sig = 0;
            // SAFETY: set and sig are valid; the signals are blocked in this thread.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                on_signal(sig);
            }
        }
    });
}
