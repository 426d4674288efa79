//! Starting a process inside the container: fork into the container's PID namespace
//! (the container's own process creates it and is its PID 1; execs join it), enter the
//! container's mount namespace, apply the OCI process spec, exec.
//!
//! The agent is multi-threaded, so the child may only make raw system calls between
//! fork and exec: everything it needs (C strings, rlimits, candidate paths) is prepared
//! before the fork, and failures travel back as an errno over a close-on-exec pipe.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Receiver;

use skiff_proto::{ExitStatus, ProcessSpec, DEFAULT_PATH};

use crate::reaper;
use crate::sys::{check, cstring};

/// A started process and the host-facing ends of its stdio.
pub struct Spawned {
    pub pid: i32,
    pub exit: Receiver<ExitStatus>,
    /// Write end of stdin (or the pty master), if stdin is open.
    pub stdin: Option<File>,
    pub stdout: File,
    /// `None` with a terminal: stderr shares the pty.
    pub stderr: Option<File>,
    /// The pty master, kept for window-size changes.
    pub pty: Option<File>,
}

#[derive(Debug)]
pub enum SpawnError {
    /// The command could not be executed; the code is what Docker reports (126/127).
    Exec {
        message: String,
        code: i32,
    },
    Setup(io::Error),
}

impl From<io::Error> for SpawnError {
    fn from(e: io::Error) -> Self {
        Self::Setup(e)
    }
}

/// The failing step, sent with the errno from the child.
#[repr(u8)]
#[derive(Clone, Copy)]
enum Step {
    Setns = 1,
    Cwd,
    Rlimit,
    Groups,
    Gid,
    Uid,
    NoNewPrivs,
    Stdio,
    Exec,
    Caps,
    Seccomp,
    Proc,
}

impl Step {
    fn name(b: u8) -> &'static str {
        match b {
            1 => "enter the container",
            2 => "change to the working directory",
            3 => "set rlimits",
            4 => "set supplementary groups",
            5 => "set gid",
            6 => "set uid",
            7 => "set no_new_privs",
            8 => "set up stdio",
            10 => "apply capabilities",
            11 => "install the seccomp filter",
            12 => "mount the container's /proc",
            _ => "exec",
        }
    }
}

/// Everything the child needs, built before fork.
struct Prepared {
    // The C strings own the bytes; the pointer arrays (NULL-terminated) point into them.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    candidates: Vec<CString>,
    cwd: CString,
    cwd_prefixes: Vec<CString>,
    rlimits: Vec<(libc::c_int, libc::rlimit)>,
    groups: Vec<libc::gid_t>,
    uid: libc::uid_t,
    gid: libc::gid_t,
    umask: libc::mode_t,
    no_new_privs: bool,
    caps: Option<CapSets>,
    /// The filter and its `seccomp(2)` flags.
    seccomp: Option<(Vec<libc::sock_filter>, libc::c_ulong)>,
    proc: Option<ProcSetup>,
}

/// How a new process enters the container's PID namespace.
#[derive(Clone, Copy)]
pub enum PidNs<'a> {
    /// The container's process: PID 1 of a new namespace; it mounts the namespace's
    /// proc and applies the masked and read-only paths that lie on it.
    New(&'a MainSetup),
    /// An exec joins the namespace (an fd of /proc/<pid>/ns/pid).
    Join(RawFd),
    /// A process before the container's (a hook): a namespace of its own.
    Fresh,
    /// skiff's own containers: the VM's namespace.
    Vm,
}

/// What the container's process sets up as PID 1 before anything else.
#[derive(Default)]
pub struct MainSetup {
    /// A new PID namespace (OCI containers); otherwise the VM's.
    pub new_pid_ns: bool,
    pub procs: Vec<crate::mounts::ProcMount>,
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
}

/// [`MainSetup`] as C strings for the child.
struct ProcSetup {
    procs: Vec<(CString, libc::c_ulong, Option<CString>)>,
    masked: Vec<CString>,
    readonly: Vec<CString>,
    proc_fs: CString,
    tmpfs: CString,
    size0: CString,
    dev_null: CString,
}

