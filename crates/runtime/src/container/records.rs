//! Container records under `<root>/containers/`: creation with a unique ID and name,
//! lookup by name, full ID or unique prefix, the per-container lock and atomic state
//! writes, and detection of a supervisor that died.

use std::collections::BTreeMap;
use std::fs::{self};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use skiff_proto::ProcessSpec;

use crate::owner_only::{self, read_json, write_json};
use crate::{Error, Result};
use skiff_sys::files::FileLock;
use skiff_sys::time::now_ms;

/// `error` of a container whose supervisor disappeared without recording an exit.
pub const STATE_ERROR_GONE: &str = "the container's supervisor process died";

/// Where the guest comes from and which backend boots it, fixed at create time so a
/// later `start` from another shell boots the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BootSettings {
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub hypervisor: Option<String>,
    /// Start the VM from this snapshot (a directory made by `Snapshot::create`)
    /// instead of booting it: QEMU only; no shares or network; the writable layer is
    /// a tmpfs in the VM's memory, so it does not outlive a stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<PathBuf>,
}

/// What a container is: fixed when it is created (only `name` changes, by `rename`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub id: String,
    pub name: String,
    /// The image as the user named it, and its ID.
    pub image: String,
    pub image_id: String,
    pub created_ms: u64,
    pub process: ProcessSpec,
    /// The entrypoint and command the process args came from (for `ps` and `inspect`).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `-u` as given (or the image's User).
    #[serde(default)]
    pub user: String,
    pub hostname: String,
    pub readonly_rootfs: bool,
    pub memory_mib: u32,
    pub vcpus: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub stop_signal: i32,
    pub stop_timeout_s: u64,
    pub auto_remove: bool,
    /// Read-only layer disks, bottom first.
    pub layers: Vec<PathBuf>,
    pub writable_bytes: u64,
    #[serde(default)]
    pub boot: BootSettings,
    /// Host directories bound into the container (`-v`).
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// OCI hooks added by plugins: createRuntime, poststart and poststop run on the host
    /// by the supervisor; createContainer and startContainer inside the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// What the admission plugins decided (allowed, adjustments, per-plugin records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_decision: Option<serde_json::Value>,
    /// `--network`; the address and published ports are the network's lease.
    #[serde(default)]
    pub network: crate::network::NetworkMode,
    /// `--egress`: also recorded in the lease, where the firewall reads it.
    #[serde(default, skip_serializing_if = "crate::network::Egress::is_allow")]
    pub egress: crate::network::Egress,
    /// Published ports of a `--network passt` container (bridge networks keep theirs
    /// in the network's lease, where the firewall and port clashes are decided).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passt_ports: Vec<crate::network::PortMapping>,
}

/// `-v HOST:TARGET[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub host: PathBuf,
    pub target: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// What a container is doing; replaced as a whole, atomically, under the lock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// The host process that runs the container (the supervisor), with its start time
    /// in clock ticks so a recycled PID is not mistaken for it.
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    /// The VMM (QEMU or skiff-vmm) process.
    pub vm_pid: Option<u32>,
    /// The container's main process inside the guest.
    pub guest_pid: Option<i32>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub exit_code: Option<i32>,
    /// Why the container ended abnormally (boot failure, VM crash, supervisor gone).
    pub error: Option<String>,
    /// The VM's vsock UNIX socket (exec) and the supervisor's control socket.
    pub vsock_uds: Option<PathBuf>,
    pub control_socket: Option<PathBuf>,
    /// Set by `stop`/`kill`/`rm -f` so a restart policy (none yet) and `ps` know.
    #[serde(default)]
    pub stop_requested: bool,
    /// Boot time of the last start (VMM spawn to agent ready), in milliseconds.
    pub boot_ms: Option<u64>,
}

impl ContainerState {
    pub fn is_running(&self) -> bool {
        self.status == Status::Running
    }
}

/// The container records of one store root.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
    run_dir: PathBuf,
}

/// An exclusive lock on one container's record; state changes happen under it.
pub struct StateLock {
    _file: FileLock,
    dir: PathBuf,
}

impl StateLock {
    pub fn state(&self) -> Result<ContainerState> {
        read_json(&self.dir.join("state.json"))
    }

