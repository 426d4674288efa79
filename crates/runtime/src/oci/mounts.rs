//! A bundle's `mounts`, in spec order, as the guest makes them: binds become 9p shares
//! (a single file is bound from a share of its directory), filesystems by type keep
//! their `MS_*` flags and options.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;
use skiff_proto::{MountEntry, MountKind};

use crate::{Error, Result};

/// Filesystem types the guest mounts itself. cgroup and cgroup2 are accepted and
/// skipped in the guest with a logged reason when its kernel has no cgroup support
/// (callers always ask for them; refusing would refuse every containerd and Podman
/// container).
const FS_TYPES: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// A host directory shared into the VM; `tag` names it for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleShare {
    pub host: PathBuf,
    pub readonly: bool,
    pub tag: String,
}

/// The mounts of a bundle: the directories to share and what the guest mounts where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    pub shares: Vec<BundleShare>,
    pub entries: Vec<MountEntry>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// `MS_*` flags and the remaining filesystem options of one mount's option list, as
/// runc reads them: known flag words set or clear a flag, propagation words are left
/// to the guest's private mount tree, anything else is filesystem data.
pub fn parse_options(opts: &[String]) -> (u64, String) {
    let mut flags: u64 = 0;
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        let (set, clear): (u64, u64) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" | "defaults" => (0, 0),
            other => {
                data.push(other);
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

/// A container path: absolute, no `..`.
pub fn check_target(t: &Path) -> Result<String> {
    if !t.is_absolute()
        || t.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad(format!(
            "invalid mount destination {}: it must be absolute without ..",
            t.display()
        )));
    }
    Ok(t.to_string_lossy().into_owned())
}

impl Mounts {
    /// The spec's mounts in order.
    pub fn from_spec(mounts: &[Mount]) -> Result<Self> {
        let mut out = Self::default();
        for m in mounts {
            let target = check_target(m.destination())?;
            let opts = m.options().clone().unwrap_or_default();
            let (flags, data) = parse_options(&opts);
            let typ = m.typ().as_deref().unwrap_or("");
            if typ == "bind" || flags & libc::MS_BIND != 0 {
                let Some(src) = m.source() else {
                    return Err(bad(format!("bind mount at {target} has no source")));
                };
                out.add_bind(src, &target, flags & libc::MS_RDONLY != 0)?;
                continue;
            }
            if !FS_TYPES.contains(&typ) {
                return Err(bad(format!(
                    "mount at {target}: type {typ:?} is not supported in the microVM \
                     (supported: bind, {})",
                    FS_TYPES.join(", ")
                )));
            }
            let source = m
                .source()
                .as_ref()
                .map_or_else(|| typ.to_owned(), |s| s.to_string_lossy().into_owned());
            out.entries.push(MountEntry {
                target,
                kind: MountKind::Fs {
                    fstype: typ.to_owned(),
                    source,
                    flags,
                    data,
                },
            });
        }
        Ok(out)
    }

    /// Adds a bind of the host path `src` (a directory, or a file bound from a share of
    /// its directory) at `target`.
    pub fn add_bind(&mut self, src: &Path, target: &str, readonly: bool) -> Result<()> {
        if !src.is_absolute() {
            return Err(bad(format!(
                "bind mount source {} must be absolute",
                src.display()
            )));
        }
        let meta = std::fs::metadata(src).map_err(|e| {
            bad(format!(
                "bind mount source {} does not exist: {e}",
                src.display()
            ))
        })?;
        let (dir, file) = if meta.is_dir() {
            (src.to_path_buf(), None)
        } else {
            let (Some(dir), Some(name)) = (src.parent(), src.file_name()) else {
                return Err(bad(format!("bind mount source {}", src.display())));
            };
            (dir.to_path_buf(), Some(name.to_string_lossy().into_owned()))
        };
        let tag = self.share(&dir, readonly);
        self.entries.push(MountEntry {
            target: target.to_owned(),
            kind: MountKind::Share {
                tag,
                file,
                readonly,
            },
        });
        Ok(())
    }

