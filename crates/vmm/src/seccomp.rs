//! Seccomp filters, one per thread kind, as data: which system calls each kind of
//! thread may make once the guest runs. Anything else ends the VMM process, so a
//! guest that subverts a device model still cannot open files or spawn programs.
//! The call traps (SIGSYS) into [`install_violation_reporter`]'s handler, which says
//! on stderr which call on which kind of thread was refused and exits with
//! [`crate::exit::EXIT_VMM_ERROR`]: a missing rule is one readable line, not a
//! silently vanished process.
//!
//! - vCPU threads: KVM_RUN (plus register reads for crash reports), writes to the
//!   console and eventfds, epoll_ctl (device activation), locking and memory.
//! - the device thread: epoll, eventfds, disk I/O on already-open files, and UNIX
//!   sockets for vsock (connect to `<uds>_<port>`, accept, read, write).
//! - the VMM main thread: waits for the guest to end, flushes, exits.
//! - the API thread (only with `--api-socket`): accepts control clients, kicks vCPU
//!   threads, reads VM state and writes snapshot files.
//! - a vhost-user device daemon (`skiff-vmm vhost-user-blk|vsock`), every thread of it:
//!   once its disk is open and its host socket bound, it serves one front end over
//!   its UNIX socket (guest memory and eventfds arrive as passed fds), reads and
//!   writes the open disk and relays vsock connections; it opens no file and runs no
//!   program.

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
    /// Serves the control API (pause, resume, snapshot).
    Api,
    /// Any thread of a vhost-user device daemon (the filter is inherited by the vring
    /// workers it starts).
    VhostUser,
}

/// Every kind, in the order [`Filters`] keeps their programs.
const KINDS: [ThreadKind; 5] = [
    ThreadKind::Vcpu,
    ThreadKind::Device,
    ThreadKind::Vmm,
    ThreadKind::Api,
    ThreadKind::VhostUser,
];

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

/// `_IOR`/`_IOWR(KVMIO, nr, T)` as linux/kvm.h defines them.
const fn kvm_ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (0xae << 8) | nr
}
const fn kvm_iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xae << 8) | nr
}
use std::mem::size_of;
/// vCPU state reads a snapshot makes on the vCPU's own thread.
const KVM_VCPU_SAVE: [u64; 9] = [
    kvm_iowr(0x91, size_of::<kvm_bindings::kvm_cpuid2>()),
    kvm_iowr(0x88, size_of::<kvm_bindings::kvm_msrs>()),
    kvm_ior(0x8e, size_of::<kvm_bindings::kvm_lapic_state>()),
    kvm_ior(0x98, size_of::<kvm_bindings::kvm_mp_state>()),
    kvm_ior(0x9f, size_of::<kvm_bindings::kvm_vcpu_events>()),
    kvm_ior(0xa1, size_of::<kvm_bindings::kvm_debugregs>()),
    kvm_ior(0xa4, size_of::<kvm_bindings::kvm_xsave>()),
    kvm_ior(0xa6, size_of::<kvm_bindings::kvm_xcrs>()),
    0xaea3, // KVM_GET_TSC_KHZ
];
/// VM state reads (irqchip, PIT, clock) and the MSR index list, on the API thread.
const KVM_VM_SAVE: [u64; 4] = [
    0xae00, // KVM_GET_API_VERSION, recorded in the snapshot's host info
    kvm_iowr(0x62, size_of::<kvm_bindings::kvm_irqchip>()),
    kvm_ior(0x9f, size_of::<kvm_bindings::kvm_pit_state2>()),
    kvm_ior(0x7c, size_of::<kvm_bindings::kvm_clock_data>()),
];
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

/// Control clients and snapshot files: no exec, no fork, no new sockets.
const API: &[i64] = &[
    libc::SYS_accept4,
    libc::SYS_accept,
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_openat,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_pwrite64,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_shutdown,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
];

/// A vhost-user daemon after set-up: the front end's socket (messages carrying memory
/// and eventfds), mapping the guest memory it is given, epoll and eventfds, I/O on the
/// open disk, vsock's host-side UNIX sockets, and the vring worker threads it starts
/// (`clone` only with CLONE_THREAD, see [`rules`]).
const VHOST_USER: &[i64] = &[
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_socket,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_connect,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_shutdown,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_dup,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    libc::SYS_sched_getaffinity,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

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
        ThreadKind::Api => API,
        ThreadKind::VhostUser => VHOST_USER,
    };
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(extra)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    match kind {
        ThreadKind::Vcpu => {
            let mut allowed = vec![KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS];
            allowed.extend(KVM_VCPU_SAVE);
            map.insert(libc::SYS_ioctl, ioctl_rule(&allowed)?);
        }
        ThreadKind::Device => {
            map.insert(libc::SYS_ioctl, ioctl_rule(&[FIONBIO])?);
        }
        ThreadKind::Vmm => {}
        ThreadKind::Api => {
            map.insert(libc::SYS_ioctl, ioctl_rule(&KVM_VM_SAVE)?);
        }
        ThreadKind::VhostUser => {
            map.insert(libc::SYS_ioctl, ioctl_rule(&[FIONBIO])?);
            // Threads, not processes: a `clone` without CLONE_THREAD (a fork) is refused.
            map.insert(
                libc::SYS_clone,
                vec![SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                    libc::CLONE_THREAD as u64,
                )?])?],
            );
        }
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
    programs: Option<Vec<BpfProgram>>,
}

