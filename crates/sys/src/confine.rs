//! Confinement a host process of a VM takes on before it runs: the first steps of the
//! jail (Firecracker's jailer is the model). Each function here is async-signal-safe,
//! so it can run between fork and exec (`CommandExt::pre_exec`).

use std::io;

/// `PR_SET_NO_NEW_PRIVS`: neither this process nor anything it execs can gain
/// privileges (set-id binaries, file capabilities); also what lets an unprivileged
/// process install a seccomp filter.
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new session (`setsid`): the process leaves its parent's terminal and process
/// group, so it outlives the command that started it.
pub fn new_session() -> io::Result<()> {
    // SAFETY: setsid has no arguments; async-signal-safe. It fails only for a process
    // group leader, which a freshly forked child is not.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `PR_SET_PDEATHSIG` = SIGKILL: the process dies with the thread that spawned it.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `RLIMIT_CORE` = 0, kept across exec: a crashing VMM or device daemon writes no
/// core file, which would hold the guest's memory.
pub fn no_core_dumps() -> io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; async-signal-safe.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Everything a VM's host process takes on between fork and exec: no new
/// privileges, no core dumps.
pub fn vm_process() -> io::Result<()> {
    no_new_privs()?;
    no_core_dumps()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_child_runs_with_no_new_privs() {
        let mut cmd = std::process::Command::new("grep");
        cmd.args(["^NoNewPrivs:", "/proc/self/status"]);
        // SAFETY: no_new_privs only calls prctl, which is async-signal-safe.
        unsafe { cmd.pre_exec(no_new_privs) };
        let out = cmd.output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "NoNewPrivs:\t1"
        );
    }

    #[test]
    fn a_vm_process_can_dump_no_core() {
        let mut cmd = std::process::Command::new("grep");
        cmd.args(["^Max core file size", "/proc/self/limits"]);
        // SAFETY: vm_process only calls prctl and setrlimit, both async-signal-safe.
        unsafe { cmd.pre_exec(vm_process) };
        let out = cmd.output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.get(4..6), Some(&["0", "0"][..]), "{line}");
    }
}