    /// The state with a dead supervisor accounted for (recorded as exited).
    pub fn refreshed_state(&self) -> Result<ContainerState> {
        let mut st = self.state()?;
        if st.status != Status::Exited && st.pid.is_some() && !process_alive(st.pid, st.pid_start) {
            mark_gone(&mut st);
            self.save(&st)?;
        }
        Ok(st)
    }

    pub fn save(&self, state: &ContainerState) -> Result<()> {
        write_json(&self.dir.join("state.json"), state)
    }

    pub fn spec(&self) -> Result<ContainerSpec> {
        read_json(&self.dir.join("spec.json"))
    }
}

impl Containers {
    /// Containers of the store at `root` (`<root>/containers`; VM scratch directories
    /// in `<root>/run`, short enough for UNIX socket paths).
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("containers");
        let run_dir = root.join("run");
        // Specs hold the containers' environments: nobody else may list or read them.
        for d in [root, &dir, &run_dir] {
            owner_only::dir(d)?;
        }
        Ok(Self { dir, run_dir })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn writable_disk(&self, id: &str) -> PathBuf {
        self.dir_of(id).join("rw.img")
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir_of(id).join("log.json")
    }

    /// The lock that serialises name allocation (create, rename).
    fn names_lock(&self) -> Result<FileLock> {
        owner_only::lock(&self.dir.join(".names.lock"))
    }

    /// Records a new container. `spec.id` is filled in; `spec.name` is generated when
    /// empty and must be unused otherwise; an empty `spec.hostname` becomes the short ID
    /// (also in a `HOSTNAME=` entry of the process environment).
    pub fn create(&self, spec: ContainerSpec) -> Result<ContainerSpec> {
        self.create_admitted(spec, |_| Ok(()))
    }

    /// Like [`Containers::create`], with `admit` run once the ID and name are assigned
    /// and before anything is written: it may adjust the spec, or refuse (its error is
    /// the result) and leave no record behind.
    pub fn create_admitted<E: From<Error>>(
        &self,
        mut spec: ContainerSpec,
        admit: impl FnOnce(&mut ContainerSpec) -> std::result::Result<(), E>,
    ) -> std::result::Result<ContainerSpec, E> {
        let _names = self.names_lock()?;
        let existing = self.list_specs()?;
        if spec.name.is_empty() {
            spec.name = loop {
                let candidate = generated_name()?;
                if !existing.iter().any(|s| s.name == candidate) {
                    break candidate;
                }
            };
        } else {
            validate_name(&spec.name)?;
            if let Some(other) = existing.iter().find(|s| s.name == spec.name) {
                return Err(Error::NameInUse {
                    name: spec.name.clone(),
                    holder: other.id[..12].to_owned(),
                }
                .into());
            }
        }
        spec.id = loop {
            let id = crate::names::new_id()?;
            // As Docker: no all-digit short IDs, and short IDs unique among ours.
            if id[..12].bytes().any(|b| b.is_ascii_alphabetic())
                && !existing.iter().any(|s| s.id[..12] == id[..12])
            {
                break id;
            }
        };
        spec.created_ms = now_ms();
        // As Docker: the hostname defaults to the short ID (and so does $HOSTNAME).
        if spec.hostname.is_empty() {
            spec.hostname = spec.id[..12].to_owned();
            for e in &mut spec.process.env {
                if e == "HOSTNAME=" {
                    *e = format!("HOSTNAME={}", spec.hostname);
                }
            }
        }
        admit(&mut spec)?;
        let staging = self.dir.join(format!(".new-{}", spec.id));
        owner_only::dir(&staging)?;
        let result = write_json(&staging.join("spec.json"), &spec)
            .and_then(|()| write_json(&staging.join("state.json"), &ContainerState::default()))
            .and_then(|()| {
                fs::rename(&staging, self.dir_of(&spec.id))
                    .map_err(Error::io("publish the container record"))
            });
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result.map(|()| spec).map_err(E::from)
    }

