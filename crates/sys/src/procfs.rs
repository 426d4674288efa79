//! Processes as /proc shows them. Every reader tolerates a process that vanishes
//! between two reads (`None`, or zero for sums): a PID is only ever a hint.

use std::fs;

/// The fields of /proc/PID/stat that skiff uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub ppid: u32,
    /// User and system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time in clock ticks since boot: with the PID, a process's identity.
    pub start_ticks: u64,
    /// Resident set, in pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// Exited: a zombie not yet reaped, or dead.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of /proc/PID/stat (the command may hold spaces and parentheses:
/// the fields start after its last `)`).
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let f: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        cpu_ticks: num(11)?.saturating_add(num(12)?),
        start_ticks: num(19)?,
        rss_pages: num(21)?,
    })
}

/// /proc/PID/stat of `pid`, if it exists.
pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Start time of `pid` in clock ticks since boot; `None` if it does not exist or has
/// exited (a zombie).
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).filter(|s| !s.exited()).map(|s| s.start_ticks)
}

/// Whether `pid` is a live (not zombie) process that, if `start` is given, started at
/// those ticks (so a recycled PID is not mistaken for it).
pub fn alive(pid: u32, start: Option<u64>) -> bool {
    stat(pid).is_some_and(|s| !s.exited() && start.is_none_or(|t| t == s.start_ticks))
}

/// Exited (a zombie not yet reaped by its parent) or no such process.
pub fn gone(pid: u32) -> bool {
    stat(pid).is_none_or(|s| s.exited())
}

/// The value of `name:` in /proc/PID/status (`NoNewPrivs`, `Seccomp`, `Uid`, ...).
pub fn status_field(pid: u32, name: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// Proportional set size of `pid` in bytes (0 if unknown).
pub fn pss_bytes(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `root` and all its descendants, `root` first (parents before children).
pub fn tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(s) = stat(pid) {
                parents.push((pid, s.ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// CPU ticks and PSS bytes of `root` and all its descendants (a container's supervisor
/// is the parent of its VMM and device daemons).
pub fn tree_usage(root: u32) -> (u64, u64) {
    tree(root).iter().fold((0, 0), |(t, m), &pid| {
        (t + stat(pid).map_or(0, |s| s.cpu_ticks), m + pss_bytes(pid))
    })
}

/// Clock ticks per second (`_SC_CLK_TCK`), at least 1.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1)
}

/// Bytes per page (`_SC_PAGESIZE`), at least 1.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .unwrap_or(4096)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_past_odd_command_names() {
        let line = "42 (a) (b c) S 7 42 42 0 -1 4194560 100 0 0 0 11 5 0 0 20 0 1 0 \
                    12345 1000000 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            ProcStat {
                state: 'S',
                ppid: 7,
                cpu_ticks: 16,
                start_ticks: 12345,
                rss_pages: 250,
            }
        );
        assert!(!s.exited());
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) Z").is_none());
    }

    #[test]
    fn this_process_is_alive_and_in_its_own_tree() {
        let me = std::process::id();
        let start = start_ticks(me);
        assert!(start.is_some());
        assert!(alive(me, start));
        assert!(!alive(me, start.map(|t| t + 1)));
        assert!(!gone(me));
        assert_eq!(tree(me)[0], me);
        assert!(pss_bytes(me) > 0);
        assert!(status_field(me, "Name").is_some_and(|n| !n.is_empty()));
        assert!(status_field(me, "NoSuchField").is_none());
        assert!(gone(u32::MAX));
    }
}
