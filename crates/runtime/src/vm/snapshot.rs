//! Snapshots of a booted microVM on the QEMU backend, taken at "agent ready" with no
//! container in it yet, and restored any number of times (issue #9).
//!
//! A snapshot is a directory: `ram` (guest memory; the template VM ran with its RAM
//! mapped shared from this file, so saving writes only the device state), `state`
//! (QEMU's migration stream with `x-ignore-shared`: CPUs and devices, ~40 KiB) and
//! `snapshot.json` (what it was made from; written last, so a half-made snapshot is
//! never taken for a whole one).
//!
//! Restored VMs map `ram` privately: they share its pages through the page cache and
//! copy only what they write. The read-only layer disks are the same files; the
//! writable layer is a tmpfs in each restored VM's own memory, so nothing written by
//! one copy is seen by another. Each copy's identity is set after restore: a hostname
//! with the container, and fresh host randomness plus the current time (`Reseed`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::vm::hypervisor::{self, Disk, HypervisorKind};
use crate::vm::microvm::VmSnapshot;
use crate::{
    owner_only, Error, GuestArtifacts, MicroVm, Result, Selection, VmConfig, VmSize, WarmSpec,
    WarmVm,
};

const META: &str = "snapshot.json";
const RAM: &str = "ram";
const STATE: &str = "state";
/// Bumped when the layout or the VM's device list changes (2: `files`).
const FORMAT: u32 = 2;
/// Largest `snapshot.json` read back.
const MAX_META: u64 = 64 << 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: u32,
    memory_mib: u32,
    vcpus: u32,
    layers: Vec<PathBuf>,
    kernel: PathBuf,
    initramfs: PathBuf,
    state_bytes: u64,
    /// [`fingerprint`] of the kernel, initramfs and layers when the snapshot was made.
    files: String,
}

/// A saved VM that new VMs start from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    dir: PathBuf,
    meta: Meta,
}

/// How long saving took, for benchmarks and logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveTimings {
    /// QEMU start until the agent waited on its port.
    pub boot: Duration,
    /// Pausing and writing the device state.
    pub save: Duration,
}

impl Snapshot {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn memory_mib(&self) -> u32 {
        self.meta.memory_mib
    }

    pub fn vcpus(&self) -> u32 {
        self.meta.vcpus
    }

