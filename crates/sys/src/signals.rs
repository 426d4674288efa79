//! Signals a supervisor or proxy receives are meant for the container: they are blocked
//! in every thread and one thread takes them with sigwait and hands them on.

use std::io;

fn set_of(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; invalid signal numbers are ignored (EINVAL).
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Blocks `signals` in the calling thread; threads spawned later inherit the mask (call
/// it before any thread starts). Child processes do not: std resets the mask before exec.
pub fn block(signals: &[i32]) -> io::Result<()> {
    let set = set_of(signals);
    // SAFETY: set is a valid sigset_t; the old mask is not needed.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Calls `on_signal` for each of `signals` (blocked with [`block`]) on a background
/// thread, for the life of the process.
pub fn spawn_forwarder(signals: &'static [i32], on_signal: impl Fn(i32) + Send + 'static) {
    std::thread::spawn(move || {
        let set = set_of(signals);
        loop {
            let mut sig = 0;
            // SAFETY: set and sig are valid; the signals are blocked in this thread.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                on_signal(sig);
            }
        }
    });
}
