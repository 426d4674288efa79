//! Phase marks for benchmarks: with `SKIFF_TRACE_PHASES=FILE` set, each mark appends
//! `<name> <unix-nanoseconds>` to FILE. Without it, marks cost one env lookup.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records that phase boundary `name` happened `ago` before now.
pub fn mark_ago(name: &str, ago: Duration) {
    let Some(path) = std::env::var_os("SKIFF_TRACE_PHASES") else {
        return;
    };
    let at = SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line keeps concurrent writers' lines whole.
        let _ = f.write_all(format!("{name} {at}\n").as_bytes());
    }
}

pub fn mark(name: &str) {
    mark_ago(name, Duration::ZERO);
}