    /// Boots `spec`'s VM to "agent ready" and saves it into `dir` (created; anything
    /// of an earlier snapshot there is replaced).
    pub fn create(spec: &WarmSpec, dir: &Path) -> Result<(Self, SaveTimings)> {
        if spec.selection.kind != HypervisorKind::Qemu {
            return Err(Error::Config(
                "snapshot restore (QEMU migration) needs the QEMU backend".into(),
            ));
        }
        if spec.writable_disk_bytes.is_some() {
            return Err(Error::Config(
                "a snapshot's writable layer is a tmpfs: a disk would be shared by every restored VM".into(),
            ));
        }
        // The VM's memory holds whatever the guest had: its owner's alone.
        owner_only::dir(dir)?;
        for f in [META, STATE, RAM] {
            match std::fs::remove_file(dir.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("remove {}", dir.join(f).display()))(e))
                }
                _ => {}
            }
        }
        let t0 = Instant::now();
        // Dies with this process: a daemon that dies mid-snapshot must not leave the
        // template running.
        let mut config = config_for(
            &spec.artifacts,
            &spec.selection,
            &spec.layers,
            spec.memory_mib,
            spec.vcpus,
        )
        .with_boot_timeout(spec.boot_timeout)
        .with_scratch_parent(spec.scratch_parent.clone());
        // QEMU creates missing files with its umask's mode: they are made here first
        // (QEMU sizes the RAM file itself; `cat >` keeps the state file's mode).
        let state_tmp = dir.join("state.partial");
        for f in [&dir.join(RAM), &state_tmp] {
            owner_only::create(f)?;
        }
        config.snapshot = Some(VmSnapshot::Template { ram: dir.join(RAM) });
        let mut vm = MicroVm::launch_template(&config)?;
        // The agent says so on its serial port once the guest is up, then waits for a
        // host's go: the moment to save.
        vm.await_serial_ready(spec.boot_timeout)?;
        let mut qmp = vm.qmp(Duration::from_secs(10))?;
        hypervisor::set_snapshot_capabilities(&mut qmp)?;
        let boot = t0.elapsed();
        let t1 = Instant::now();
        qmp.execute("stop", json!({}))?;
        let uri = format!("exec:cat > {}", hypervisor::shell_quote(&state_tmp));
        qmp.execute("migrate", json!({ "uri": uri }))?;
        loop {
            let st = qmp.execute("query-migrate", json!({}))?;
            match st.get("status").and_then(Value::as_str) {
                Some("completed") => break,
                Some("failed" | "cancelled") => {
                    let why = st
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(Error::Snapshot {
                        path: dir.to_path_buf(),
                        message: format!("QEMU could not save the VM: {why}"),
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        drop(qmp);
        // The template must never run again: restored VMs map its RAM file privately,
        // and a change to the file would show through in pages they have not copied.
        vm.kill();
        drop(vm);
        let state_bytes = std::fs::metadata(&state_tmp)
            .map_err(Error::io(format!("{}", state_tmp.display())))?
            .len();
        std::fs::rename(&state_tmp, dir.join(STATE))
            .map_err(Error::io(format!("rename {}", state_tmp.display())))?;
        let files = fingerprint(
            &spec.layers,
            &spec.artifacts.kernel,
            &spec.artifacts.initramfs,
        )?;
        let meta = Meta {
            format: FORMAT,
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            layers: spec.layers.clone(),
            kernel: spec.artifacts.kernel.clone(),
            initramfs: spec.artifacts.initramfs.clone(),
            state_bytes,
            files,
        };
        let text = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Config(format!("snapshot metadata: {e}")))?;
        owner_only::write_atomic(&dir.join(META), &text)?;
        let save = t1.elapsed();
        tracing::debug!(dir = %dir.display(), ?boot, ?save, state_bytes, "snapshot saved");
        Ok((
            Self {
                dir: dir.to_path_buf(),
                meta,
            },
            SaveTimings { boot, save },
        ))
    }

    /// Reads a snapshot back and checks that its files are all there and whole.
    pub fn open(dir: &Path) -> Result<Self> {
        let bad = |message: String| Error::Snapshot {
            path: dir.to_path_buf(),
            message,
        };
        let meta_path = dir.join(META);
        let file = std::fs::File::open(&meta_path)
            .map_err(|e| bad(format!("no snapshot here ({META}: {e})")))?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_META), &mut text)
            .map_err(|e| bad(format!("{META}: {e}")))?;
        let meta: Meta =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{META} is damaged: {e}")))?;
        if meta.format != FORMAT {
            return Err(bad(format!(
                "format {} (this skiff reads {FORMAT}); make the snapshot again",
                meta.format
            )));
        }
        let size = |name: &str| {
            std::fs::metadata(dir.join(name))
                .map(|m| m.len())
                .map_err(|e| bad(format!("{name}: {e}")))
        };
        let ram = size(RAM)?;
        if ram != u64::from(meta.memory_mib) << 20 {
            return Err(bad(format!(
                "{RAM} holds {ram} bytes, not {} MiB: damaged",
                meta.memory_mib
            )));
        }
        let state = size(STATE)?;
        if state != meta.state_bytes || state == 0 {
            return Err(bad(format!(
                "{STATE} holds {state} bytes, not {}: damaged",
                meta.state_bytes
            )));
        }
        for p in meta.layers.iter().chain([&meta.kernel, &meta.initramfs]) {
            if !p.is_file() {
                return Err(bad(format!(
                    "{} it was made with is gone; make the snapshot again",
                    p.display()
                )));
            }
        }
        // A new agent in a replaced initramfs (or a new kernel) must not keep running
        // as the old one from the saved memory.
        if fingerprint(&meta.layers, &meta.kernel, &meta.initramfs)? != meta.files {
            return Err(bad(
                "its kernel, initramfs or a layer changed since it was made; make the snapshot again"
                    .into(),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// False once its kernel, initramfs or a layer was replaced or is gone (a few
    /// stats; for callers that keep a snapshot open across requests).
    pub fn is_current(&self) -> bool {
        fingerprint(&self.meta.layers, &self.meta.kernel, &self.meta.initramfs)
            .is_ok_and(|f| f == self.meta.files)
    }

    /// Starts a new VM from the snapshot, up to its agent's hello. The VM dies with
    /// this process; its identity is set when [`WarmVm::run`] creates the container.
    pub fn restore(
        &self,
        selection: &Selection,
        scratch_parent: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<WarmVm> {
        let (vm, agent) = self.restore_vm(selection, scratch_parent.clone(), timeout)?;
        WarmVm::restored(vm, agent, self.meta.layers.len(), scratch_parent)
    }

    /// [`Snapshot::restore`] for a caller that sets the copy's identity itself: it must
    /// send `Reseed` (see [`crate::AgentConn::reseed`]) before anything else, then create the
    /// container with a tmpfs writable layer.
    pub fn restore_vm(
        &self,
        selection: &Selection,
        scratch_parent: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<(MicroVm, crate::AgentConn)> {
        if selection.kind != HypervisorKind::Qemu {
            return Err(Error::Config(
                "snapshot restore (QEMU migration) needs the QEMU backend".into(),
            ));
        }
        let artifacts = GuestArtifacts {
            kernel: self.meta.kernel.clone(),
            initramfs: self.meta.initramfs.clone(),
        };
        let mut config = config_for(
            &artifacts,
            selection,
            &self.meta.layers,
            self.meta.memory_mib,
            self.meta.vcpus,
        )
        .with_boot_timeout(timeout)
        .with_scratch_parent(scratch_parent);
        config.snapshot = Some(VmSnapshot::Restore {
            ram: self.dir.join(RAM),
            state: self.dir.join(STATE),
        });
        MicroVm::boot(&config)
    }

    /// Refuses a container whose layers or size are not the snapshot's.
    pub fn check_fits(&self, layers: &[PathBuf], memory_mib: u32, vcpus: u32) -> Result<()> {
        if self.meta.layers != layers {
            return Err(Error::Config(format!(
                "the snapshot in {} was made from other layers than this container's",
                self.dir.display()
            )));
        }
        if (self.meta.memory_mib, self.meta.vcpus) != (memory_mib, vcpus) {
            return Err(Error::Config(format!(
                "the snapshot in {} is of a {} MiB, {}-vCPU VM; the container asks for {memory_mib} MiB and {vcpus}",
                self.dir.display(),
                self.meta.memory_mib,
                self.meta.vcpus
            )));
        }
        Ok(())
    }
}

/// The VM both sides of a snapshot describe identically: same disks in the same
/// order, same memory and CPUs.
fn config_for(
    artifacts: &GuestArtifacts,
    selection: &Selection,
    layers: &[PathBuf],
    memory_mib: u32,
    vcpus: u32,
) -> VmConfig {
    VmConfig::sized(
        artifacts.clone(),
        selection.clone(),
        VmSize { memory_mib, vcpus },
        Disk::layers(layers),
    )
}

/// Identifies the files a snapshot is made from by device, inode, size and mtime, so a
/// file replaced or rewritten in place (scripts/setup.sh installing a new agent) is
/// noticed without reading megabytes on every open.
fn fingerprint(layers: &[PathBuf], kernel: &Path, initramfs: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = String::new();
    for p in layers
        .iter()
        .map(PathBuf::as_path)
        .chain([kernel, initramfs])
    {
        let m = std::fs::metadata(p).map_err(Error::io(format!("{}", p.display())))?;
        out.push_str(&format!(
            "{}:{}:{}:{}.{};",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_damaged_snapshots_are_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Snapshot::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no snapshot here"), "{err}");

        std::fs::write(dir.path().join(META), b"{not json").unwrap();
        let err = Snapshot::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");

        let kernel = dir.path().join("kernel");
        let initramfs = dir.path().join("initramfs");
        std::fs::write(&kernel, b"k").unwrap();
        std::fs::write(&initramfs, b"agent v1").unwrap();
        let meta = Meta {
            format: FORMAT,
            memory_mib: 1,
            vcpus: 1,
            layers: Vec::new(),
            kernel: kernel.clone(),
            initramfs: initramfs.clone(),
            state_bytes: 10,
            files: fingerprint(&[], &kernel, &initramfs).unwrap(),
        };
        std::fs::write(dir.path().join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        std::fs::write(dir.path().join(RAM), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(dir.path().join(STATE), b"short").unwrap();
        let err = Snapshot::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state holds 5 bytes, not 10"), "{err}");

        std::fs::write(dir.path().join(STATE), b"0123456789").unwrap();
        let kept = Snapshot::open(dir.path()).unwrap();
        assert!(kept.is_current());
        // A new agent installed over the initramfs makes the snapshot stale, also
        // for a holder that opened it before.
        let replaced = dir.path().join("initramfs.new");
        std::fs::write(&replaced, b"agent v2").unwrap();
        std::fs::rename(&replaced, &initramfs).unwrap();
        assert!(!kept.is_current());
        let err = Snapshot::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("changed since it was made"), "{err}");
        std::fs::write(
            dir.path().join(META),
            serde_json::to_vec(&Meta {
                files: fingerprint(&[], &kernel, &initramfs).unwrap(),
                ..meta
            })
            .unwrap(),
        )
        .unwrap();
        assert!(Snapshot::open(dir.path()).is_ok());
        std::fs::remove_file(dir.path().join(RAM)).unwrap();
        let err = Snapshot::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("snapshot ") && err.contains("ram:"),
            "{err}"
        );
    }
}
