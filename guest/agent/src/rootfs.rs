//! The container's root filesystem: read-only layer disks stacked under overlayfs with
//! the upper and work directories on the writable disk, entered through `pivot_root` in
//! a mount namespace of its own.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use skiff_proto::ContainerConfig;

use crate::mounts::ProcMount;
use crate::mounts::{mount_share, share_target, TargetError};
use crate::sys::{self, check, cpath, cstring, mount, umount};

const LAYERS_DIR: &str = "/run/skiff/layers";
pub(crate) const WRITABLE_DIR: &str = "/run/skiff/writable";
const ROOTFS_DIR: &str = "/run/skiff/rootfs";

/// What is mounted in the agent's namespace, so stop can unmount it in order.
pub struct Mounted {
    pub rootfs: PathBuf,
    mounts: Vec<PathBuf>,
}

/// Finds a virtio-blk disk by its serial (virtio device ID).
fn disk_by_serial(serial: &str) -> io::Result<PathBuf> {
    for entry in std::fs::read_dir("/sys/block")? {
        let entry = entry?;
        let name = entry.file_name();
        if let Ok(s) = std::fs::read_to_string(entry.path().join("serial")) {
            if s.trim_end_matches(['\0', '\n', ' ']) == serial {
                return Ok(Path::new("/dev").join(name));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no disk with serial {serial:?} is attached"),
    ))
}

/// Mounts a layer read-only, whichever of erofs and ext4 it is.
fn mount_readonly(dev: &Path, target: &Path) -> io::Result<()> {
    let src = dev.to_string_lossy();
    let flags = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID;
    mount(&src, target, "erofs", flags, None)
        .or_else(|_| mount(&src, target, "ext4", flags, Some("noload")))
}

pub fn assemble(config: &ContainerConfig) -> io::Result<Mounted> {
    if let Some(tag) = &config.root_share {
        // An OCI bundle's rootfs: the host directory is the root, no layers.
        let rootfs = PathBuf::from(ROOTFS_DIR);
        std::fs::create_dir_all(&rootfs)?;
        mount_share(tag, &rootfs, config.readonly_rootfs)
            .map_err(|e| io::Error::new(e.kind(), format!("mount the root share {tag}: {e}")))?;
        let mut mounts = vec![rootfs.clone()];
        mount_shares(config, &rootfs, &mut mounts)?;
        if let Some(entries) = &config.mounts {
            crate::mounts::stage_shares(entries, &mut mounts)?;
        }
        return Ok(Mounted { rootfs, mounts });
    }
    if config.layers.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an image needs at least one layer",
        ));
    }
    let mut mounts = Vec::new();
    let mut lowers = Vec::new();
    for (i, serial) in config.layers.iter().enumerate() {
        let dev = disk_by_serial(serial)?;
        let dir = Path::new(LAYERS_DIR).join(i.to_string());
        std::fs::create_dir_all(&dir)?;
        mount_readonly(&dev, &dir)?;
        mounts.push(dir.clone());
        lowers.push(dir);
    }
    let writable = Path::new(WRITABLE_DIR);
    std::fs::create_dir_all(writable)?;
    match &config.writable {
        Some(serial) => {
            let dev = disk_by_serial(serial)?;
            mount(
                &dev.to_string_lossy(),
                writable,
                "ext4",
                libc::MS_NODEV | libc::MS_NOSUID,
                None,
            )?;
        }
        None => mount(
            "writable",
            writable,
            "tmpfs",
            libc::MS_NODEV | libc::MS_NOSUID,
            Some("mode=0755"),
        )?,
    }
    mounts.push(writable.to_path_buf());
    let upper = writable.join("upper");
    let work = writable.join("work");
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;

    // overlayfs lists the topmost lower first.
    let lowerdir = lowers
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let rootfs = PathBuf::from(ROOTFS_DIR);
    std::fs::create_dir_all(&rootfs)?;
    let opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let flags = if config.readonly_rootfs {
        libc::MS_RDONLY
    } else {
        0
    };
    mount("overlay", &rootfs, "overlay", flags, Some(&opts))?;
    mounts.push(rootfs.clone());
    mount_shares(config, &rootfs, &mut mounts)?;
    if let Some(entries) = &config.mounts {
        crate::mounts::stage_shares(entries, &mut mounts)?;
    }
    Ok(Mounted { rootfs, mounts })
}

