//! Pausing vCPUs at a consistent point, for snapshots and the `pause` API.
//!
//! A pause sets a flag and kicks every vCPU thread with [`kick_signal`]; the signal
//! handler sets the thread's `kvm_run.immediate_exit`, so KVM_RUN returns `EINTR`
//! whether the thread was inside the guest or just about to enter it (no lost wake-up).
//! The vCPU then re-enters once more with `immediate_exit` set, which completes a
//! pending port or MMIO read into guest registers without running guest code, and
//! parks. Parked vCPUs serve commands (save your state, resume) on their own thread.

use std::cell::Cell;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::snapshot::state::VcpuState;
use crate::snapshot::SnapshotError;

/// What a parked vCPU is asked to do.
pub enum VcpuCommand {
    /// Save your KVM state and send it back.
    Save(Sender<Result<VcpuState, SnapshotError>>),
    /// Carry on running the guest.
    Resume,
}

#[derive(Debug, Default)]
struct Counts {
    parked: usize,
    gone: usize,
}

/// Shared between the vCPU threads and whoever pauses them (the API thread).
pub struct VcpuControl {
    pause: std::sync::atomic::AtomicBool,
    counts: Mutex<Counts>,
    changed: Condvar,
    senders: Mutex<Vec<Sender<VcpuCommand>>>,
    threads: Mutex<Vec<libc::pthread_t>>,
    count: usize,
}

/// Why a pause or a save did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("vCPUs did not stop within {0:?}")]
    Timeout(Duration),
    #[error("the guest has ended")]
    GuestEnded,
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// How long a parked vCPU may take to read its state (generous: a busy host may not
/// schedule the thread for a while).
const SAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, null on non-vCPU threads.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_signal: libc::c_int) {
    IMMEDIATE_EXIT.with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer was set by this thread's vCPU to the immediate_exit
            // byte of its kvm_run mapping, which lives until the vCPU clears the
            // pointer; a byte store is async-signal-safe.
            unsafe { p.write_volatile(1) };
        }
    });
}

/// Installs the kick handler (once per process, before vCPU threads start).
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
    // only touches a thread-local pointer (see `on_kick`).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_kick as *const () as usize;
        // Other system calls of a kicked thread (console writes, futex waits) carry
        // on; KVM_RUN itself still returns EINTR (KVM does not restart it).
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Points the kick handler of the calling thread at `byte` (null to detach).
pub fn set_immediate_exit_target(byte: *mut u8) {
    IMMEDIATE_EXIT.with(|p| p.set(byte));
}

impl VcpuControl {
    /// Control for `count` vCPUs; returns the receivers to hand to each vCPU.
    pub fn new(count: usize, start_paused: bool) -> (Self, Vec<Receiver<VcpuCommand>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| mpsc::channel()).unzip();
        (
            Self {
                pause: std::sync::atomic::AtomicBool::new(start_paused),
                counts: Mutex::new(Counts::default()),
                changed: Condvar::new(),
                senders: Mutex::new(senders),
                threads: Mutex::new(Vec::new()),
                count,
            },
            receivers,
        )
    }

    /// Records a vCPU thread so pauses can kick it.
    pub fn register_thread(&self, thread: libc::pthread_t) {
        self.threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(thread);
    }

    /// Whether vCPUs must park.
    pub fn pause_requested(&self) -> bool {
        self.pause.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut c);
        self.changed.notify_all();
    }

    /// Called by a vCPU thread when it parks and when it leaves the park.
    pub fn set_parked(&self, parked: bool) {
        self.update(|c| {
            if parked {
                c.parked += 1
            } else {
                c.parked = c.parked.saturating_sub(1)
            }
        });
    }

    /// Called by a vCPU thread that stops for good (the guest ended).
    pub fn set_gone(&self) {
        self.update(|c| c.gone += 1);
    }

    /// Stops every vCPU at a consistent point; returns once all are parked.
    pub fn pause(&self, timeout: Duration) -> Result<(), ControlError> {
        self.pause.store(true, std::sync::atomic::Ordering::SeqCst);
        for &thread in self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            // SAFETY: `thread` is a vCPU thread of this process, which never exits
            // before the process does (vCPU threads are not joined or detached-ended
            // while the VM exists); a signal to it only runs `on_kick`.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
        let deadline = Instant::now() + timeout;
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if c.gone > 0 {
                return Err(ControlError::GuestEnded);
            }
            if c.parked == self.count {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::Timeout(timeout));
            }
            c = self
                .changed
                .wait_timeout(c, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        self.pause.store(false, std::sync::atomic::Ordering::SeqCst);
        for tx in self
            .senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = tx.send(VcpuCommand::Resume);
        }
    }

    /// Asks every (parked) vCPU for its state, in vCPU order.
    pub fn save_all(&self) -> Result<Vec<VcpuState>, ControlError> {
        let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        let mut replies = Vec::with_capacity(senders.len());
        for tx in senders.iter() {
            let (reply_tx, reply_rx) = mpsc::channel();
            tx.send(VcpuCommand::Save(reply_tx))
                .map_err(|_| ControlError::GuestEnded)?;
            replies.push(reply_rx);
        }
        replies
            .into_iter()
            .map(|rx| {
                rx.recv_timeout(SAVE_TIMEOUT)
                    .map_err(|_| ControlError::Timeout(SAVE_TIMEOUT))?
                    .map_err(ControlError::from)
            })
            .collect()
    }
}