impl Filters {
    /// Filters that end the process on any call outside the thread's list (through
    /// the handler of [`install_violation_reporter`]).
    pub fn strict() -> Result<Self, SeccompError> {
        let programs = KINDS
            .iter()
            .map(|&kind| compile(kind, SeccompAction::Trap))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            programs: Some(programs),
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
        // Compiled in KINDS order, which is the enum's.
        let program = programs
            .get(kind as usize)
            .ok_or_else(|| SeccompError::Compile(kind, "not compiled".into()))?;
        THREAD_KIND.with(|k| k.set(kind as u8));
        seccompiler::apply_filter(program).map_err(SeccompError::Install)
    }
}

/// Installs `kind`'s filter alone on every thread of the process (TSYNC), for a
/// process whose threads are all of one kind (a vhost-user daemon); threads it starts
/// afterwards inherit it.
pub fn install_process_wide(kind: ThreadKind) -> Result<(), SeccompError> {
    let program = compile(kind, SeccompAction::Trap)?;
    PROCESS_KIND.store(kind as u8, std::sync::atomic::Ordering::SeqCst);
    seccompiler::apply_filter_all_threads(&program).map_err(SeccompError::Install)
}

thread_local! {
    /// The filter this thread runs under, for the violation report.
    static THREAD_KIND: std::cell::Cell<u8> = const { std::cell::Cell::new(u8::MAX) };
}

/// The filter every thread of the process runs under, if one was installed for all.
static PROCESS_KIND: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

fn kind_name(kind: u8) -> &'static [u8] {
    match kind {
        k if k == ThreadKind::Vcpu as u8 => b"a vCPU",
        k if k == ThreadKind::Device as u8 => b"the device",
        k if k == ThreadKind::Vmm as u8 => b"the main",
        k if k == ThreadKind::Api as u8 => b"the API",
        k if k == ThreadKind::VhostUser as u8 => b"a vhost-user",
        _ => b"an unfiltered",
    }
}

/// Appends `value` in decimal or hex to `buf` at `*len` (no allocation: runs in a
/// signal handler).
fn push_num(buf: &mut [u8], len: &mut usize, value: u64, hex: bool) {
    let radix = if hex { 16 } else { 10 };
    let mut digits = [0u8; 20];
    let mut n = 0;
    let mut v = value;
    loop {
        digits[n] = b"0123456789abcdef"[(v % radix) as usize];
        n += 1;
        v /= radix;
        if v == 0 || n == digits.len() {
            break;
        }
    }
    if hex {
        push(buf, len, b"0x");
    }
    for i in (0..n).rev() {
        push(buf, len, &digits[i..=i]);
    }
}

fn push(buf: &mut [u8], len: &mut usize, bytes: &[u8]) {
    for &b in bytes {
        if let Some(slot) = buf.get_mut(*len) {
            *slot = b;
            *len += 1;
        }
    }
}

/// The report line for a refused call (`arg1` is the ioctl request for ioctls).
fn violation_line(buf: &mut [u8; 160], kind: u8, syscall: i64, arg1: u64) -> usize {
    let mut len = 0;
    push(buf, &mut len, b"skiff-vmm: seccomp refused system call ");
    push_num(buf, &mut len, syscall as u64, false);
    if syscall == libc::SYS_ioctl {
        push(buf, &mut len, b" (ioctl ");
        push_num(buf, &mut len, arg1 & 0xffff_ffff, true);
        push(buf, &mut len, b")");
    }
    push(buf, &mut len, b" on ");
    push(buf, &mut len, kind_name(kind));
    push(buf, &mut len, b" thread\n");
    len
}

extern "C" fn on_violation(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // siginfo_t for SIGSYS: the refused call's number is an int 24 bytes in
    // (after signo, errno, code, padding and the faulting address).
    // SAFETY: the kernel passes a valid siginfo_t (128 bytes) to an SA_SIGINFO handler.
    let syscall = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    let arg1 = if context.is_null() {
        0
    } else {
        // SAFETY: the kernel passes the interrupted thread's ucontext_t; RSI holds the
        // second system call argument on x86_64.
        unsafe {
            (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RSI as usize] as u64
        }
    };
    let kind = match THREAD_KIND.with(|k| k.get()) {
        u8::MAX => PROCESS_KIND.load(std::sync::atomic::Ordering::Relaxed),
        k => k,
    };
    let mut buf = [0u8; 160];
    let len = violation_line(&mut buf, kind, i64::from(syscall), arg1);
    // SAFETY: write(2) and _exit(2) are async-signal-safe and allowed by every filter;
    // `buf[..len]` is initialised.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::_exit(crate::exit::EXIT_VMM_ERROR);
    }
}

