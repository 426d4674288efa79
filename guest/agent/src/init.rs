//! Early PID 1 work: move off the initramfs root and mount the pseudo filesystems.
//!
//! The kernel starts us on `rootfs`, which can never be pivoted away from, so the first
//! run copies the agent into a tmpfs, moves that tmpfs over `/` (as switch_root does)
//! and re-executes itself. From then on the agent's root is an ordinary mount and each
//! container gets a real `pivot_root` in its own mount namespace.

use std::io;
use std::path::Path;

use crate::sys::{self, check, cstring, mount};

const STAGE_ENV: &str = "SKIFF_AGENT_STAGE";

pub fn prepare_guest() -> io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if pid == 1 && std::env::var_os(STAGE_ENV).is_none() {
        return leave_initramfs_root();
    }
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    mount_once(
        "proc",
        "/proc",
        "proc",
        nosuid_nodev | libc::MS_NOEXEC,
        None,
    )?;
    mount_once(
        "sysfs",
        "/sys",
        "sysfs",
        nosuid_nodev | libc::MS_NOEXEC,
        None,
    )?;
    mount_once(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_once(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666,gid=5"),
    )?;
    mount_once("shm", "/dev/shm", "tmpfs", nosuid_nodev, Some("mode=1777"))?;
    mount_once("run", "/run", "tmpfs", nosuid_nodev, Some("mode=0755"))?;
    Ok(())
}

fn mount_once(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    match mount(source, Path::new(target), fstype, flags, data) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => other,
    }
}

/// Stage 1: copy ourselves into a tmpfs, make it `/`, and exec stage 2.
fn leave_initramfs_root() -> io::Result<()> {
    let new_root = Path::new("/newroot");
    std::fs::create_dir_all(new_root)?;
    mount("newroot", new_root, "tmpfs", 0, Some("mode=0755"))?;
    let me = std::fs::read("/init")?;
    let target = new_root.join("init");
    std::fs::write(&target, me)?;
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // Free the initramfs copy; what is left of rootfs stays hidden underneath.
    let _ = std::fs::remove_file("/init");

    sys::chdir(&cstring("/newroot")?)?;
    mount(".", Path::new("/"), "", libc::MS_MOVE, None)?;
    let dot = cstring(".")?;
    // SAFETY: dot is a valid NUL-terminated path.
    check(unsafe { libc::chroot(dot.as_ptr()) })?;
    sys::chdir(&cstring("/")?)?;

    let init = cstring("/init")?;
    let argv = [init.as_ptr(), std::ptr::null()];
    let env_stage = cstring(&format!("{STAGE_ENV}=2"))?;
    let path = cstring("PATH=/usr/sbin:/usr/bin:/sbin:/bin")?;
    let envp = [env_stage.as_ptr(), path.as_ptr(), std::ptr::null()];
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that live
    // until execve, which only returns on failure.
    unsafe { libc::execve(init.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(io::Error::last_os_error())
}
