//! `events`: the container's resource usage, once or every interval (`--stats`).

use super::*;

/// (CPU time in ns, resident bytes) of one process.
pub(super) fn usage_of(pid: u32) -> (u64, u64) {
    use skiff_sys::procfs;
    let ns_per_tick = 1_000_000_000 / procfs::clock_ticks();
    procfs::stat(pid).map_or((0, 0), |s| {
        (s.cpu_ticks * ns_per_tick, s.rss_pages * procfs::page_size())
    })
}

pub(super) fn stats_line(id: &str, pid: u32) -> Value {
    let tree = skiff_sys::procfs::tree(pid);
    let (cpu, mem) = tree
        .iter()
        .map(|p| usage_of(*p))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {"usage": {"total": cpu}},
            "memory": {"usage": {"usage": mem}},
            "pids": {"current": tree.len()},
        },
    })
}

pub(super) fn events(store: &Store, id: &str, once: bool, interval: u64) -> Result<i32> {
    loop {
        let rec = store.lock(id)?.load()?;
        let (Status::Created | Status::Running | Status::Paused, Some(pid)) =
            (rec.status(), rec.pid)
        else {
            if once {
                bail!("container not running");
            }
            return Ok(0);
        };
        println!("{}", stats_line(id, pid));
        if once {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(interval.max(1)));
    }
}
