//! Container records under the runtime root: `<root>/<id>/state.json`, replaced
//! atomically (temp + rename) while holding `<root>/<id>.lock`. The status is derived
//! from the record and from whether the supervisor process (the pid callers wait on)
//! is still alive, so a crashed supervisor reads as stopped rather than running.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{owner_only, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Paused => "paused",
        })
    }
}

/// What the runtime knows about one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The supervisor: lives as long as the container, exits with its status.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Its start time in clock ticks, so a recycled pid is not mistaken for it.
    #[serde(default)]
    pub pid_start: Option<u64>,
    #[serde(default)]
    pub started: bool,
    #[serde(default)]
    pub stopped: bool,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub vsock_uds: Option<PathBuf>,
    #[serde(default)]
    pub control: Option<PathBuf>,
    /// The VM's scratch directory (its sockets, logs and console). `delete` removes it
    /// whatever killed the supervisor (a SIGKILLed supervisor cannot clean up).
    #[serde(default)]
    pub vm_dir: Option<PathBuf>,
    /// The VM's QMP monitor (QEMU backend), for pause and resume.
    #[serde(default)]
    pub qmp: Option<PathBuf>,
    /// skiff-vmm's API socket (vmm backend), for pause and resume.
    #[serde(default)]
    pub vmm_api: Option<PathBuf>,
    /// The host cgroup the supervisor and the VM's processes run in (CPU bandwidth).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// Memory the VM booted with, MiB: the most `update` may give it.
    #[serde(default)]
    pub memory_max_mib: Option<u32>,
    /// The memory target now (the balloon holds the rest), MiB.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Whether the VM has a virtio-balloon device (QEMU backend).
    #[serde(default)]
    pub balloon: bool,
    #[serde(default)]
    pub paused: bool,
}

/// Whether `pid` is the live (not zombie) process that started at `start` ticks.
pub use skiff_sys::procfs::alive as process_alive;

impl Record {
    pub fn status(&self) -> Status {
        if self.stopped {
            return Status::Stopped;
        }
        match self.pid {
            None => Status::Creating,
            Some(pid) if process_alive(pid, self.pid_start) => {
                if self.paused {
                    Status::Paused
                } else if self.started {
                    Status::Running
                } else {
                    Status::Created
                }
            }
            Some(_) => Status::Stopped,
        }
    }

    /// The state JSON of the runtime spec (`state` command, hooks' stdin).
    pub fn oci_state(&self) -> serde_json::Value {
        let status = self.status();
        let pid = match status {
            Status::Stopped | Status::Creating => 0,
            _ => self.pid.unwrap_or(0),
        };
        serde_json::json!({
            "ociVersion": super::SPEC_VERSION,
            "id": self.id,
            "status": status,
            "pid": pid,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "annotations": self.annotations,
            "owner": "",
        })
    }
}

/// IDs name directories: letters, digits and `_ + - .`, not starting with a dot.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid container id {id:?}")))
    }
}

/// The runtime root (`--root`).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held per-container lock; released on drop.
pub struct Lock {
    _file: skiff_sys::files::FileLock,
    dir: PathBuf,
    id: String,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Takes the container's lock (the container need not exist).
    pub fn lock(&self, id: &str) -> Result<Lock> {
        check_id(id)?;
        owner_only::dir(&self.root)?;
        let path = self.root.join(format!(".{id}.lock"));
        let f = owner_only::lock(&path)?;
        Ok(Lock {
            _file: f,
            dir: self.dir(id),
            id: id.to_owned(),
        })
    }

    /// IDs of every container with a record.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let Ok(rd) = fs::read_dir(&self.root) else {
            return Ok(ids);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if check_id(&name).is_ok() && e.path().join("state.json").is_file() {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

impl Lock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn exists(&self) -> bool {
        self.dir.join("state.json").is_file()
    }

    /// The record, or "container X does not exist".
    pub fn load(&self) -> Result<Record> {
        let path = self.dir.join("state.json");
        if !path.is_file() {
            return Err(Error::NotFound(format!(
                "container {} does not exist",
                self.id
            )));
        }
        crate::owner_only::read_json(&path)
    }

    /// Creates the container's directory and first record; refuses an existing ID.
    pub fn create(&self, record: &Record) -> Result<()> {
        if self.exists() {
            return Err(Error::Conflict(format!(
                "container with id exists: {}",
                self.id
            )));
        }
        owner_only::dir(&self.dir)?;
        self.save(record)
    }

    pub fn save(&self, record: &Record) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Config(format!("encode state: {e}")))?;
        owner_only::write_atomic(&self.dir.join("state.json"), &bytes)
    }

    /// Removes the container's directory and lock file.
    /// Removes what the record's VM left on the host: its scratch directory, if the
    /// recorded path is one (`skiff-vm-*`, a directory, not a link).
    pub fn remove_vm_dir(rec: &Record) {
        let Some(dir) = &rec.vm_dir else { return };
        let is_scratch = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(crate::vm::microvm::SCRATCH_PREFIX));
        let is_dir = fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
        if is_scratch && is_dir {
            if let Err(e) = fs::remove_dir_all(dir) {
                tracing::warn!("remove {}: {e}", dir.display());
            }
        }
    }

    pub fn remove(self) -> Result<()> {
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .map_err(Error::io(format!("remove {}", self.dir.display())))?;
        }
        if let Some(root) = self.dir.parent() {
            let _ = fs::remove_file(root.join(format!(".{}.lock", self.id)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_ids_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(d.path());
        let lock = store.lock("c1").unwrap();
        assert!(lock
            .load()
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        let rec = Record {
            id: "c1".into(),
            ..Record::default()
        };
        lock.create(&rec).unwrap();
        assert!(lock.create(&rec).is_err());
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(d.path()), 0o700, "the state root is the owner's");
        assert_eq!(mode(&d.path().join("c1/state.json")), 0o600);
        assert_eq!(lock.load().unwrap().status(), Status::Creating);
        let mut rec = lock.load().unwrap();
        rec.pid = Some(std::process::id());
        rec.pid_start = skiff_sys::procfs::start_ticks(std::process::id());
        lock.save(&rec).unwrap();
        assert_eq!(lock.load().unwrap().status(), Status::Created);
        rec.started = true;
        assert_eq!(rec.status(), Status::Running);
        assert_eq!(rec.oci_state()["status"], "running");
        rec.pid_start = Some(1);
        assert_eq!(rec.status(), Status::Stopped);
        assert_eq!(store.list().unwrap(), ["c1"]);
        drop(lock);
        store.lock("c1").unwrap().remove().unwrap();
        assert!(store.list().unwrap().is_empty());
        for bad in ["", "../x", "a/b", ".x", "a b"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
