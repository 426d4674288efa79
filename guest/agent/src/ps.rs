//! The container's processes for `ps`: every process of the guest whose PID namespace
//! is the container's, numbered as that namespace numbers them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use skiff_proto::{GuestProcess, MAX_PROCESSES};

const MAX_CMD: usize = 4096;

/// (pid in the namespace, parent pid as the agent sees it, uid) from /proc/<pid>/status.
fn parse_status(status: &str) -> Option<(i32, i32, u32)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // NSpid lists the pid in each namespace from the agent's down; the last is the
    // container's.
    let ns_pid = field("NSpid:")?.split_whitespace().last()?.parse().ok()?;
    let ppid = field("PPid:")?.parse().ok()?;
    let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
    Some((ns_pid, ppid, uid))
}

/// A command line from /proc/<pid>/cmdline (NUL-separated), or `[comm]`.
fn command(cmdline: &[u8], comm: &str) -> String {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut cmd = if args.is_empty() {
        format!("[{}]", comm.trim_end())
    } else {
        args.join(" ")
    };
    if cmd.len() > MAX_CMD {
        let mut end = MAX_CMD;
        while !cmd.is_char_boundary(end) {
            end -= 1;
        }
        cmd.truncate(end);
    }
    cmd
}

/// The processes in the PID namespace `ns`, by pid.
pub fn list(ns: &OwnedFd) -> io::Result<Vec<GuestProcess>> {
    // SAFETY: fstat on a valid fd into a zeroed, writable stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    crate::sys::check(unsafe { libc::fstat(ns.as_raw_fd(), &mut st) })?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        // A process that exits meanwhile simply drops out of the list.
        let Ok(meta) = std::fs::metadata(dir.join("ns/pid")) else {
            continue;
        };
        if meta.ino() != st.st_ino || meta.dev() != st.st_dev {
            continue;
        }
        let Some((ns_pid, ppid, uid)) = std::fs::read_to_string(dir.join("status"))
            .ok()
            .as_deref()
            .and_then(parse_status)
        else {
            continue;
        };
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        found.push((
            pid,
            ppid,
            GuestProcess {
                pid: ns_pid,
                ppid: 0,
                uid,
                cmd: command(cmdline.get(..MAX_CMD * 2).unwrap_or(&cmdline), &comm),
            },
        ));
        if found.len() >= MAX_PROCESSES {
            break;
        }
    }
    Ok(renumber(found))
}

/// Parents as the namespace numbers them (0 for a parent outside it), sorted by pid.
fn renumber(found: Vec<(i32, i32, GuestProcess)>) -> Vec<GuestProcess> {
    let ns_of: std::collections::HashMap<i32, i32> =
        found.iter().map(|(pid, _, p)| (*pid, p.pid)).collect();
    let mut out: Vec<GuestProcess> = found
        .into_iter()
        .map(|(_, ppid, mut p)| {
            p.ppid = ns_of.get(&ppid).copied().unwrap_or(0);
            p
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_from_the_innermost_namespace() {
        let status = "Name:\tsh\nPPid:\t40\nUid:\t1000\t1000\t1000\t1000\nNSpid:\t57\t3\n";
        assert_eq!(parse_status(status), Some((3, 40, 1000)));
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert_eq!(parse_status("PPid:\tnope\nUid:\t0\nNSpid:\t1\n"), None);
    }

    #[test]
    fn commands_and_parents() {
        assert_eq!(command(b"sh\0-c\0echo hi\0", "sh\n"), "sh -c echo hi");
        assert_eq!(command(b"", "kworker\n"), "[kworker]");
        assert_eq!(command(&[b'a'; 5000], "").len(), MAX_CMD);
        let p = |pid| GuestProcess {
            pid,
            ..GuestProcess::default()
        };
        // Agent pids 50 (ns 1), 60 (ns 2, child of 50), 70 (ns 3, an exec: parent 1).
        let out = renumber(vec![(60, 50, p(2)), (50, 1, p(1)), (70, 1, p(3))]);
        let pairs: Vec<_> = out.iter().map(|p| (p.pid, p.ppid)).collect();
        assert_eq!(pairs, [(1, 0), (2, 1), (3, 0)]);
    }
}
