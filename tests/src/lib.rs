//! Shared helpers for end-to-end tests: finding the skiff binary, building test layer
//! images from Debian's busybox-static, and the skip policy.
//!
//! Skip policy: a test whose prerequisites are missing prints `SKIP <test>: <why>`.
//! With `SKIFF_REQUIRE_ALL=1` (set by `scripts/test.sh`, which installs everything this
//! kind of machine can have) a missing prerequisite is a failure instead, so CI never
//! passes a test that did not run. Only tests that need hardware-backed KVM may skip
//! there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod cli;
pub mod clients;

pub fn require_all() -> bool {
    std::env::var_os("SKIFF_REQUIRE_ALL").is_some_and(|v| v == "1")
}

/// Returns true if the test can run; otherwise prints why and, under
/// `SKIFF_REQUIRE_ALL=1`, fails the test.
pub fn prerequisite(test: &str, ok: Result<(), String>) -> bool {
    match ok {
        Ok(()) => true,
        Err(why) => {
            assert!(
                !require_all(),
                "{test} cannot run but SKIFF_REQUIRE_ALL=1: {why}"
            );
            eprintln!("SKIP {test}: {why}");
            false
        }
    }
}

/// The cargo target directory holding this binary (target/<profile>): test binaries
/// live in its deps/, benchmark binaries in it directly.
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        dir
    }
}

/// The `skiff` binary built alongside the tests (or `$SKIFF_BIN`).
pub fn skiff_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    target_profile_dir().join("skiff")
}

/// The runc-compatible `skiff-runtime` built alongside the tests (or
/// `$SKIFF_RUNTIME_BIN`).
pub fn skiff_runtime_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_RUNTIME_BIN") {
        return PathBuf::from(p);
    }
    target_profile_dir().join("skiff-runtime")
}

/// Can this machine boot a skiff microVM? (guest artifacts, a backend, the skiff binary)
pub fn vm_ready() -> Result<(), String> {
    if !skiff_bin().is_file() {
        return Err(format!(
            "{} is not built (run `cargo build -p skiff-cli`)",
            skiff_bin().display()
        ));
    }
    skiff_runtime::GuestArtifacts::locate(None, None).map_err(|e| e.to_string())?;
    skiff_runtime::vm::hypervisor::select(None).map_err(|e| e.to_string())?;
    Ok(())
}

pub(crate) fn fixtures_dir() -> PathBuf {
    let d = target_profile_dir().join("skiff-fixtures");
    let _ = std::fs::create_dir_all(&d);
    d
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Builds an erofs image from `fill(dir)` once per fixture name, atomically.
fn erofs_fixture(
    name: &str,
    fill: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let out = fixtures_dir().join(format!("{name}.erofs"));
    if out.is_file() {
        return Ok(out);
    }
    let staging = tempfile::tempdir_in(fixtures_dir()).map_err(|e| e.to_string())?;
    let root = staging.path().join("root");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    fill(&root)?;
    let tmp = staging.path().join("image");
    run(Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&tmp)
        .arg(&root))
    .map_err(|e| format!("{e} (install erofs-utils)"))?;
    std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A base layer: Debian's static busybox with its applets, /etc/passwd, /etc/lowerfile
/// and /etc/hideme.
pub fn busybox_layer() -> Result<PathBuf, String> {
    static LAYER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            erofs_fixture("busybox-base", |root| {
                let bb = Path::new("/bin/busybox");
                if !bb.is_file() {
                    return Err("/bin/busybox missing (install busybox-static)".into());
                }
                for d in [
                    "bin",
                    "etc",
                    "tmp",
                    "root",
                    "proc",
                    "sys",
                    "dev",
                    "home/user",
                ] {
                    std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
                }
                std::fs::copy(bb, root.join("bin/busybox")).map_err(|e| e.to_string())?;
                let list = Command::new(bb)
                    .arg("--list")
                    .output()
                    .map_err(|e| e.to_string())?;
                for applet in String::from_utf8_lossy(&list.stdout).lines() {
                    if applet != "busybox" && !applet.contains('/') {
                        let _ =
                            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
                    }
                }
                let files = [
                    (
                        "etc/passwd",
                        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
                    ),
                    ("etc/group", "root:x:0:\nuser:x:1000:\n"),
                    ("etc/lowerfile", "from the lower layer\n"),
                    ("etc/hideme", "must be hidden by the upper layer\n"),
                ];
                for (p, content) in files {
                    std::fs::write(root.join(p), content).map_err(|e| e.to_string())?;
                }
                std::fs::set_permissions(
                    root.join("tmp"),
                    std::os::unix::fs::PermissionsExt::from_mode(0o1777),
                )
                .map_err(|e| e.to_string())
            })
        })
        .clone()
}

/// An upper layer that deletes /etc/hideme (overlayfs whiteout: a 0/0 character
/// device) and adds /etc/topfile. Needs root for mknod.
pub fn whiteout_layer() -> Result<PathBuf, String> {
    static LAYER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            erofs_fixture("whiteout-upper", |root| {
                std::fs::create_dir_all(root.join("etc")).map_err(|e| e.to_string())?;
                std::fs::write(root.join("etc/topfile"), "from the upper layer\n")
                    .map_err(|e| e.to_string())?;
                run(Command::new("mknod")
                    .arg(root.join("etc/hideme"))
                    .args(["c", "0", "0"]))
                .map_err(|e| format!("{e} (whiteouts need root)"))
            })
        })
        .clone()
}

/// PIDs of live processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

/// The example plugins' components: `$SKIFF_PLUGINS_DIR`, else built by plugins/build.sh.
pub fn plugin_components() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("SKIFF_PLUGINS_DIR") {
        return Ok(PathBuf::from(d));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/build.sh");
    let out = Command::new(&script)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "plugins/build.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(PathBuf::from(dir))
}

/// Can this machine restore VMs from QEMU snapshots? A bootable VM and QEMU.
pub fn snapshot_ready() -> Result<(), String> {
    vm_ready()?;
    skiff_runtime::vm::hypervisor::select(Some(skiff_runtime::HypervisorKind::Qemu))
        .map(drop)
        .map_err(|e| e.to_string())
}