    fn list_specs(&self) -> Result<Vec<ContainerSpec>> {
        let mut out = Vec::new();
        let entries =
            fs::read_dir(&self.dir).map_err(Error::io(format!("list {}", self.dir.display())))?;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            match read_json::<ContainerSpec>(&e.path().join("spec.json")) {
                Ok(s) => out.push(s),
                Err(err) => tracing::warn!("skipping unreadable container {name}: {err}"),
            }
        }
        Ok(out)
    }

    /// Every container with its state (dead supervisors already accounted for),
    /// newest first.
    pub fn list(&self) -> Result<Vec<(ContainerSpec, ContainerState)>> {
        let mut out = Vec::new();
        for spec in self.list_specs()? {
            match self.state(&spec.id) {
                Ok(st) => out.push((spec, st)),
                Err(e) => tracing::warn!("skipping container {}: {e}", spec.id),
            }
        }
        out.sort_by_key(|(s, _)| std::cmp::Reverse(s.created_ms));
        Ok(out)
    }

    /// Finds a container by name, full ID or unique ID prefix (names win, as Docker).
    pub fn resolve(&self, input: &str) -> Result<ContainerSpec> {
        let input = input.strip_prefix('/').unwrap_or(input);
        let specs = self.list_specs()?;
        if let Some(s) = specs.iter().find(|s| s.name == input || s.id == input) {
            return Ok(s.clone());
        }
        let lower = input.to_ascii_lowercase();
        let hits: Vec<&ContainerSpec> =
            if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                specs.iter().filter(|s| s.id.starts_with(&lower)).collect()
            } else {
                Vec::new()
            };
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound(format!("No such container: {input}"))),
            _ => Err(Error::Invalid(format!(
                "multiple containers match the prefix {input:?}; use more characters"
            ))),
        }
    }

    pub fn lock(&self, id: &str) -> Result<StateLock> {
        let dir = self.dir_of(id);
        if !dir.join("spec.json").is_file() {
            return Err(Error::NotFound(format!("No such container: {id}")));
        }
        Ok(StateLock {
            _file: owner_only::lock(&dir.join("lock"))?,
            dir,
        })
    }

    /// The container's state; a running or starting container whose supervisor is
    /// gone is recorded as exited with the reason.
    pub fn state(&self, id: &str) -> Result<ContainerState> {
        let st: ContainerState = read_json(&self.dir_of(id).join("state.json"))?;
        if st.status == Status::Exited || st.pid.is_none() || process_alive(st.pid, st.pid_start) {
            return Ok(st);
        }
        self.lock(id)?.refreshed_state()
    }

    pub fn spec(&self, id: &str) -> Result<ContainerSpec> {
        read_json(&self.dir_of(id).join("spec.json"))
    }

    pub fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        validate_name(new_name)?;
        let _names = self.names_lock()?;
        if let Some(other) = self.list_specs()?.iter().find(|s| s.name == new_name) {
            return Err(Error::NameInUse {
                name: new_name.to_owned(),
                holder: other.id[..12].to_owned(),
            });
        }
        let _lock = self.lock(id)?;
        let mut spec = self.spec(id)?;
        spec.name = new_name.to_owned();
        write_json(&self.dir_of(id).join("spec.json"), &spec)
    }

    /// `network connect`/`disconnect` of a stopped container: the only other change a
    /// spec sees after create. The caller holds no lock; this takes the container's.
    pub fn set_network(&self, id: &str, mode: crate::network::NetworkMode) -> Result<()> {
        let lock = self.lock(id)?;
        if lock.refreshed_state()?.is_running() {
            return Err(Error::Conflict(format!(
                "container {} is running; skiff changes networks of stopped containers only (no hot-plug yet)",
                &id[..12]
            )));
        }
        let mut spec = self.spec(id)?;
        spec.network = mode;
        write_json(&self.dir_of(id).join("spec.json"), &spec)
    }

    /// Deletes the record, its writable disk and its log. The caller has made sure the
    /// container is not running.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir_of(id);
        // Renaming first makes the removal atomic for readers.
        let doomed = self.dir.join(format!(".rm-{id}"));
        fs::rename(&dir, &doomed).map_err(Error::io(format!("remove {}", dir.display())))?;
        fs::remove_dir_all(&doomed).map_err(Error::io(format!("remove {}", doomed.display())))
    }
}

fn mark_gone(st: &mut ContainerState) {
    // The dead supervisor could not remove its VM's scratch directory (sockets, logs).
    if let Some(dir) = st.vsock_uds.as_deref().and_then(Path::parent) {
        if dir.file_name().is_some_and(|n| {
            n.to_string_lossy()
                .starts_with(crate::vm::microvm::SCRATCH_PREFIX)
        }) {
            let _ = fs::remove_dir_all(dir);
        }
    }
    st.status = Status::Exited;
    st.exit_code.get_or_insert(137);
    st.error.get_or_insert_with(|| STATE_ERROR_GONE.to_owned());
    st.finished_ms.get_or_insert_with(now_ms);
    st.vsock_uds = None;
    st.control_socket = None;
}

