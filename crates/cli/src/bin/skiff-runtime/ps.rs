//! `ps`: with `--format json` the host pids that stand for the container's processes
//! (the supervisor and every live exec proxy, which is what containerd's shim matches
//! exec pids against); as a table, the processes inside the guest as the agent lists
//! them, numbered as the container's PID namespace numbers them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use skiff_proto::GuestProcess;
use skiff_runtime::container::process_start_ticks;
use skiff_runtime::oci::{state, Status, Store};
use skiff_runtime::owner_only;
use skiff_runtime::AgentConn;

const EXECS_DIR: &str = "execs";

/// An exec proxy's entry in its container's state directory, removed when dropped.
pub struct ExecEntry(PathBuf);

impl Drop for ExecEntry {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Records the calling process as an exec proxy of the container in `state_dir`.
pub fn register_exec(state_dir: &Path) -> Result<ExecEntry> {
    let dir = state_dir.join(EXECS_DIR);
    owner_only::dir(&dir)?;
    let pid = std::process::id();
    let ticks = process_start_ticks(pid).unwrap_or(0);
    let path = dir.join(pid.to_string());
    owner_only::write_atomic(&path, ticks.to_string().as_bytes())?;
    Ok(ExecEntry(path))
}

/// The live exec proxies of the container in `state_dir` (entries of proxies that died
/// without cleaning up are ignored: their pid's start time no longer matches).
pub fn exec_pids(state_dir: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(state_dir.join(EXECS_DIR)) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = rd
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let ticks = std::fs::read_to_string(e.path()).ok()?.trim().parse().ok();
            state::process_alive(pid, ticks.filter(|t| *t != 0)).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn table(procs: &[GuestProcess]) -> String {
    let mut out = format!("{:<8} {:>7} {:>7} CMD\n", "UID", "PID", "PPID");
    for p in procs {
        out.push_str(&format!(
            "{:<8} {:>7} {:>7} {}\n",
            p.uid, p.pid, p.ppid, p.cmd
        ));
    }
    out
}

pub fn ps(store: &Store, id: &str, format: &str) -> Result<i32> {
    let rec = store.lock(id)?.load()?;
    let status = rec.status();
    let live = matches!(status, Status::Created | Status::Running | Status::Paused);
    match format {
        "json" => {
            let mut pids: Vec<u32> = if live {
                rec.pid.into_iter().collect()
            } else {
                Vec::new()
            };
            if live {
                pids.extend(exec_pids(&store.dir(id)));
            }
            println!("{}", serde_json::to_string(&pids)?);
        }
        "table" => {
            let procs = match (status, &rec.vsock_uds) {
                (Status::Running, Some(uds)) => {
                    let mut agent =
                        AgentConn::connect(uds, skiff_proto::AGENT_PORT, Duration::from_secs(10))?;
                    let list = agent.list_processes()?;
                    agent.sender().hang_up();
                    list
                }
                (Status::Paused, _) => bail!("container {id} is paused"),
                _ => Vec::new(),
            };
            print!("{}", table(&procs));
        }
        f => bail!("invalid format {f:?}"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_entries_list_live_proxies_only() {
        let d = tempfile::tempdir().unwrap();
        assert!(exec_pids(d.path()).is_empty());
        let entry = register_exec(d.path()).unwrap();
        // A proxy that died without cleaning up: its pid now has another start time.
        let execs = d.path().join(EXECS_DIR);
        std::fs::write(execs.join("1"), "12345678").unwrap();
        std::fs::write(execs.join("not-a-pid"), "1").unwrap();
        assert_eq!(exec_pids(d.path()), [std::process::id()]);
        drop(entry);
        assert!(exec_pids(d.path()).is_empty());
    }

    #[test]
    fn the_table_lists_guest_processes() {
        let t = table(&[GuestProcess {
            pid: 1,
            ppid: 0,
            uid: 0,
            cmd: "sleep 1000".into(),
        }]);
        assert_eq!(
            t.lines().collect::<Vec<_>>(),
            [
                "UID          PID    PPID CMD",
                "0              1       0 sleep 1000"
            ]
        );
    }
}
