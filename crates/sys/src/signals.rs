//! Signals: those a supervisor or proxy receives are meant for the container, so they
//! are blocked in every thread and one thread takes them with sigwait and hands them
//! on; signals sent to a recorded pid; and SIGPIPE's disposition for commands that
//! print into pipes.

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

/// Sends `sig` to process `pid` (kill(2)); a pid that does not fit a pid_t, or 0, is
/// refused rather than turned into a process-group or broadcast kill.
pub fn send(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill(2) of one positive pid; no memory is involved.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores SIGPIPE's default disposition (the Rust runtime ignores it), so a command
/// whose output goes into a pipe closed early (`skiff ps | head -1`) ends quietly, as
/// any Unix tool does, instead of failing (or panicking in `println!`) at its next
/// write. Call it before any thread starts.
pub fn default_sigpipe() -> io::Result<()> {
    // SAFETY: installs the default disposition, no handler runs; signal(2) fails only
    // for an invalid signal number.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_refuses_group_and_broadcast_pids() {
        assert!(send(0, 0).is_err());
        assert!(send(u32::MAX, 0).is_err());
        assert!(send(std::process::id(), 0).is_ok());
    }
}