/// Installs the SIGSYS handler that reports a refused system call and ends the VMM.
/// Must run before any filter is installed (rt_sigaction is not allowed afterwards).
pub fn install_violation_reporter() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
    // only formats into a stack buffer, writes to stderr and exits.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_violation as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_report_names_the_call_and_thread() {
        let mut buf = [0u8; 160];
        let len = violation_line(&mut buf, ThreadKind::Api as u8, libc::SYS_ioctl, 0xae00);
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "skiff-vmm: seccomp refused system call 16 (ioctl 0xae00) on the API thread\n"
        );
        let len = violation_line(&mut buf, ThreadKind::Vcpu as u8, libc::SYS_openat, 7);
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "skiff-vmm: seccomp refused system call 257 on a vCPU thread\n"
        );
    }

    #[test]
    fn every_kind_compiles() {
        for kind in KINDS {
            assert!(!compile(kind, SeccompAction::KillProcess)
                .unwrap()
                .is_empty());
        }
        Filters::strict().unwrap();
        // Filters::install finds a kind's program by its discriminant.
        for (i, kind) in KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
    }

    #[test]
    fn vcpu_threads_cannot_open_files_or_issue_other_ioctls() {
        let rules = rules(ThreadKind::Vcpu).unwrap();
        assert!(!rules.contains_key(&libc::SYS_openat));
        assert!(!rules.contains_key(&libc::SYS_execve));
        assert_eq!(rules[&libc::SYS_ioctl].len(), 3 + KVM_VCPU_SAVE.len());
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
    fn ioctl_numbers_match_linux() {
        // Values from linux/kvm.h on x86_64.
        assert_eq!(KVM_VCPU_SAVE[1], 0xc008_ae88); // KVM_GET_MSRS
        assert_eq!(KVM_VCPU_SAVE[2], 0x8400_ae8e); // KVM_GET_LAPIC
        assert_eq!(KVM_VCPU_SAVE[6], 0x9000_aea4); // KVM_GET_XSAVE
        assert_eq!(KVM_VM_SAVE[0], 0xae00); // KVM_GET_API_VERSION
        assert_eq!(KVM_VM_SAVE[1], 0xc208_ae62); // KVM_GET_IRQCHIP
        assert_eq!(KVM_VM_SAVE[2], 0x8070_ae9f); // KVM_GET_PIT2
    }

    #[test]
    fn api_thread_cannot_spawn_programs_or_open_sockets() {
        let rules = rules(ThreadKind::Api).unwrap();
        for nr in [
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_fork,
            libc::SYS_socket,
            libc::SYS_connect,
        ] {
            assert!(!rules.contains_key(&nr), "syscall {nr} allowed");
        }
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

    /// Set in the child process [`a_vhost_user_daemon_that_opens_a_file_is_stopped`]
    /// starts: it takes the filter and then breaks it.
    const CHILD_ENV: &str = "SKIFF_VMM_SECCOMP_CHILD";

    #[test]
    fn vhost_user_daemon_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        install_violation_reporter().unwrap();
        install_process_wide(ThreadKind::VhostUser).unwrap();
        // What a daemon does after set-up still works: threads, sockets, eventfds.
        std::thread::spawn(|| ()).join().unwrap();
        drop(std::os::unix::net::UnixDatagram::unbound().unwrap());
        eprintln!("allowed calls ok");
        // Opening a file is not among them: the process ends with the report.
        let _ = std::fs::File::open("/etc/hostname");
        eprintln!("still alive after open");
    }

    #[test]
    fn a_vhost_user_daemon_that_opens_a_file_is_stopped() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::vhost_user_daemon_child",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(crate::exit::EXIT_VMM_ERROR),
            "{stderr}"
        );
        assert!(stderr.contains("allowed calls ok"), "{stderr}");
        assert!(
            stderr.contains("seccomp refused system call 257 on a vhost-user thread"),
            "{stderr}"
        );
        assert!(!stderr.contains("still alive"), "{stderr}");
    }

    #[test]
    fn vhost_user_daemons_cannot_exec_fork_or_open() {
        let rules = rules(ThreadKind::VhostUser).unwrap();
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_openat,
            libc::SYS_open,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_ptrace,
        ] {
            assert!(!rules.contains_key(&nr), "{nr}");
        }
        assert_eq!(
            rules[&libc::SYS_clone].len(),
            1,
            "clone only with CLONE_THREAD"
        );
    }
}
