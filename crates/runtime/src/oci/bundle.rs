//! A bundle's config.json, validated and turned into what the microVM needs: the
//! rootfs directory (shared into the guest as its root), bind mounts (shares), the
//! process, the hostname and the VM size.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use skiff_proto::ProcessSpec;

use super::mounts::{check_target, Mounts};
use crate::{Error, Result};

/// config.json files are small; anything bigger is refused before parsing.
const MAX_CONFIG: u64 = 4 << 20;
const DEFAULT_MEMORY_MIB: u32 = 256;
const MIN_MEMORY_MIB: u32 = 128;
const MAX_MEMORY_MIB: u32 = 16 << 10;
/// Annotations that override the VM size derived from `linux.resources` (the names
/// policy.rs shows plugins).
pub const ANNOTATION_MEMORY: &str = "io.skiff.vm.memory-mib";
pub const ANNOTATION_VCPUS: &str = "io.skiff.vm.vcpus";
/// The most memory `update` may grow the microVM to: it boots with this much and its
/// balloon holds it down to the limit.
pub const ANNOTATION_MEMORY_MAX: &str = "io.skiff.vm.memory-max-mib";

#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute path of the root filesystem directory.
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    pub process: ProcessSpec,
    pub hostname: String,
    /// The spec's mounts in order, and the host directories they share.
    pub mounts: Mounts,
    /// `linux.maskedPaths` and `linux.readonlyPaths`, checked absolute without `..`.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub memory_mib: u32,
    /// What the microVM boots with (at least `memory_mib`); `update` may move its
    /// memory anywhere up to this through the balloon.
    pub memory_max_mib: u32,
    pub vcpus: u32,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

impl Bundle {
    /// Reads and validates `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| bad(format!("bundle {}: {e}", dir.display())))?;
        let path = dir.join("config.json");
        let f =
            std::fs::File::open(&path).map_err(|e| bad(format!("open {}: {e}", path.display())))?;
        let mut bytes = Vec::new();
        f.take(MAX_CONFIG + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("read {}: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_CONFIG {
            return Err(bad(format!("{} is larger than 4 MiB", path.display())));
        }
        let spec: Spec =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid config.json: {e}")))?;
        Self::from_spec(dir, spec)
    }

    pub fn from_spec(dir: PathBuf, spec: Spec) -> Result<Self> {
        if !spec.version().starts_with("1.") {
            return Err(bad(format!(
                "invalid config.json: unsupported ociVersion {:?}",
                spec.version()
            )));
        }
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| bad("invalid config.json: root is missing"))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            dir.join(root.path())
        };
        if !rootfs.is_dir() {
            return Err(bad(format!(
                "rootfs {} does not exist or is not a directory",
                rootfs.display()
            )));
        }
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| bad("invalid config.json: process is missing"))?;
        let mut process = crate::oci::process::process_from_oci(process)?;
        let linux = spec.linux().as_ref();
        if let Some(profile) = linux.and_then(|l| l.seccomp().as_ref()) {
            process.seccomp = Some(super::seccomp::compile(profile)?);
        }
        let paths = |list: Option<&Vec<String>>| -> Result<Vec<String>> {
            list.into_iter()
                .flatten()
                .map(|p| check_target(Path::new(p)))
                .collect()
        };
        let masked_paths = paths(linux.and_then(|l| l.masked_paths().as_ref()))?;
        let readonly_paths = paths(linux.and_then(|l| l.readonly_paths().as_ref()))?;
        let hostname = spec.hostname().clone().unwrap_or_default();
        if hostname.len() > 64 || hostname.contains(['/', '\0']) {
            return Err(bad(format!("invalid hostname {hostname:?}")));
        }
        let mounts = Mounts::from_spec(spec.mounts().as_deref().unwrap_or_default())?;
        let (memory_mib, vcpus) = vm_size(&spec)?;
        let memory_max_mib = memory_max(&spec, memory_mib)?;
        Ok(Self {
            dir,
            readonly_rootfs: root.readonly().unwrap_or(false),
            rootfs,
            process,
            hostname,
            mounts,
            masked_paths,
            readonly_paths,
            memory_mib,
            memory_max_mib,
            vcpus,
            spec,
        })
    }
}

