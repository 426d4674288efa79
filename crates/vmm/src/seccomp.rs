//! Seccomp filters, one per thread kind, as data: which system calls each kind of
//! thread may make once the guest runs. Anything else kills the VMM process, so a
//! guest that subverts a device model still cannot open files or spawn programs.
//!
//! - vCPU threads: KVM_RUN (plus register reads for crash reports), writes to the
//!   console and eventfds, epoll_ctl (device activation), locking and memory.
//! - the device thread: epoll, eventfds, disk I/O on already-open files, and UNIX
//!   sockets for vsock (connect to `<uds>_<port>`, accept, read, write).
//! - the VMM main thread: waits for the guest to end, flushes, exits.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The kinds of threads in a `skiff-vmm run` process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// Runs one vCPU.
    Vcpu,
    /// Serves virtio queue notifications and vsock sockets.
    Device,
    /// The main thread after start-up.
    Vmm,
}

/// Errors compiling or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp filter for {0:?}: {1}")]
    Compile(ThreadKind, String),
    #[error("installing seccomp filter: {0}")]
    Install(seccompiler::Error),
}

// KVM ioctl numbers (linux/kvm.h) a vCPU thread needs after start-up.
const KVM_RUN: u64 = 0xae80;
const KVM_GET_REGS: u64 = 0x8090_ae81;
const KVM_GET_SREGS: u64 = 0x8138_ae83;
// Socket ioctl std uses for set_nonblocking.
const FIONBIO: u64 = 0x5421;

/// System calls every thread needs: memory, locks, signals on the way out, time.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    // std's debug builds check fds with F_GETFD before closing them.
    libc::SYS_fcntl,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
];

/// Activation and reset run on the vCPU thread that wrote the status register, and
/// they (un)register device backend fds with the device's own epoll set. A vhost-user
/// device sends its queue setup to the backend then, over the already connected
/// socket (messages with eventfds attached).
const VCPU: &[i64] = &[
    libc::SYS_read,
    libc::SYS_epoll_ctl,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
];

const DEVICE: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_accept,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
];

const VMM: &[i64] = &[libc::SYS_read];

fn ioctl_rule(cmds: &[u64]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    cmds.iter()
        .map(|&cmd| {
            SeccompRule::new(vec![SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                cmd,
            )?])
        })
        .collect()
}

/// The allowed system calls of `kind` (syscall number -> argument rules; empty = any).
pub fn rules(
    kind: ThreadKind,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let extra = match kind {
        ThreadKind::Vcpu => VCPU,
        ThreadKind::Device => DEVICE,
        ThreadKind::Vmm => VMM,
    };
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(extra)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    match kind {
        ThreadKind::Vcpu => {
            map.insert(
                libc::SYS_ioctl,
                ioctl_rule(&[KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS])?,
            );
        }
        ThreadKind::Device => {
            map.insert(libc::SYS_ioctl, ioctl_rule(&[FIONBIO])?);
        }
        ThreadKind::Vmm => {}
    }
    Ok(map)
}

/// Compiles the filter of `kind`; calls outside it get `mismatch`.
pub fn compile(kind: ThreadKind, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let err = |e: seccompiler::BackendError| SeccompError::Compile(kind, e.to_string());
    let filter = SeccompFilter::new(
        rules(kind).map_err(err)?,
        mismatch,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(err)?;
    BpfProgram::try_from(filter).map_err(err)
}

/// Compiled filters for every thread kind (`None` = seccomp disabled).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    programs: Option<[BpfProgram; 3]>,
}

impl Filters {
    /// Filters that kill the process on any call outside the thread's list.
    pub fn strict() -> Result<Self, SeccompError> {
        let kill = SeccompAction::KillProcess;
        Ok(Self {
            programs: Some([
                compile(ThreadKind::Vcpu, kill.clone())?,
                compile(ThreadKind::Device, kill.clone())?,
                compile(ThreadKind::Vmm, kill)?,
            ]),
        })
    }

    /// No filtering (`--no-seccomp`).
    pub fn disabled() -> Self {
        Self { programs: None }
    }

    /// Installs the filter of `kind` on the calling thread (and threads it creates).
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        let Some(programs) = &self.programs else {
            return Ok(());
        };
        let program = match kind {
            ThreadKind::Vcpu => &programs[0],
            ThreadKind::Device => &programs[1],
            ThreadKind::Vmm => &programs[2],
        };
        seccompiler::apply_filter(program).map_err(SeccompError::Install)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles() {
        for kind in [ThreadKind::Vcpu, ThreadKind::Device, ThreadKind::Vmm] {
            assert!(!compile(kind, SeccompAction::KillProcess)
                .unwrap()
                .is_empty());
        }
        Filters::strict().unwrap();
    }

    #[test]
    fn vcpu_threads_cannot_open_files_or_issue_other_ioctls() {
        let rules = rules(ThreadKind::Vcpu).unwrap();
        assert!(!rules.contains_key(&libc::SYS_openat));
        assert!(!rules.contains_key(&libc::SYS_execve));
        assert_eq!(rules[&libc::SYS_ioctl].len(), 3);
        // Installed with EPERM instead of kill so the test process survives.
        let program = compile(ThreadKind::Vcpu, SeccompAction::Errno(libc::EPERM as u32)).unwrap();
        let outcome = std::thread::spawn(move || {
            seccompiler::apply_filter(&program).unwrap();
            let opened = std::fs::File::open("/proc/self/status");
            let tty_ioctl = {
                let mut ws = libc::winsize {
                    ws_row: 0,
                    ws_col: 0,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCGWINSZ writes into `ws`, a valid winsize.
                unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) }
            };
            let errno = std::io::Error::last_os_error().raw_os_error();
            (opened.map_err(|e| e.raw_os_error()), tty_ioctl, errno)
        })
        .join()
        .unwrap();
        assert_eq!(outcome.0.err(), Some(Some(libc::EPERM)));
        assert_eq!((outcome.1, outcome.2), (-1, Some(libc::EPERM)));
    }

    #[test]
    fn device_thread_cannot_spawn_programs() {
        let rules = rules(ThreadKind::Device).unwrap();
        for nr in [
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_fork,
            libc::SYS_openat,
        ] {
            assert!(!rules.contains_key(&nr), "syscall {nr} allowed");
        }
    }
}
