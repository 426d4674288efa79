//! PID 1 reaps every process in the VM. One thread owns SIGCHLD (through a signalfd)
//! and hands each exit status to whoever registered that pid; orphans are reaped and
//! forgotten.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, MutexGuard, OnceLock};

use skiff_proto::ExitStatus;

use crate::sys::check;

#[derive(Default)]
pub struct Registry {
    waiters: HashMap<i32, Sender<ExitStatus>>,
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

fn registry() -> MutexGuard<'static, Registry> {
    let m = REGISTRY.get_or_init(|| Mutex::new(Registry::default()));
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks SIGCHLD for the calling thread (and so every thread spawned after it) and
/// starts the reaper. Must run before any other thread exists.
pub fn start() -> io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; these calls only write it / the thread mask.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        check(libc::pthread_sigmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        check(libc::signalfd(-1, &set, libc::SFD_CLOEXEC))?
    };
    std::thread::spawn(move || loop {
        let mut info = [0u8; 128];
        // SAFETY: info is a writable buffer of the size signalfd requires.
        let n = unsafe { libc::read(fd, info.as_mut_ptr().cast(), info.len()) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            crate::log!(
                "reaper: signalfd read failed: {}",
                io::Error::last_os_error()
            );
            return;
        }
        reap_all();
    });
    Ok(())
}

fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let exit = if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        };
        if let Some(tx) = registry().waiters.remove(&pid) {
            let _ = tx.send(exit);
        }
    }
}

/// Runs `fork_fn` (which forks and returns the child's pid) with the registry locked,
/// so the child cannot be reaped before its waiter is registered.
pub fn spawn_tracked<T>(
    fork_fn: impl FnOnce() -> io::Result<(i32, T)>,
) -> io::Result<(i32, T, Receiver<ExitStatus>)> {
    let mut reg = registry();
    let (pid, extra) = fork_fn()?;
    let (tx, rx) = mpsc::channel();
    reg.waiters.insert(pid, tx);
    Ok((pid, extra, rx))
}
