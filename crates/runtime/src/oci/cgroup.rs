//! The host cgroup of a container's microVM, for its CPU bandwidth: the supervisor
//! joins it before the VM starts, so the VMM, its vCPU threads and its device daemons
//! all share one quota, and `update --cpu-quota` limits the whole microVM.
//!
//! cgroup v2 (`cpu.max`) where the unified hierarchy has the cpu controller, else the
//! cgroup v1 cpu controller (`cpu.cfs_quota_us`, `cpu.cfs_period_us`).

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_CPU_ROOTS: [&str; 2] = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"];
/// The parent of containers whose spec names no cgroupsPath.
const DEFAULT_PARENT: &str = "skiff-runtime";
/// The kernel's bounds for a CFS period, in microseconds.
const PERIOD_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
const DEFAULT_PERIOD: u64 = 100_000;

/// A CPU bandwidth limit: `quota` µs of CPU time every `period` µs; no quota is
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    pub quota: Option<u64>,
    pub period: u64,
}

impl CpuMax {
    /// From the OCI `cpu.quota` / `cpu.period` as runc reads them: absent or 0 keeps
    /// the current value (Docker sends zeros for what `update` does not change), a
    /// negative quota is unlimited.
    pub fn from_oci(quota: Option<i64>, period: Option<u64>, current: CpuMax) -> Result<Self> {
        let period = period.filter(|p| *p != 0).unwrap_or(current.period);
        if !PERIOD_RANGE.contains(&period) {
            return Err(Error::Invalid(format!(
                "invalid CPU period {period}: expected 1000 to 1000000 microseconds"
            )));
        }
        let quota = match quota {
            None | Some(0) => current.quota,
            Some(q) if q < 0 => None,
            Some(q) if q < 1_000 => {
                return Err(Error::Invalid(format!(
                    "invalid CPU quota {q}: at least 1000 microseconds"
                )))
            }
            Some(q) => Some(q.unsigned_abs()),
        };
        Ok(Self { quota, period })
    }
}

impl Default for CpuMax {
    fn default() -> Self {
        Self {
            quota: None,
            period: DEFAULT_PERIOD,
        }
    }
}

/// One container's cgroup directory (v1 or v2, told apart by its files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuCgroup {
    pub dir: PathBuf,
}

/// Which hierarchy carries the cpu controller here, if any.
fn cpu_root() -> Option<(PathBuf, bool)> {
    let v2 = Path::new(V2_ROOT);
    if fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu"))
    {
        return Some((v2.to_path_buf(), true));
    }
    V1_CPU_ROOTS
        .iter()
        .map(Path::new)
        .find(|r| r.join("cpu.cfs_quota_us").exists())
        .map(|r| (r.to_path_buf(), false))
}

/// `linux.cgroupsPath` in its cgroupfs form (`/a/b`), relative to the hierarchy's root,
/// checked to stay below it; systemd's `slice:prefix:name` form and nothing at all
/// give `skiff-runtime/<id>`.
pub fn relative_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let fallback = Path::new(DEFAULT_PARENT).join(id);
    let Some(p) = cgroups_path else {
        return Ok(fallback);
    };
    if p.as_os_str().is_empty() || p.to_string_lossy().contains(':') {
        return Ok(fallback);
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(Error::Invalid(format!(
                    "invalid cgroupsPath {}: `..` is not allowed",
                    p.display()
                )))
            }
        }
    }
    Ok(if out.as_os_str().is_empty() {
        fallback
    } else {
        out
    })
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(what)
}

impl CpuCgroup {
    /// Creates the cgroup `rel` below the cpu hierarchy; `None` where this host has no
    /// cpu controller the runtime can use.
    pub fn create(rel: &Path) -> Result<Option<Self>> {
        let Some((root, v2)) = cpu_root() else {
            return Ok(None);
        };
        let dir = root.join(rel);
        if v2 {
            // Every ancestor below the root must hand the cpu controller down.
            let mut parent = root.clone();
            for c in rel.components() {
                let ctl = parent.join("cgroup.subtree_control");
                fs::write(&ctl, "+cpu").map_err(io(format!("enable cpu in {}", ctl.display())))?;
                parent.push(c);
                fs::create_dir_all(&parent)
                    .map_err(io(format!("create cgroup {}", parent.display())))?;
            }
        } else {
            fs::create_dir_all(&dir).map_err(io(format!("create cgroup {}", dir.display())))?;
        }
        Ok(Some(Self { dir }))
    }

