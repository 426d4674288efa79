//! An OCI bundle's mount list, made in spec order inside the container's mount
//! namespace (before `pivot_root`): binds from 9p shares (directories, or one file of a
//! shared directory), and filesystems by type with their flags and options. proc is
//! left for the container's first process, which mounts it for its own PID namespace.

use std::io;
use std::path::{Path, PathBuf};

use skiff_proto::{MountEntry, MountKind};

use crate::sys::{mount, umount};

/// Where each 9p share is mounted once, in the agent's namespace, for binds to use.
const STAGING_DIR: &str = "/run/skiff/shares";

/// A proc mount the container's process makes once it is PID 1 of its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcMount {
    pub target: String,
    pub flags: u64,
    pub data: String,
}

fn staging(tag: &str) -> io::Result<PathBuf> {
    if tag.is_empty()
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid share tag {tag:?}"),
        ));
    }
    Ok(Path::new(STAGING_DIR).join(tag))
}

/// Mounts every share the entries use at its staging directory (once per tag),
/// recording each mount for the stop sequence.
pub fn stage_shares(entries: &[MountEntry], mounted: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut done: Vec<&str> = Vec::new();
    for e in entries {
        let MountKind::Share { tag, readonly, .. } = &e.kind else {
            continue;
        };
        if done.contains(&tag.as_str()) {
            continue;
        }
        let dir = staging(tag)?;
        std::fs::create_dir_all(&dir)?;
        mount_share(tag, &dir, *readonly)
            .map_err(|e| io::Error::new(e.kind(), format!("mount the share {tag}: {e}")))?;
        mounted.push(dir);
        done.push(tag);
    }
    Ok(())
}

/// The kernel knows filesystem type `fstype` (from the agent's /proc/filesystems).
fn kernel_has(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| has_fs(&s, fstype))
        .unwrap_or(false)
}

fn has_fs(filesystems: &str, fstype: &str) -> bool {
    filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fstype))
}

/// A single file name inside a share: one normal component.
fn file_in_share(dir: &Path, file: &str) -> io::Result<PathBuf> {
    if file.is_empty() || file == "." || file == ".." || file.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid shared file name {file:?}"),
        ));
    }
    Ok(dir.join(file))
}

/// Makes `entries` under `rootfs` in order; returns the proc mounts left for the
/// container's process.
pub fn apply(rootfs: &Path, entries: &[MountEntry]) -> io::Result<Vec<ProcMount>> {
    let mut procs = Vec::new();
    for e in entries {
        let target = share_target(rootfs, &e.target)?;
        match &e.kind {
            MountKind::Share {
                tag,
                file,
                readonly,
            } => {
                bind_share(&staging(tag)?, file.as_deref(), &target, *readonly).map_err(|err| {
                    io::Error::new(err.kind(), format!("bind at {}: {err}", e.target))
                })?
            }
            MountKind::Fs {
                fstype,
                source,
                flags,
                data,
            } => {
                if fstype == "proc" {
                    std::fs::create_dir_all(&target)?;
                    procs.push(ProcMount {
                        target: e.target.clone(),
                        flags: *flags,
                        data: data.clone(),
                    });
                    continue;
                }
                if fstype.starts_with("cgroup") && !kernel_has(fstype) {
                    crate::log!(
                        "{fstype} at {} skipped: the guest kernel has no cgroup support \
                         (the microVM itself is the container's resource boundary)",
                        e.target
                    );
                    continue;
                }
                std::fs::create_dir_all(&target)?;
                let data = (!data.is_empty()).then_some(data.as_str());
                mount(source, &target, fstype, *flags, data)?;
            }
        }
    }
    Ok(procs)
}

fn bind_share(dir: &Path, file: Option<&str>, target: &Path, readonly: bool) -> io::Result<()> {
    let src = match file {
        Some(f) => {
            let src = file_in_share(dir, f)?;
            if !std::fs::symlink_metadata(&src)?.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{f} is not a regular file"),
                ));
            }
            if !target.exists() {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::File::create(target)?;
            }
            src
        }
        None => {
            std::fs::create_dir_all(target)?;
            dir.to_path_buf()
        }
    };
    let src_s = src.to_string_lossy();
    mount(&src_s, target, "", libc::MS_BIND | libc::MS_REC, None)?;
    if readonly {
        let flags =
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        if let Err(e) = mount(&src_s, target, "", flags, None) {
            let _ = umount(target, libc::MNT_DETACH);
            return Err(e);
        }
    }
    Ok(())
}