    /// The tag of the share of `dir`, added once per directory and mode.
    fn share(&mut self, dir: &Path, readonly: bool) -> String {
        if let Some(s) = self
            .shares
            .iter()
            .find(|s| s.host == dir && s.readonly == readonly)
        {
            return s.tag.clone();
        }
        let tag = format!("skiffv{}", self.shares.len());
        self.shares.push(BundleShare {
            host: dir.to_path_buf(),
            readonly,
            tag: tag.clone(),
        });
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_become_flags_and_data_in_order() {
        let (flags, data) = parse_options(&opts(&[
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "ro",
            "rw",
            "noexec",
            "rprivate",
        ]));
        assert_eq!(
            flags,
            libc::MS_NOSUID | libc::MS_STRICTATIME | libc::MS_NOEXEC
        );
        assert_eq!(data, "mode=755,size=65536k");
        let (flags, data) = parse_options(&opts(&["rbind", "ro", "nodev", "relatime"]));
        assert_eq!(
            flags,
            libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NODEV | libc::MS_RELATIME
        );
        assert!(data.is_empty());
    }

    fn mount(json: &str) -> Mount {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn spec_order_is_kept_and_files_share_their_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("hosts"), "h").unwrap();
        std::fs::write(d.path().join("hostname"), "n").unwrap();
        let p = d.path().display();
        let list = [
            mount(r#"{"destination":"/proc","type":"proc","source":"proc"}"#),
            mount(&format!(
                r#"{{"destination":"/etc/hosts","type":"bind","source":"{p}/hosts","options":["rbind","rw"]}}"#
            )),
            mount(
                r#"{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}"#,
            ),
            mount(&format!(
                r#"{{"destination":"/etc/hostname","source":"{p}/hostname","options":["bind","ro"]}}"#
            )),
            mount(&format!(
                r#"{{"destination":"/data","type":"bind","source":"{p}","options":["rbind"]}}"#
            )),
        ];
        let m = Mounts::from_spec(&list).unwrap();
        let targets: Vec<_> = m.entries.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(
            targets,
            ["/proc", "/etc/hosts", "/dev", "/etc/hostname", "/data"]
        );
        // One rw share of the directory serves /etc/hosts and /data; ro is another.
        assert_eq!(m.shares.len(), 2);
        assert_eq!(m.shares[0].host, d.path());
        assert!(!m.shares[0].readonly && m.shares[1].readonly);
        assert_eq!(
            m.entries[1].kind,
            MountKind::Share {
                tag: "skiffv0".into(),
                file: Some("hosts".into()),
                readonly: false
            }
        );
        assert_eq!(
            m.entries[3].kind,
            MountKind::Share {
                tag: "skiffv1".into(),
                file: Some("hostname".into()),
                readonly: true
            }
        );
        assert_eq!(
            m.entries[4].kind,
            MountKind::Share {
                tag: "skiffv0".into(),
                file: None,
                readonly: false
            }
        );
        assert_eq!(
            m.entries[2].kind,
            MountKind::Fs {
                fstype: "tmpfs".into(),
                source: "tmpfs".into(),
                flags: libc::MS_NOSUID,
                data: "mode=755".into()
            }
        );
    }

    #[test]
    fn unsupported_types_and_bad_sources_are_refused() {
        for bad in [
            r#"{"destination":"/x","type":"ext4","source":"/dev/sda"}"#,
            r#"{"destination":"/x","type":"bind","source":"relative"}"#,
            r#"{"destination":"/x","type":"bind","source":"/no/such/path"}"#,
            r#"{"destination":"/x","type":"bind"}"#,
            r#"{"destination":"x","type":"proc","source":"proc"}"#,
        ] {
            assert!(Mounts::from_spec(&[mount(bad)]).is_err(), "{bad}");
        }
    }
}