/// Is `pid` alive and still the process that started at `start` (clock ticks)?
pub(crate) fn process_alive(pid: Option<u32>, start: Option<u64>) -> bool {
    pid.is_some_and(|p| skiff_sys::procfs::alive(p, start))
}

/// Start time of a process in clock ticks since boot (see `skiff_sys::procfs`).
pub use skiff_sys::procfs::start_ticks as process_start_ticks;

fn validate_name(name: &str) -> Result<()> {
    if crate::names::is_valid_name(name, 128) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

fn generated_name() -> Result<String> {
    const ADJECTIVES: [&str; 16] = [
        "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "quiet", "sharp", "swift", "tidy", "witty",
    ];
    const NAMES: [&str; 16] = [
        "archimedes",
        "babbage",
        "curie",
        "darwin",
        "euler",
        "fermat",
        "galois",
        "hopper",
        "kepler",
        "lovelace",
        "noether",
        "pascal",
        "ritchie",
        "shannon",
        "turing",
        "wozniak",
    ];
    let r = skiff_sys::random::bytes(3).map_err(Error::io("read /dev/urandom"))?;
    let pick = |i: usize, n: usize| usize::from(r.get(i).copied().unwrap_or(0)) % n;
    Ok(format!(
        "{}_{}{}",
        ADJECTIVES[pick(0, ADJECTIVES.len())],
        NAMES[pick(1, NAMES.len())],
        pick(2, 100)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            id: String::new(),
            name: name.into(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            created_ms: 0,
            process: ProcessSpec::new(vec!["true".into()]),
            entrypoint: Vec::new(),
            cmd: vec!["true".into()],
            user: String::new(),
            hostname: "h".into(),
            readonly_rootfs: false,
            memory_mib: 256,
            vcpus: 1,
            labels: BTreeMap::new(),
            stop_signal: 15,
            stop_timeout_s: 10,
            auto_remove: false,
            layers: Vec::new(),
            writable_bytes: 1 << 30,
            boot: BootSettings::default(),
            binds: Vec::new(),
            plugin_decision: None,
            network: Default::default(),
            egress: Default::default(),
            passt_ports: Vec::new(),
            hooks: None,
        }
    }

    #[test]
    fn names_are_unique_and_prefixes_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::open(dir.path()).unwrap();
        let a = c.create(spec("web")).unwrap();
        assert_eq!(a.id.len(), 64);
        assert!(matches!(
            c.create(spec("web")),
            Err(Error::NameInUse { .. })
        ));
        assert!(c.create(spec("bad name")).is_err());
        let b = c.create(spec("")).unwrap();
        assert!(!b.name.is_empty());
        assert_eq!(c.resolve("web").unwrap().id, a.id);
        assert_eq!(c.resolve(&a.id[..12]).unwrap().id, a.id);
        assert_eq!(c.resolve(&b.id).unwrap().id, b.id);
        assert!(c
            .resolve("nope")
            .unwrap_err()
            .to_string()
            .contains("No such container"));
        c.rename(&a.id, "api").unwrap();
        assert_eq!(c.resolve("api").unwrap().id, a.id);
        assert!(c.rename(&a.id, &b.name).is_err());
        assert_eq!(c.list().unwrap().len(), 2);
        c.remove(&a.id).unwrap();
        assert!(c.resolve("api").is_err());
    }

    #[test]
    fn dead_supervisor_means_exited_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::open(dir.path()).unwrap();
        let a = c.create(spec("x")).unwrap();
        let lock = c.lock(&a.id).unwrap();
        let mut st = lock.state().unwrap();
        st.status = Status::Running;
        // A PID that exists but started at another time is not ours.
        st.pid = Some(std::process::id());
        st.pid_start = Some(1);
        lock.save(&st).unwrap();
        drop(lock);
        let st = c.state(&a.id).unwrap();
        assert_eq!(st.status, Status::Exited);
        assert_eq!(st.error.as_deref(), Some(STATE_ERROR_GONE));
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id();
        assert!(process_alive(Some(me), process_start_ticks(me)));
        assert!(!process_alive(None, None));
    }
}