/// The runtime spec's default devices and /dev symlinks, where the spec's mounts left
/// them missing: each node is a bind of the guest's own, so this works on any /dev.
pub fn default_devices(rootfs: &Path) {
    let dev = rootfs.join("dev");
    if !dev.is_dir() {
        return;
    }
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        if std::fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        let made = std::fs::File::create(&target)
            .and_then(|_| mount(&format!("/dev/{name}"), &target, "", libc::MS_BIND, None));
        if let Err(e) = made {
            crate::log!("/dev/{name} for the container: {e}");
        }
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        if std::fs::symlink_metadata(&path).is_err() {
            if let Err(e) = std::os::unix::fs::symlink(to, &path) {
                crate::log!("/dev/{link} for the container: {e}");
            }
        }
    }
}

/// The paths of `paths` that lie on one of the proc mounts (re-applied after proc is
/// mounted, since they would otherwise sit under it).
pub fn under_procs(paths: &[String], procs: &[ProcMount]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| {
            procs.iter().any(|m| {
                let base = m.target.trim_end_matches('/');
                p.as_str() == base
                    || p.strip_prefix(base)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .cloned()
        .collect()
}

/// Mounts the share `tag` at `target` (a container root or a bind): virtio-fs, or
/// virtio-9p when no virtio-fs device has that tag (`SKIFF_QEMU_DEVICES=qemu`).
pub(crate) fn mount_share(tag: &str, target: &Path, readonly: bool) -> io::Result<()> {
    let mut flags = libc::MS_NODEV | libc::MS_NOSUID;
    if readonly {
        flags |= libc::MS_RDONLY;
    }
    let virtiofs = match mount(tag, target, "virtiofs", flags, None) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    mount(
        tag,
        target,
        "9p",
        flags,
        Some("trans=virtio,version=9p2000.L,msize=262144,cache=none"),
    )
    .map_err(|p9| io::Error::new(p9.kind(), format!("virtiofs: {virtiofs}; 9p: {p9}")))
}

/// Why a mount target was refused: callers treat a symlink on the way (which could
/// resolve outside the container's root) apart from a malformed path.
#[derive(Debug)]
pub(crate) enum TargetError {
    Invalid(io::Error),
    Symlink(String),
}

impl From<TargetError> for io::Error {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Invalid(e) => e,
            TargetError::Symlink(m) => io::Error::new(io::ErrorKind::InvalidInput, m),
        }
    }
}

/// Where a shared directory goes under `rootfs`: an absolute container path without
/// `..`, and no symlink on the way (it would resolve outside the container's root).
pub(crate) fn share_target(rootfs: &Path, target: &str) -> Result<PathBuf, TargetError> {
    let bad = |why: &str| {
        TargetError::Invalid(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("mount target {target:?}: {why}"),
        ))
    };
    let rel = target
        .strip_prefix('/')
        .ok_or_else(|| bad("must be absolute"))?;
    let mut out = rootfs.to_path_buf();
    for part in Path::new(rel).components() {
        match part {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::CurDir => {}
            _ => return Err(bad("must not contain ..")),
        }
        if std::fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(TargetError::Symlink(format!(
                "mount target {target:?}: a symlink on the way is not supported"
            )));
        }
    }
    if out == rootfs {
        return Err(bad("cannot be /"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystems_are_matched_by_name() {
        let list = "nodev\tsysfs\nnodev\tproc\nnodev\tcgroup2\n\text4\n";
        assert!(has_fs(list, "cgroup2"));
        assert!(has_fs(list, "ext4"));
        assert!(!has_fs(list, "cgroup"));
    }

    #[test]
    fn paths_under_proc_mounts() {
        let procs = [ProcMount {
            target: "/proc".into(),
            flags: 0,
            data: String::new(),
        }];
        let paths: Vec<String> = ["/proc/kcore", "/proc", "/procfoo", "/etc/x", "/proc/sys"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(
            under_procs(&paths, &procs),
            ["/proc/kcore", "/proc", "/proc/sys"]
        );
    }

    #[test]
    fn share_names_and_files_are_checked() {
        assert!(staging("skiffv0").is_ok());
        for bad in ["", "../x", "a/b", "a b"] {
            assert!(staging(bad).is_err(), "{bad}");
        }
        let d = Path::new("/run/skiff/shares/t");
        assert_eq!(file_in_share(d, "hosts").unwrap(), d.join("hosts"));
        for bad in ["", ".", "..", "a/b"] {
            assert!(file_in_share(d, bad).is_err(), "{bad}");
        }
    }
}