    fn is_v2(&self) -> bool {
        self.dir.join("cpu.max").exists()
    }

    /// Moves process `pid` (with its future children) into the cgroup.
    pub fn join(&self, pid: u32) -> Result<()> {
        let procs = self.dir.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(io(format!("join {}", procs.display())))
    }

    pub fn cpu_max(&self) -> Result<CpuMax> {
        let read = |name: &str| {
            let p = self.dir.join(name);
            fs::read_to_string(&p).map_err(io(format!("read {}", p.display())))
        };
        let bad = |what: &str, v: &str| {
            Error::Config(format!("{}: unexpected {what} {v:?}", self.dir.display()))
        };
        if self.is_v2() {
            let v = read("cpu.max")?;
            let mut w = v.split_whitespace();
            let quota = match w.next() {
                Some("max") => None,
                Some(q) => Some(q.parse().map_err(|_| bad("cpu.max", &v))?),
                None => return Err(bad("cpu.max", &v)),
            };
            let period = w
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| bad("cpu.max", &v))?;
            Ok(CpuMax { quota, period })
        } else {
            let q = read("cpu.cfs_quota_us")?;
            let p = read("cpu.cfs_period_us")?;
            let quota: i64 = q.trim().parse().map_err(|_| bad("quota", &q))?;
            let period: u64 = p.trim().parse().map_err(|_| bad("period", &p))?;
            Ok(CpuMax {
                quota: u64::try_from(quota).ok(),
                period,
            })
        }
    }

    pub fn set_cpu_max(&self, max: CpuMax) -> Result<()> {
        let write = |name: &str, v: String| {
            let p = self.dir.join(name);
            fs::write(&p, &v).map_err(io(format!("write {v} to {}", p.display())))
        };
        if self.is_v2() {
            let quota = max.quota.map_or("max".to_owned(), |q| q.to_string());
            return write("cpu.max", format!("{quota} {}", max.period));
        }
        // v1 checks quota against the period it has: lift the quota first, then set
        // the period, then the new quota.
        write("cpu.cfs_quota_us", "-1".into())?;
        write("cpu.cfs_period_us", max.period.to_string())?;
        if let Some(q) = max.quota {
            write("cpu.cfs_quota_us", q.to_string())?;
        }
        Ok(())
    }

    /// Removes the cgroup once its processes are gone (waits briefly for the last to
    /// leave; a cgroup that stays busy is left behind with a warning).
    pub fn remove(&self) {
        for _ in 0..200 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        tracing::warn!(dir = %self.dir.display(), "cgroup still busy; left behind");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_paths_stay_below_the_root() {
        assert_eq!(
            relative_path(None, "c1").unwrap(),
            Path::new("skiff-runtime/c1")
        );
        assert_eq!(
            relative_path(Some(Path::new("/default/c1")), "c1").unwrap(),
            Path::new("default/c1")
        );
        assert_eq!(
            relative_path(Some(Path::new("system.slice:libpod:c1")), "c1").unwrap(),
            Path::new("skiff-runtime/c1")
        );
        assert!(relative_path(Some(Path::new("/a/../../etc")), "c1").is_err());
    }

    #[test]
    fn oci_quotas_become_cpu_max() {
        let cur = CpuMax::default();
        assert_eq!(
            CpuMax::from_oci(Some(50_000), None, cur).unwrap(),
            CpuMax {
                quota: Some(50_000),
                period: 100_000
            }
        );
        assert_eq!(
            CpuMax::from_oci(Some(-1), Some(20_000), cur).unwrap().quota,
            None
        );
        let limited = CpuMax {
            quota: Some(20_000),
            period: 50_000,
        };
        assert_eq!(CpuMax::from_oci(None, None, limited).unwrap(), limited);
        // docker update --memory sends zeros for the CPU: nothing changes.
        assert_eq!(
            CpuMax::from_oci(Some(0), Some(0), limited).unwrap(),
            limited
        );
        assert!(CpuMax::from_oci(Some(10), None, cur).is_err());
        assert!(CpuMax::from_oci(None, Some(10), cur).is_err());
        assert!(CpuMax::from_oci(None, Some(2_000_000), cur).is_err());
    }
}