/// Mounts the binds of `config` under `rootfs`, recording each in `mounts`.
fn mount_shares(
    config: &ContainerConfig,
    rootfs: &Path,
    mounts: &mut Vec<PathBuf>,
) -> io::Result<()> {
    for share in &config.shares {
        let target = share_target(rootfs, &share.target)?;
        // The mount point is created in the container's writable layer, as Docker does.
        std::fs::create_dir_all(&target)?;
        mount_share(&share.tag, &target, share.readonly).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("mount {} at {}: {e}", share.tag, share.target),
            )
        })?;
        mounts.push(target);
    }
    Ok(())
}

impl Mounted {
    /// Unmounts overlay, writable disk and layers (in reverse order) after a sync, so
    /// the writable layer is clean on disk.
    pub fn unmount(&mut self) {
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = umount(&m, 0) {
                crate::log!("unmount {}: {e}; detaching it", m.display());
                let _ = umount(&m, libc::MNT_DETACH);
            }
        }
        // SAFETY: as above.
        unsafe { libc::sync() };
    }
}

/// Builds the container's mount namespace on a dedicated thread (unshare affects only
/// the calling thread's filesystem context) and returns a handle that keeps the
/// namespace alive for later `setns` by every process started in the container, with
/// the proc mounts left for the container's process (its PID namespace's own proc).
pub fn enter_namespace(
    rootfs: &Path,
    config: &ContainerConfig,
    etc_files: Vec<(PathBuf, &'static str)>,
) -> io::Result<(OwnedFd, Vec<ProcMount>)> {
    let rootfs = rootfs.to_path_buf();
    let config = config.clone();
    std::thread::spawn(move || build_namespace(&rootfs, &config, &etc_files))
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
}

fn build_namespace(
    rootfs: &Path,
    config: &ContainerConfig,
    etc_files: &[(PathBuf, &'static str)],
) -> io::Result<(OwnedFd, Vec<ProcMount>)> {
    let (masked, readonly) = (&config.masked_paths, &config.readonly_paths);
    // SAFETY: unshare on the calling thread only; CLONE_NEWNS implies CLONE_FS.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS) })?;
    let ns = OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/mnt")?);
    // Nothing mounted in the container propagates back to the agent.
    mount(
        "none",
        Path::new("/"),
        "",
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mount(
        &rootfs.to_string_lossy(),
        rootfs,
        "",
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    let procs = match &config.mounts {
        Some(entries) => {
            let procs = crate::mounts::apply(rootfs, entries)?;
            crate::mounts::default_devices(rootfs);
            procs
        }
        None => mount_container_pseudo_fs(rootfs)?,
    };
    for (source, name) in etc_files {
        bind_etc_file(rootfs, source, name);
    }
    // After /sys and /dev exist, as most of these paths live there (those on proc are
    // applied again once proc is mounted).
    for path in readonly {
        make_readonly(rootfs, path)?;
    }
    for path in masked {
        mask(rootfs, path)?;
    }

    sys::chdir(&cpath(rootfs)?)?;
    let dot = cstring(".")?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it
    // leaves the container's rootfs as the only root.
    // SAFETY: both arguments are valid NUL-terminated paths.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(libc::c_int::try_from(ret).unwrap_or(-1))?;
    umount(Path::new("."), libc::MNT_DETACH)?;
    sys::chdir(&cstring("/")?)?;
    Ok((ns, procs))
}

/// Binds a file the agent wrote (hosts, resolv.conf) over the container's /etc/NAME,
/// creating an empty one to bind onto if needed. A symlinked /etc or file (it could
/// point anywhere) or a read-only rootfs without the file leaves the image's alone.
fn bind_etc_file(rootfs: &Path, source: &Path, name: &str) {
    let etc = rootfs.join("etc");
    let target = etc.join(name);
    let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    if is_link(&etc) || is_link(&target) {
        crate::log!("/etc/{name}: a symlink in the image; not replaced");
        return;
    }
    let prepared = std::fs::create_dir_all(&etc).and_then(|()| {
        if target.is_file() {
            Ok(())
        } else {
            std::fs::File::create(&target).map(drop)
        }
    });
    if let Err(e) = prepared {
        crate::log!("/etc/{name}: {e}; not replaced");
        return;
    }
    if let Err(e) = mount(&source.to_string_lossy(), &target, "", libc::MS_BIND, None) {
        crate::log!("/etc/{name}: {e}");
    }
}

/// `path` under `rootfs` if it exists, resolved without following symlinks (a symlink
/// anywhere on the way counts as missing: it could point out of the container).
fn existing_under(rootfs: &Path, path: &str) -> io::Result<Option<PathBuf>> {
    match share_target(rootfs, path) {
        Ok(p) => Ok(std::fs::symlink_metadata(&p).is_ok().then_some(p)),
        Err(TargetError::Symlink(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// OCI maskedPaths: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask(rootfs: &Path, path: &str) -> io::Result<()> {
    let Some(target) = existing_under(rootfs, path)? else {
        return Ok(());
    };
    if target.is_dir() {
        mount(
            "tmpfs",
            &target,
            "tmpfs",
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some("size=0"),
        )
    } else {
        let null = rootfs.join("dev/null");
        mount(&null.to_string_lossy(), &target, "", libc::MS_BIND, None)
    }
}

/// OCI readonlyPaths: bound onto itself, then remounted read-only keeping the nosuid,
/// nodev and noexec it had (a bind remount must repeat them or fails on locked mounts).
fn make_readonly(rootfs: &Path, path: &str) -> io::Result<()> {
    let Some(target) = existing_under(rootfs, path)? else {
        return Ok(());
    };
    let src = target.to_string_lossy().into_owned();
    mount(&src, &target, "", libc::MS_BIND | libc::MS_REC, None)?;
    let c = cpath(&target)?;
    // SAFETY: c is a valid path and st a valid out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
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
    mount(&src, &target, "", flags, None)
}

fn ensure_dir(path: &Path) -> bool {
    path.is_dir() || std::fs::create_dir_all(path).is_ok()
}

/// skiff's own containers: /sys, /dev (a small tmpfs with the usual nodes), /dev/pts,
/// /dev/shm, /dev/mqueue, and /proc left for the container's process.
fn mount_container_pseudo_fs(root: &Path) -> io::Result<Vec<ProcMount>> {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mut procs = Vec::new();
    if ensure_dir(&root.join("proc")) {
        procs.push(ProcMount {
            target: "/proc".into(),
            flags: nosuid_nodev_noexec,
            data: String::new(),
        });
    }
    let sys_dir = root.join("sys");
    if ensure_dir(&sys_dir) {
        mount(
            "sysfs",
            &sys_dir,
            "sysfs",
            nosuid_nodev_noexec | libc::MS_RDONLY,
            None,
        )?;
    }
    let dev = root.join("dev");
    if !ensure_dir(&dev) {
        return Ok(procs);
    }
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID,
        Some("mode=0755,size=65536k"),
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = cpath(&dev.join(name))?;
        // SAFETY: p is a valid path; makedev is a pure computation.
        check(unsafe {
            libc::mknod(
                p.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        })?;
        // SAFETY: as above; mknod's mode is filtered by the umask, so set it explicitly.
        check(unsafe { libc::chmod(p.as_ptr(), 0o666) })?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir_all(&pts)?;
    mount(
        "devpts",
        &pts,
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    std::fs::create_dir_all(&shm)?;
    mount(
        "shm",
        &shm,
        "tmpfs",
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    let mq = dev.join("mqueue");
    std::fs::create_dir_all(&mq)?;
    if let Err(e) = mount("mqueue", &mq, "mqueue", nosuid_nodev_noexec, None) {
        crate::log!("{e}");
    }
    Ok(procs)
}