impl ProcSetup {
    fn new(m: &MainSetup) -> io::Result<Self> {
        let all = |v: &[String]| v.iter().map(|s| cstring(s)).collect::<io::Result<Vec<_>>>();
        Ok(Self {
            procs: m
                .procs
                .iter()
                .map(|p| {
                    let data = (!p.data.is_empty()).then(|| cstring(&p.data)).transpose()?;
                    Ok((cstring(&p.target)?, p.flags as libc::c_ulong, data))
                })
                .collect::<io::Result<Vec<_>>>()?,
            masked: all(&m.masked)?,
            readonly: all(&m.readonly)?,
            proc_fs: cstring("proc")?,
            tmpfs: cstring("tmpfs")?,
            size0: cstring("size=0")?,
            dev_null: cstring("/dev/null")?,
        })
    }
}

/// Capability sets as bitmasks (bit n = capability n), applied in the child.
struct CapSets {
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: Vec<libc::c_ulong>,
}

fn cap_mask(caps: &[u8]) -> u64 {
    caps.iter()
        .filter(|&&c| c < 64)
        .fold(0, |m, &c| m | (1u64 << c))
}

/// capset(2) v3 header and data (two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const CAP_VERSION_3: u32 = 0x2008_0522;
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

fn prepare(spec: &ProcessSpec, main: Option<&MainSetup>) -> Result<Prepared, SpawnError> {
    let arg0 = spec.args.first().ok_or_else(|| SpawnError::Exec {
        message: "no command given".into(),
        code: 127,
    })?;
    let argv = spec
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<io::Result<Vec<_>>>()?;
    let mut env: Vec<String> = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_owned();
    let envp = env
        .iter()
        .map(|e| cstring(e))
        .collect::<io::Result<Vec<_>>>()?;
    let candidates = if arg0.contains('/') {
        vec![cstring(arg0)?]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| cstring(&format!("{}/{arg0}", d.trim_end_matches('/'))))
            .collect::<io::Result<Vec<_>>>()?
    };
    if !spec.cwd.starts_with('/') {
        return Err(SpawnError::Setup(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cwd {:?} is not absolute", spec.cwd),
        )));
    }
    let mut cwd_prefixes = Vec::new();
    let mut acc = String::new();
    for part in spec.cwd.split('/').filter(|p| !p.is_empty()) {
        acc.push('/');
        acc.push_str(part);
        cwd_prefixes.push(cstring(&acc)?);
    }
    let rlimits = spec
        .rlimits
        .iter()
        .map(|r| {
            let res = rlimit_resource(&r.kind).ok_or_else(|| {
                SpawnError::Setup(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unknown rlimit {:?}", r.kind),
                ))
            })?;
            Ok((
                res,
                libc::rlimit {
                    rlim_cur: r.soft,
                    rlim_max: r.hard,
                },
            ))
        })
        .collect::<Result<Vec<_>, SpawnError>>()?;
    let argv_ptrs = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp_ptrs = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    Ok(Prepared {
        _argv: argv,
        _envp: envp,
        argv_ptrs,
        envp_ptrs,
        candidates,
        cwd: cstring(&spec.cwd)?,
        cwd_prefixes,
        rlimits,
        groups: spec.user.additional_gids.clone(),
        uid: spec.user.uid,
        gid: spec.user.gid,
        umask: spec.user.umask.unwrap_or(0o022),
        no_new_privs: spec.no_new_privileges,
        caps: spec.capabilities.as_ref().map(|c| CapSets {
            bounding: cap_mask(&c.bounding),
            effective: cap_mask(&c.effective),
            permitted: cap_mask(&c.permitted),
            inheritable: cap_mask(&c.inheritable),
            ambient: c.ambient.iter().map(|&a| libc::c_ulong::from(a)).collect(),
        }),
        seccomp: spec.seccomp.as_ref().map(seccomp_filter).transpose()?,
        proc: main.map(ProcSetup::new).transpose()?,
    })
}

