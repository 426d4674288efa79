//! From an OCI runtime-spec `process` to the agent's [`ProcessSpec`].

use skiff_proto::{ProcessSpec, Rlimit, User};

use crate::{Error, Result};

/// Converts the OCI process of a bundle's config.json. Fields that mean nothing inside
/// a dedicated VM (apparmor, selinux labels, OOM score) are ignored here; capabilities
/// and seccomp are applied by the caller's later work.
pub fn process_from_oci(p: &oci_spec::runtime::Process) -> Result<ProcessSpec> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::Config("process.args must not be empty".into()));
    }
    let cwd = p.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(Error::Config(format!(
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
    })
}

fn clamp_u16(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// Parses `-u UID[:GID]` (numeric; names need the image's /etc/passwd, which the
/// container commands resolve).
pub fn parse_numeric_user(s: &str) -> Result<User> {
    let bad = || Error::Config(format!("invalid user {s:?}: expected UID[:GID] as numbers"));
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
