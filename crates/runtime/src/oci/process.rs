//! From an OCI runtime-spec `process` to the agent's [`ProcessSpec`].

use skiff_proto::{Capabilities, ProcessSpec, Rlimit, User};

use crate::{Error, Result};

/// Converts the OCI process of a bundle's config.json. Fields that mean nothing inside
/// a dedicated VM (apparmor, selinux labels, OOM score) are ignored here; seccomp lives
/// in `linux` and is added by [`crate::oci::Bundle`].
pub fn process_from_oci(p: &oci_spec::runtime::Process) -> Result<ProcessSpec> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::Invalid("process.args must not be empty".into()));
    }
    let cwd = p.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(Error::Invalid(format!(
            "process.cwd {cwd:?} must be an absolute path"
        )));
    }
    let u = p.user();
    let rlimits = p
        .rlimits()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|r| Rlimit {
            kind: r.typ().to_string(),
            soft: r.soft(),
            hard: r.hard(),
        })
        .collect();
    let console_size = p
        .console_size()
        .as_ref()
        .map(|b| (clamp_u16(b.height()), clamp_u16(b.width())));
    Ok(ProcessSpec {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd,
        user: User {
            uid: u.uid(),
            gid: u.gid(),
            additional_gids: u.additional_gids().clone().unwrap_or_default(),
            umask: u.umask(),
        },
        user_name: None,
        rlimits,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        terminal: p.terminal().unwrap_or(false),
        console_size,
        stdin: p.terminal().unwrap_or(false),
        capabilities: p
            .capabilities()
            .as_ref()
            .map(|c| capabilities(c).map(Box::new))
            .transpose()?,
        seccomp: None,
    })
}

/// Capability names in kernel order: the index is the capability's number.
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability name ("CAP_CHOWN" -> 0).
pub fn capability_number(name: &str) -> Option<u8> {
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .and_then(|i| u8::try_from(i).ok())
}

fn capabilities(c: &oci_spec::runtime::LinuxCapabilities) -> Result<Capabilities> {
    let set = |s: &Option<oci_spec::runtime::Capabilities>| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for cap in s.iter().flatten() {
            let name = serde_json::to_value(cap)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let n = capability_number(&name).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown capability {name:?} in process.capabilities"
                ))
            })?;
            out.push(n);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    };
    Ok(Capabilities {
        bounding: set(c.bounding())?,
        effective: set(c.effective())?,
        permitted: set(c.permitted())?,
        inheritable: set(c.inheritable())?,
        ambient: set(c.ambient())?,
    })
}

fn clamp_u16(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// Parses `-u UID[:GID]` (numeric; names need the image's /etc/passwd, which the
/// container commands resolve).
pub fn parse_numeric_user(s: &str) -> Result<User> {
    let bad = || Error::Invalid(format!("invalid user {s:?}: expected UID[:GID] as numbers"));
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?),
        None => {
            let uid = s.parse().map_err(|_| bad())?;
            (uid, uid)
        }
    };
    Ok(User {
        uid,
        gid,
        additional_gids: Vec::new(),
        umask: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, UserBuilder};

    #[test]
    fn oci_process_converts() {
        let p = ProcessBuilder::default()
            .args(vec!["/bin/sh".to_string(), "-c".into(), "true".into()])
            .env(vec!["A=1".to_string()])
            .cwd("/work")
            .user(
                UserBuilder::default()
                    .uid(1000u32)
                    .gid(100u32)
                    .additional_gids(vec![5u32])
                    .umask(0o077u32)
                    .build()
                    .unwrap(),
            )
            .rlimits(vec![PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(1024u64)
                .hard(2048u64)
                .build()
                .unwrap()])
            .no_new_privileges(true)
            .build()
            .unwrap();
        let s = process_from_oci(&p).unwrap();
        assert_eq!(s.args, ["/bin/sh", "-c", "true"]);
        assert_eq!(s.cwd, "/work");
        assert_eq!(s.user.uid, 1000);
        assert_eq!(s.user.additional_gids, [5]);
        assert_eq!(s.user.umask, Some(0o077));
        assert_eq!(s.rlimits[0].kind, "RLIMIT_NOFILE");
        assert!(s.no_new_privileges);
    }

    #[test]
    fn bad_processes_are_refused() {
        let p = ProcessBuilder::default()
            .args(Vec::<String>::new())
            .build()
            .unwrap();
        assert!(process_from_oci(&p).is_err());
        let p = ProcessBuilder::default()
            .args(vec!["x".to_string()])
            .cwd("rel")
            .build()
            .unwrap();
        assert!(process_from_oci(&p).is_err());
    }

    #[test]
    fn users_parse() {
        assert_eq!(parse_numeric_user("1000").unwrap().gid, 1000);
        let u = parse_numeric_user("1:2").unwrap();
        assert_eq!((u.uid, u.gid), (1, 2));
        assert!(parse_numeric_user("root").is_err());
        assert!(parse_numeric_user("1:").is_err());
        assert!(parse_numeric_user("-1").is_err());
    }
}