/// seccomp(2) flags the agent passes on: TSYNC, LOG, SPEC_ALLOW.
const SECCOMP_FLAGS_KNOWN: u32 = 1 | 2 | 4;

/// The agent's copy of the host-compiled program, bounded as the kernel bounds it.
fn seccomp_filter(
    p: &skiff_proto::SeccompProgram,
) -> Result<(Vec<libc::sock_filter>, libc::c_ulong), SpawnError> {
    if p.flags & !SECCOMP_FLAGS_KNOWN != 0 {
        return Err(SpawnError::Setup(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("seccomp flags {:#x} are not supported", p.flags),
        )));
    }
    if p.instructions.is_empty() || p.instructions.len() > skiff_proto::MAX_SECCOMP_INSNS {
        return Err(SpawnError::Setup(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "seccomp program of {} instructions (1..={} allowed)",
                p.instructions.len(),
                skiff_proto::MAX_SECCOMP_INSNS
            ),
        )));
    }
    let filter = p
        .instructions
        .iter()
        .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect();
    Ok((filter, libc::c_ulong::from(p.flags)))
}

fn rlimit_resource(kind: &str) -> Option<libc::c_int> {
    #[allow(clippy::unnecessary_cast)] // the type differs between libc targets
    let r = match kind {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    } as libc::c_int;
    Some(r)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created by pipe2 and are owned only here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_dev_null() -> io::Result<OwnedFd> {
    Ok(File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

/// Opens the pty in the container's mount namespace, so the slave lives in the
/// container's own devpts and `tty`/ttyname inside the container find it.
fn open_pty_in(mnt_ns: RawFd, size: Option<(u16, u16)>) -> io::Result<Pty> {
    std::thread::spawn(move || {
        // SAFETY: unshare/setns affect only this short-lived thread's fs context, and
        // mnt_ns stays open while the caller waits for the join.
        unsafe {
            check(libc::unshare(libc::CLONE_FS))?;
            check(libc::setns(mnt_ns, libc::CLONE_NEWNS))?;
        }
        open_pty(size)
    })
    .join()
    .map_err(|_| io::Error::other("pty thread panicked"))?
}

fn open_pty(size: Option<(u16, u16)>) -> io::Result<Pty> {
    let (mut master, mut slave) = (0, 0);
    let ws = size.map(|(rows, cols)| libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let ws_ptr = ws
        .as_ref()
        .map_or(std::ptr::null(), |w| w as *const libc::winsize);
    // SAFETY: out-pointers are valid; name and termios may be null; ws_ptr is null or
    // points to a live winsize.
    check(unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            ws_ptr,
        )
    })?;
    // SAFETY: openpty returned two fresh fds that we now own.
    let pty = unsafe {
        Pty {
            master: OwnedFd::from_raw_fd(master),
            slave: OwnedFd::from_raw_fd(slave),
        }
    };
    for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
        // SAFETY: fd is valid; setting FD_CLOEXEC has no memory effects.
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    }
    Ok(pty)
}

pub fn set_window_size(pty: &File, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    check(unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// [`Prepared`] handed to the forking thread.
struct SendRef<'a>(&'a Prepared);

// SAFETY: Prepared is only read; its raw pointers point into CStrings it owns, which
// live (unchanged) until the scoped forking thread has been joined.
unsafe impl Send for SendRef<'_> {}

impl SendRef<'_> {
    fn get(&self) -> &Prepared {
        self.0
    }
}

/// Starts `spec` inside the mount namespace `mnt_ns` and the PID namespace `pid_ns`.
/// For a new PID namespace the second value is its handle, for execs to join.
pub fn spawn(
    spec: &ProcessSpec,
    mnt_ns: RawFd,
    pid_ns: PidNs<'_>,
) -> Result<(Spawned, Option<OwnedFd>), SpawnError> {
    let main = match pid_ns {
        PidNs::New(m) => Some(m),
        PidNs::Join(_) | PidNs::Fresh | PidNs::Vm => None,
    };
    let prep = prepare(spec, main)?;
    let (err_r, err_w) = pipe()?;

    // Child-side fds for 0, 1, 2 and host-side ends.
    let (child_stdio, stdin, stdout, stderr, pty): ([OwnedFd; 3], _, _, _, _) = if spec.terminal {
        let p = open_pty_in(mnt_ns, spec.console_size)?;
        let master = File::from(p.master);
        let stdin = if spec.stdin {
            Some(master.try_clone()?)
        } else {
            None
        };
        let out = master.try_clone()?;
        let child = [p.slave.try_clone()?, p.slave.try_clone()?, p.slave];
        (child, stdin, out, None, Some(master))
    } else {
        let (in_child, in_host) = if spec.stdin {
            let (r, w) = pipe()?;
            (r, Some(File::from(w)))
        } else {
            (open_dev_null()?, None)
        };
        let (out_r, out_w) = pipe()?;
        let (errp_r, errp_w) = pipe()?;
        (
            [in_child, out_w, errp_w],
            in_host,
            File::from(out_r),
            Some(File::from(errp_r)),
            None,
        )
    };
    let raw_stdio = [
        child_stdio[0].as_raw_fd(),
        child_stdio[1].as_raw_fd(),
        child_stdio[2].as_raw_fd(),
    ];
    let err_w_raw = err_w.as_raw_fd();
    let terminal = spec.terminal;

    // The PID namespace for children is a per-thread setting: a short-lived thread
    // takes it and forks.
    let shared = SendRef(&prep);
    let (pid, exit, new_ns) = std::thread::scope(|scope| {
        scope
            .spawn(move || -> io::Result<_> {
                let prep = shared.get();
                let new_ns = match pid_ns {
                    PidNs::New(m) => m.new_pid_ns,
                    PidNs::Fresh => true,
                    PidNs::Join(_) | PidNs::Vm => false,
                };
                match pid_ns {
                    PidNs::New(_) | PidNs::Fresh | PidNs::Vm if !new_ns => {}
                    PidNs::New(_) | PidNs::Fresh => {
                        // SAFETY: changes only this thread's PID namespace for children.
                        check(unsafe { libc::unshare(libc::CLONE_NEWPID) })?;
                    }
                    PidNs::Join(fd) => {
                        // SAFETY: as above; fd is the open namespace the caller holds.
                        check(unsafe { libc::setns(fd, libc::CLONE_NEWPID) })?;
                    }
                    PidNs::Vm => {}
                }
                let (pid, (), exit) = reaper::spawn_tracked(|| {
                    // SAFETY: fork in a multi-threaded process; the child below only
                    // makes raw system calls on data prepared before the fork, then
                    // execs or _exits.
                    let pid = check(unsafe { libc::fork() })?;
                    if pid == 0 {
                        // SAFETY: we are the freshly forked child; see child_exec.
                        unsafe { child_exec(prep, mnt_ns, raw_stdio, err_w_raw, terminal) }
                    }
                    Ok((pid, ()))
                })?;
                // The namespace the child is PID 1 of, held by this thread until it ends.
                let ns = match pid_ns {
                    PidNs::New(m) if m.new_pid_ns => {
                        Some(File::open("/proc/thread-self/ns/pid_for_children")?.into())
                    }
                    _ => None,
                };
                Ok((pid, exit, ns))
            })
            .join()
            .map_err(|_| io::Error::other("fork thread panicked"))?
    })?;
    drop(child_stdio);
    drop(err_w);

    let mut report = [0u8; 5];
    let mut err_file = File::from(err_r);
    let n = read_full(&mut err_file, &mut report)?;
    if n == report.len() {
        let [step, e0, e1, e2, e3] = report;
        let errno = i32::from_ne_bytes([e0, e1, e2, e3]);
        let err = io::Error::from_raw_os_error(errno);
        let arg0 = spec.args.first().map(String::as_str).unwrap_or("");
        // The child _exits right after reporting; the reaper collects it.
        drop(exit);
        return Err(if step == Step::Exec as u8 {
            exec_error(arg0, errno, &err)
        } else {
            SpawnError::Exec {
                message: format!("failed to {}: {err}", Step::name(step)),
                code: 126,
            }
        });
    }
    Ok((
        Spawned {
            pid,
            exit,
            stdin,
            stdout,
            stderr,
            pty,
        },
        new_ns,
    ))
}

fn exec_error(arg0: &str, errno: i32, err: &io::Error) -> SpawnError {
    if errno == libc::ENOENT {
        let message = if arg0.contains('/') {
            format!("exec: {arg0:?}: no such file or directory")
        } else {
            format!("exec: {arg0:?}: executable file not found in $PATH")
        };
        SpawnError::Exec { message, code: 127 }
    } else {
        SpawnError::Exec {
            message: format!("exec: {arg0:?}: {err}"),
            code: 126,
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Installs a seccomp filter with one raw system call (child side of fork); false with
/// errno set on failure.
///
/// # Safety
/// Same contract as [`child_exec`]; `filter` was prepared before the fork.
unsafe fn install_seccomp(filter: &[libc::sock_filter], flags: libc::c_ulong) -> bool {
    let prog = libc::sock_fprog {
        // Bounded by MAX_SECCOMP_INSNS in prepare.
        #[allow(clippy::cast_possible_truncation)]
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prog points at a live, bounded filter array for the duration of the call.
    unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) == 0 }
}

/// PID 1's own proc mounts, then the masked and read-only paths on them (child side of
/// fork, raw system calls only); false with errno set on failure.
///
/// # Safety
/// Same contract as [`child_exec`]; `ps` was prepared before the fork.
unsafe fn setup_proc(ps: &ProcSetup) -> bool {
    // SAFETY: (whole body) every pointer is a NUL-terminated string from `ps` or null.
    unsafe {
        for (target, flags, data) in &ps.procs {
            let data = data
                .as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
            if libc::mount(
                ps.proc_fs.as_ptr(),
                target.as_ptr(),
                ps.proc_fs.as_ptr(),
                *flags,
                data,
            ) != 0
            {
                return false;
            }
        }
        for path in &ps.readonly {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut st) != 0 {
                continue; // absent: nothing to protect
            }
            if libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return false;
            }
            let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
            for (st_flag, ms_flag) in [
                (libc::ST_NOSUID, libc::MS_NOSUID),
                (libc::ST_NODEV, libc::MS_NODEV),
                (libc::ST_NOEXEC, libc::MS_NOEXEC),
            ] {
                if st.f_flag & st_flag != 0 {
                    flags |= ms_flag;
                }
            }
            if libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return false;
            }
        }
        for path in &ps.masked {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(path.as_ptr(), &mut st) != 0 {
                continue;
            }
            let ok = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                libc::mount(
                    ps.tmpfs.as_ptr(),
                    path.as_ptr(),
                    ps.tmpfs.as_ptr(),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    ps.size0.as_ptr().cast(),
                )
            } else {
                libc::mount(
                    ps.dev_null.as_ptr(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if ok != 0 {
                return false;
            }
        }
    }
    true
}

/// The child between fork and exec. Never returns.
///
/// # Safety
/// Must only be called in a freshly forked child of a multi-threaded process. It makes
/// raw system calls only (no allocation, no locks) on the prepared data.
unsafe fn child_exec(
    p: &Prepared,
    mnt_ns: RawFd,
    stdio: [RawFd; 3],
    err_w: RawFd,
    terminal: bool,
) -> ! {
    // SAFETY: (whole body) raw syscalls on valid pointers from `p`, which the parent
    // built before fork and which stay mapped in the child.
    unsafe {
        let fail = |step: Step| -> ! {
            let errno = *libc::__errno_location();
            let e = errno.to_ne_bytes();
            let msg = [step as u8, e[0], e[1], e[2], e[3]];
            libc::write(err_w, msg.as_ptr().cast(), msg.len());
            libc::_exit(if matches!(step, Step::Exec) && errno == libc::ENOENT {
                127
            } else {
                126
            });
        };

        // Default signal state: the agent blocks SIGCHLD and Rust ignores SIGPIPE.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::setsid();

        if libc::setns(mnt_ns, libc::CLONE_NEWNS) != 0 {
            fail(Step::Setns);
        }
        if let Some(ps) = &p.proc {
            if !setup_proc(ps) {
                fail(Step::Proc);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            // Docker creates a missing working directory.
            for prefix in &p.cwd_prefixes {
                libc::mkdir(prefix.as_ptr(), 0o755);
            }
            if libc::chdir(p.cwd.as_ptr()) != 0 {
                fail(Step::Cwd);
            }
        }
        for (res, lim) in &p.rlimits {
            // The resource parameter is c_int on musl and c_uint on glibc.
            #[allow(clippy::cast_sign_loss)]
            if libc::setrlimit(*res as _, lim) != 0 {
                fail(Step::Rlimit);
            }
        }
        // As runc: without no_new_privs the filter needs CAP_SYS_ADMIN, so it goes in
        // now, before the uid change and the capability drop.
        if !p.no_new_privs {
            if let Some((filter, flags)) = &p.seccomp {
                if !install_seccomp(filter, *flags) {
                    fail(Step::Seccomp);
                }
            }
        }
        // Highest capability the guest kernel knows (reading the bounding set fails
        // past it); bits above are left out of every set.
        let mut last_cap: libc::c_ulong = 0;
        while last_cap < 63 && libc::prctl(libc::PR_CAPBSET_READ, last_cap + 1, 0, 0, 0) >= 0 {
            last_cap += 1;
        }
        let known: u64 = if last_cap >= 63 {
            u64::MAX
        } else {
            (1u64 << (last_cap + 1)) - 1
        };
        if let Some(c) = &p.caps {
            for cap in 0..=last_cap {
                if c.bounding & (1 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                {
                    fail(Step::Caps);
                }
            }
            // Keep the permitted set across setuid; the sets are set right after.
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                fail(Step::Caps);
            }
        }
        if libc::setgroups(p.groups.len(), p.groups.as_ptr()) != 0 {
            fail(Step::Groups);
        }
        if libc::setgid(p.gid) != 0 {
            fail(Step::Gid);
        }
        if libc::setuid(p.uid) != 0 {
            fail(Step::Uid);
        }
        if let Some(c) = &p.caps {
            if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
                fail(Step::Caps);
            }
            let set = |m: u64, word: u32| ((m & known) >> (32 * word)) as u32;
            let data = [0, 1].map(|w| CapData {
                effective: set(c.effective, w),
                permitted: set(c.permitted, w),
                inheritable: set(c.inheritable, w),
            });
            let header = CapHeader {
                version: CAP_VERSION_3,
                pid: 0,
            };
            if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
                fail(Step::Caps);
            }
            // Best effort, as runc: a capability that is not both permitted and
            // inheritable cannot be ambient (`runc spec` lists ambient capabilities
            // without inheritable ones), and is left out rather than failing the start.
            for &cap in &c.ambient {
                if cap <= last_cap {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap,
                        0,
                        0,
                    );
                }
            }
        }
        libc::umask(p.umask);
        if p.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(Step::NoNewPrivs);
        }
        if p.no_new_privs {
            if let Some((filter, flags)) = &p.seccomp {
                if !install_seccomp(filter, *flags) {
                    fail(Step::Seccomp);
                }
            }
        }
        for (target, fd) in stdio.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
            if libc::dup2(*fd, target as libc::c_int) < 0 {
                fail(Step::Stdio);
            }
        }
        if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
            fail(Step::Stdio);
        }
        // Everything else the agent had open is close-on-exec already.

        let mut last = libc::ENOENT;
        let mut denied = false;
        for cand in &p.candidates {
            libc::execve(cand.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
            let e = *libc::__errno_location();
            // As execvp: a permission problem beats "not found" on another PATH entry.
            if e == libc::EACCES {
                denied = true;
            } else if e != libc::ENOENT {
                last = e;
            }
        }
        *libc::__errno_location() = if denied { libc::EACCES } else { last };
        fail(Step::Exec)
    }
}
