//! From an image config plus `run`/`create` flags to the container's process, as
//! Docker does it: Entrypoint + Cmd (a CLI command replaces Cmd; `--entrypoint`
//! replaces Entrypoint and drops the image's Cmd), Env (image first, then `--env-file`,
//! then `-e`, by key; PATH defaulted; HOSTNAME set), WorkingDir, User, StopSignal.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_proto::{User, DEFAULT_PATH};

use crate::error::invalid;
use crate::{Error, Result};

/// The parts of an image's `config` a container uses.
#[derive(Debug, Default, Clone)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl ImageDefaults {
    /// Reads the `config` object of an image config JSON; wrong types count as absent.
    pub fn from_config_json(v: &Value) -> Self {
        let c = &v["config"];
        let strings = |k: &str| -> Vec<String> {
            c[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        Self {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: string("WorkingDir"),
            user: string("User"),
            stop_signal: c["StopSignal"].as_str().map(str::to_owned),
            labels: c["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Entrypoint and command after `--entrypoint` and the CLI command are applied.
pub fn entrypoint_and_cmd(
    image: &ImageDefaults,
    entrypoint: Option<&str>,
    cli_cmd: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    let (ep, cmd) = match entrypoint {
        // `--entrypoint ""` clears it; either way the image's Cmd no longer applies.
        Some("") => (Vec::new(), cli_cmd.to_vec()),
        Some(e) => (vec![e.to_owned()], cli_cmd.to_vec()),
        None if cli_cmd.is_empty() => (image.entrypoint.clone(), image.cmd.clone()),
        None => (image.entrypoint.clone(), cli_cmd.to_vec()),
    };
    if ep.is_empty() && cmd.is_empty() {
        invalid!("no command specified (the image has no Entrypoint or Cmd)");
    }
    Ok((ep, cmd))
}

/// Merges `KEY=VALUE` entries by key, later ones winning. A bare `KEY` takes the
/// host's value, or is dropped if the host has none (as Docker).
pub fn merge_env(base: &[String], overrides: &[String]) -> Result<Vec<String>> {
    let mut env: Vec<String> = base.to_vec();
    for e in overrides {
        let entry = match e.split_once('=') {
            Some(("", _)) => invalid!("invalid environment variable {e:?}: empty name"),
            Some(_) => e.clone(),
            None if e.is_empty() => invalid!("invalid environment variable: empty"),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_owned();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    Ok(env)
}

/// Lines of an `--env-file`: `KEY=VALUE` or `KEY`; blank lines and `#` comments skipped.
pub fn read_env_file(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        context: format!("read --env-file {path}"),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// The process environment: image Env, then the overrides, PATH defaulted, HOSTNAME
/// set, TERM for a terminal.
pub fn process_env(
    image: &ImageDefaults,
    hostname: &str,
    overrides: &[String],
    tty: bool,
) -> Result<Vec<String>> {
    let mut base = vec![format!("HOSTNAME={hostname}")];
    base = merge_env(&base, &image.env)?;
    let mut env = merge_env(&base, overrides)?;
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    Ok(env)
}

pub fn working_dir(image: &ImageDefaults, flag: Option<&str>) -> Result<String> {
    let w = flag.unwrap_or(&image.working_dir);
    if w.is_empty() {
        return Ok("/".into());
    }
    if !w.starts_with('/') {
        invalid!("the working directory {w:?} is invalid: it needs to be an absolute path");
    }
    Ok(w.to_owned())
}

/// `-u` (or the image's User): `UID[:GID]`, `NAME[:GROUP]`. The numeric form is
/// applied as is; names (and a UID's primary group) are resolved by the agent against
/// the container's /etc/passwd and /etc/group, so the spec carries the text too.
pub fn parse_user(s: &str) -> Result<(User, Option<String>)> {
    if s.is_empty() {
        return Ok((User::default(), None));
    }
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let valid = |x: &str| {
        !x.is_empty()
            && x.len() <= 256
            && x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
    };
    if !valid(u) || g.is_some_and(|g| !valid(g)) {
        invalid!("invalid user {s:?}: expected NAME|UID[:GROUP|GID]");
    }
    let numeric = |x: &str| x.parse::<u32>().ok();
    let uid = numeric(u).unwrap_or(0);
    let gid = g.and_then(numeric).unwrap_or(0);
    Ok((
        User {
            uid,
            gid,
            additional_gids: Vec::new(),
            umask: None,
        },
        Some(s.to_owned()),
    ))
}

/// Signal names (`SIGTERM`, `TERM`) and numbers, as `kill -s` and StopSignal take them.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        invalid!("invalid signal {s:?}");
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => invalid!("invalid signal {s:?}"),
    };
    Ok(n)
}

/// `--label K=V` (or `K` for an empty value) on top of the image's labels.
pub fn labels(image: &ImageDefaults, flags: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = image.labels.clone();
    for l in flags {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            invalid!("invalid label {l:?}: empty key");
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageDefaults {
        ImageDefaults::from_config_json(&serde_json::json!({"config": {
            "Entrypoint": ["/ep"], "Cmd": ["a", "b"], "Env": ["PATH=/x", "A=1"],
            "WorkingDir": "/w", "User": "7:8", "StopSignal": "SIGQUIT",
            "Labels": {"l": "v"}
        }}))
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let i = image();
        assert_eq!(
            entrypoint_and_cmd(&i, None, &[]).unwrap(),
            (v(&["/ep"]), v(&["a", "b"]))
        );
        assert_eq!(
            entrypoint_and_cmd(&i, None, &v(&["c"])).unwrap(),
            (v(&["/ep"]), v(&["c"]))
        );
        assert_eq!(
            entrypoint_and_cmd(&i, Some("/e2"), &[]).unwrap(),
            (v(&["/e2"]), v(&[]))
        );
        assert_eq!(
            entrypoint_and_cmd(&i, Some(""), &v(&["sh"])).unwrap(),
            (v(&[]), v(&["sh"]))
        );
        assert!(entrypoint_and_cmd(&ImageDefaults::default(), None, &[]).is_err());
        assert!(entrypoint_and_cmd(&i, Some(""), &[]).is_err());
    }

    #[test]
    fn env_merges_by_key() {
        let i = image();
        let env = process_env(&i, "h", &v(&["A=2", "B=3"]), true).unwrap();
        assert_eq!(
            env,
            v(&["HOSTNAME=h", "PATH=/x", "A=2", "B=3", "TERM=xterm"])
        );
        let env = process_env(&ImageDefaults::default(), "h", &[], false).unwrap();
        assert!(env[0].starts_with("PATH=/usr/local/sbin"));
        assert!(merge_env(&[], &v(&["=x"])).is_err());
        assert_eq!(
            merge_env(&[], &v(&["SKIFF_SURELY_UNSET_VAR"])).unwrap(),
            v(&[])
        );
    }

    #[test]
    fn workdir_user_signal_labels() {
        let i = image();
        assert_eq!(working_dir(&i, None).unwrap(), "/w");
        assert_eq!(working_dir(&ImageDefaults::default(), None).unwrap(), "/");
        assert!(working_dir(&i, Some("rel")).is_err());
        let (u, name) = parse_user("7:8").unwrap();
        assert_eq!((u.uid, u.gid, name.as_deref()), (7, 8, Some("7:8")));
        assert_eq!(parse_user("").unwrap(), (User::default(), None));
        assert_eq!(parse_user("nobody").unwrap().1.as_deref(), Some("nobody"));
        assert!(parse_user("a b").is_err());
        assert!(parse_user("x:").is_err());
        assert_eq!(parse_signal("SIGQUIT").unwrap(), libc::SIGQUIT);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("SIGNOPE").is_err());
        let l = labels(&i, &v(&["a=b", "l=w"])).unwrap();
        assert_eq!(l["a"], "b");
        assert_eq!(l["l"], "w");
        assert!(labels(&i, &v(&["=x"])).is_err());
    }
}