/// The boot maximum: the annotation's, else the memory size itself.
fn memory_max(spec: &Spec, memory_mib: u32) -> Result<u32> {
    let Some(v) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_MEMORY_MAX))
    else {
        return Ok(memory_mib);
    };
    v.parse::<u32>()
        .ok()
        .filter(|m| (memory_mib..=MAX_MEMORY_MIB).contains(m))
        .ok_or_else(|| {
            bad(format!(
                "annotation {ANNOTATION_MEMORY_MAX}={v:?}: expected {memory_mib}..={MAX_MEMORY_MIB} (at least the memory limit)"
            ))
        })
}

/// The smallest memory a microVM may be given or ballooned down to, in MiB.
pub const fn min_memory_mib() -> u32 {
    MIN_MEMORY_MIB
}

/// Memory and vCPUs from `linux.resources` (a memory limit and a CPU quota), overridden
/// by the skiff annotations.
fn vm_size(spec: &Spec) -> Result<(u32, u32)> {
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut memory = DEFAULT_MEMORY_MIB;
    let mut vcpus = 1u32;
    if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
            if limit > 0 {
                let mib = u32::try_from(limit / (1 << 20)).unwrap_or(MAX_MEMORY_MIB);
                memory = mib.clamp(MIN_MEMORY_MIB, MAX_MEMORY_MIB);
            }
        }
        if let Some(cpu) = res.cpu() {
            if let (Some(q), Some(p)) = (cpu.quota(), cpu.period()) {
                if q > 0 && p > 0 {
                    let n = (q as u64).div_ceil(p);
                    vcpus = u32::try_from(n).unwrap_or(host_cpus).clamp(1, host_cpus);
                }
            }
        }
    }
    if let Some(a) = spec.annotations() {
        if let Some(v) = a.get(ANNOTATION_MEMORY) {
            memory = v
                .parse::<u32>()
                .ok()
                .filter(|m| (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(m))
                .ok_or_else(|| bad(format!("annotation {ANNOTATION_MEMORY}={v:?}: expected {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}")))?;
        }
        if let Some(v) = a.get(ANNOTATION_VCPUS) {
            vcpus = v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=host_cpus).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "annotation {ANNOTATION_VCPUS}={v:?}: expected 1..={host_cpus}"
                    ))
                })?;
        }
    }
    Ok((memory, vcpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> (tempfile::TempDir, Result<Bundle>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rootfs")).unwrap();
        std::fs::write(d.path().join("config.json"), config).unwrap();
        let b = Bundle::load(d.path());
        (d, b)
    }

    const GOOD: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs","readonly":true},
        "process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"hostname":"h",
        "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                  {"destination":"/data","type":"bind","source":"/tmp","options":["rbind","ro"]}],
        "linux":{"resources":{"memory":{"limit":536870912},"cpu":{"quota":150000,"period":100000}}}}"#;

    #[test]
    fn a_good_bundle_loads() {
        let (_d, b) = bundle_with(GOOD);
        let b = b.unwrap();
        assert!(b.readonly_rootfs);
        assert_eq!(b.hostname, "h");
        assert_eq!(b.memory_mib, 512);
        assert_eq!(b.memory_max_mib, 512);
        assert!(b.vcpus >= 1);
        assert_eq!(b.mounts.entries.len(), 2);
        assert_eq!(b.mounts.shares.len(), 1);
        assert_eq!(b.mounts.shares[0].host, Path::new("/tmp"));
        assert!(b.mounts.shares[0].readonly);
    }

    #[test]
    fn the_memory_maximum_comes_from_its_annotation() {
        let with = |max: &str| {
            GOOD.replace(
                r#""hostname":"h","#,
                &format!(r#""hostname":"h","annotations":{{"{ANNOTATION_MEMORY_MAX}":"{max}"}},"#),
            )
        };
        let (_d, b) = bundle_with(&with("1024"));
        let b = b.unwrap();
        assert_eq!((b.memory_mib, b.memory_max_mib), (512, 1024));
        for bad in ["256", "lots", "99999999"] {
            let (_d, b) = bundle_with(&with(bad));
            assert!(b.is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_bundles_are_refused() {
        for bad in [
            "not json",
            r#"{"ociVersion":"1.0.2"}"#,
            r#"{"ociVersion":"2.0.0","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}}"#,
            r#"{"ociVersion":"1.0.2","root":{"path":"missing"},"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}}"#,
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}}"#,
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
               "mounts":[{"destination":"../x","type":"bind","source":"/tmp"}]}"#,
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
               "annotations":{"io.skiff.vm.memory-mib":"1"}}"#,
        ] {
            let (_d, b) = bundle_with(bad);
            assert!(b.is_err(), "{bad}");
        }
    }
}
