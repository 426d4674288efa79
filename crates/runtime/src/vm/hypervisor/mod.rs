//! Hypervisor backends and the choice between them.
//!
//! `vmm` is skiff's own KVM VMM; it is the default where the host's KVM can boot a
//! stock Linux guest (hardware virtualization). `qemu` is Debian's qemu-system-x86 with
//! `-M microvm`, KVM-accelerated where that works and TCG (emulation) otherwise. Both
//! boot the same kernel, initramfs and agent and speak the same protocol.

mod daemons;
mod qemu;
pub(crate) use qemu::{set_snapshot_capabilities, shell_quote, start_incoming};
pub mod control;
pub(crate) mod qmp;
mod virtiofs;
mod vmm;
pub mod vmm_api;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::vm::artifacts::GuestArtifacts;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorKind {
    Vmm,
    Qemu,
}

impl fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vmm => "vmm",
            Self::Qemu => "qemu",
        })
    }
}

impl FromStr for HypervisorKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "vmm" => Ok(Self::Vmm),
            "qemu" => Ok(Self::Qemu),
            other => Err(format!(
                "unknown hypervisor {other:?} (expected vmm or qemu)"
            )),
        }
    }
}

/// What this host's /dev/kvm can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmState {
    /// No usable /dev/kvm; the reason says why.
    Unavailable(String),
    /// KVM backed by PVM (software virtualization): tiny purpose-built guests run, a
    /// stock Linux kernel does not boot.
    Pvm,
    /// Hardware-backed KVM (VT-x/AMD-V).
    Hardware,
}

pub fn kvm_state() -> KvmState {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return KvmState::Unavailable(format!("/dev/kvm: {e}"));
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        KvmState::Pvm
    } else {
        KvmState::Hardware
    }
}

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The chosen backend and, for `skiff info`, why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub kind: HypervisorKind,
    pub accel: Accel,
    pub reason: String,
}

/// Picks the backend: `requested` if it can run here, else the best available.
pub fn select(requested: Option<HypervisorKind>) -> Result<Selection> {
    let kvm = kvm_state();
    let vmm = crate::tools::find_program("skiff-vmm", "SKIFF_VMM");
    let kvm_note = match &kvm {
        KvmState::Hardware => "KVM is hardware-backed".to_owned(),
        KvmState::Pvm => {
            "KVM here is PVM (kvm_pvm loaded), which cannot boot a stock Linux guest".to_owned()
        }
        KvmState::Unavailable(why) => format!("KVM is unavailable ({why})"),
    };
    let qemu_selection = |why: String| -> Result<Selection> {
        if let Err(looked) = qemu::find_qemu() {
            return Err(Error::NoBackend(format!(
                "{why}, and qemu-system-x86_64 was not found ({looked}); install it with `apt-get install qemu-system-x86`"
            )));
        }
        let devices = qemu::DeviceModels::detect()
            .map_err(|e| Error::NoBackend(format!("{why}; QEMU devices: {e}")))?;
        let (accel, how) = if kvm == KvmState::Hardware {
            (Accel::Kvm, "QEMU with KVM acceleration")
        } else {
            (Accel::Tcg, "QEMU with TCG (software emulation, slower)")
        };
        Ok(Selection {
            kind: HypervisorKind::Qemu,
            accel,
            reason: format!("{why}; {how}, devices: {}", devices.describe()),
        })
    };
    let vmm_selection = |why: &str| Selection {
        kind: HypervisorKind::Vmm,
        accel: Accel::Kvm,
        reason: format!("{why}; skiff's own VMM with in-process device models"),
    };
    match (requested, &kvm, &vmm) {
        (Some(HypervisorKind::Qemu), _, _) => {
            qemu_selection(format!("--hypervisor qemu ({kvm_note})"))
        }
        (Some(HypervisorKind::Vmm), KvmState::Hardware, Ok(_)) => {
            Ok(vmm_selection("--hypervisor vmm"))
        }
        (Some(HypervisorKind::Vmm), _, Err(looked)) => Err(Error::NoBackend(format!(
            "--hypervisor vmm: skiff-vmm not found ({looked})"
        ))),
        (Some(HypervisorKind::Vmm), _, Ok(_)) => Err(Error::NoBackend(format!(
            "--hypervisor vmm needs hardware-backed KVM: {kvm_note}"
        ))),
        (None, KvmState::Hardware, Ok(_)) => Ok(vmm_selection(&kvm_note)),
        (None, _, _) => qemu_selection(kvm_note),
    }
}

/// The QEMU backend's QMP monitor socket, in the VM's work directory.
pub const QMP_SOCKET: &str = "qmp.sock";
/// The vmm backend's API socket (pause, resume, status), in the VM's work directory.
pub const VMM_API_SOCKET: &str = "api.sock";

/// A disk attached as virtio-blk, found by the agent through its serial.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub readonly: bool,
    /// virtio-blk device ID (at most 20 bytes).
    pub serial: String,
}

impl Disk {
    /// An image's read-only layer disks, in order, with the serials the agent finds
    /// them by ([`Disk::layer_serials`]).
    pub fn layers(paths: &[PathBuf]) -> Vec<Disk> {
        paths
            .iter()
            .zip(Self::layer_serials(paths.len()))
            .map(|(p, serial)| Disk {
                path: p.clone(),
                readonly: true,
                serial,
            })
            .collect()
    }

    /// The serials of `n` layer disks: what a `ContainerConfig` names as its layers.
    pub fn layer_serials(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("layer{i}")).collect()
    }

    /// The writable layer's disk, with the serial a `ContainerConfig` names as
    /// `writable` ([`Disk::WRITABLE_SERIAL`]).
    pub fn writable(path: PathBuf) -> Disk {
        Disk {
            path,
            readonly: false,
            serial: Self::WRITABLE_SERIAL.into(),
        }
    }

    pub const WRITABLE_SERIAL: &'static str = "rw";
}

/// A host directory exposed to the guest with mount tag `tag`: virtio-fs (virtiofsd)
/// on both backends, virtio-9p under `SKIFF_QEMU_DEVICES=qemu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub host_path: PathBuf,
    pub tag: String,
    pub readonly: bool,
}

/// A virtio-net device and its host end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    pub backend: NetBackend,
    /// `02:73:0a:59:00:02`: the guest finds its interface by it.
    pub mac: String,
}

/// Where a virtio-net device's frames go on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// An existing TAP interface (bridge networks).
    Tap(String),
    /// A UNIX stream socket speaking QEMU's length-prefixed frames (passt); QEMU only.
    Stream(PathBuf),
}

/// The host end of the serial port of VMs whose agent speaks over it (see
/// [`SnapshotRole`]), in the VM's work directory.
pub const AGENT_SERIAL_SOCKET: &str = "agent.sock";

/// A VM that takes part in snapshots (QEMU backend only). Such a VM's agent speaks over
/// the serial port instead of vsock (see skiff_proto::SERIAL_SWITCH), its disks are
/// QEMU's own virtio-blk and it has no shares or network devices: everything in it
/// must be migratable.
#[derive(Debug, Clone, Copy)]
pub enum SnapshotRole<'a> {
    /// Boot a VM to be saved; its RAM lives in this file (shared mapping), so saving
    /// writes only the device state.
    Template { ram: &'a Path },
    /// Start from a saved VM: `ram` mapped copy-on-write (private mapping; every
    /// restored VM shares the file's pages until it writes them) and the device state
    /// loaded from `state`.
    Restore { ram: &'a Path, state: &'a Path },
}

/// Everything a backend needs to start one microVM.
#[derive(Debug, Clone)]
pub struct LaunchSpec<'a> {
    pub artifacts: &'a GuestArtifacts,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub disks: &'a [Disk],
    /// Host directories shared with the guest.
    pub shares: &'a [Share],
    /// Network devices, each on a TAP the caller created.
    pub nets: &'a [NetDevice],
    /// A virtio-balloon device, so the memory can shrink and regrow while it runs
    /// (QEMU backend; skiff-vmm has none and ignores this).
    pub balloon: bool,
    pub cmdline_extra: &'a str,
    /// The vsock device's host-side UNIX socket (`CONNECT <port>` convention).
    pub vsock_uds: &'a Path,
    /// Where the guest's serial console goes: a FIFO the host drains (see
    /// [`crate::vm::console_log`]), opened for writing like a file.
    pub console: &'a Path,
    /// Private scratch directory for backend sockets and logs.
    pub work_dir: &'a Path,
    /// Kill the VM if the launching thread's process dies (CLI use).
    pub die_with_parent: bool,
    /// Set for VMs that are saved or restored.
    pub snapshot: Option<SnapshotRole<'a>>,
}

/// A running microVM's host processes.
pub trait VmProcess: Send {
    /// The process callers treat as the VM (QEMU or skiff-vmm).
    fn pid(&self) -> u32;
    /// `Some(description)` once the VM has exited.
    fn try_wait(&mut self) -> io::Result<Option<String>>;
    /// Kills every host process of this VM and reaps them.
    fn kill(&mut self);
    /// The device daemons serving the VM (what each is, and its pid).
    fn helpers(&self) -> Vec<(String, u32)>;
}

pub fn launch(selection: &Selection, spec: &LaunchSpec<'_>) -> Result<Box<dyn VmProcess>> {
    validate_disks(spec.disks)?;
    validate_shares(spec.shares)?;
    validate_nets(spec.nets)?;
    match selection.kind {
        HypervisorKind::Qemu => Ok(Box::new(qemu::launch(selection.accel, spec)?)),
        HypervisorKind::Vmm if spec.snapshot.is_some() => Err(Error::Unsupported(
            "snapshots of this kind need the QEMU backend (skiff-vmm has its own format)".into(),
        )),
        HypervisorKind::Vmm => {
            let vmm = crate::tools::find_program("skiff-vmm", "SKIFF_VMM").map_err(|looked| {
                Error::MissingTool {
                    tool: "skiff-vmm",
                    looked,
                    hint: "build it with `cargo build --release -p skiff-vmm` (scripts/setup.sh does)",
                }
            })?;
            Ok(Box::new(vmm::launch(&vmm, spec)?))
        }
    }
}

fn validate_shares(shares: &[Share]) -> Result<()> {
    for sh in shares {
        if sh.tag.is_empty()
            || sh.tag.len() > 31
            || !sh
                .tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::Invalid(format!(
                "share tag {:?} must be 1-31 characters of [A-Za-z0-9_-]",
                sh.tag
            )));
        }
        if !sh.host_path.is_dir() {
            return Err(Error::Disk {
                path: sh.host_path.clone(),
                message: "a shared directory must be an existing directory".into(),
            });
        }
    }
    Ok(())
}

fn validate_nets(nets: &[NetDevice]) -> Result<()> {
    for n in nets {
        let mac_ok = skiff_sys::net::valid_mac(&n.mac);
        let backend_ok = match &n.backend {
            NetBackend::Tap(tap) => skiff_sys::net::valid_ifname(tap),
            NetBackend::Stream(path) => path.is_absolute(),
        };
        if !backend_ok || !mac_ok {
            return Err(Error::Invalid(format!(
                "network device {:?} with MAC {:?} is not valid",
                n.backend, n.mac
            )));
        }
    }
    Ok(())
}

fn validate_disks(disks: &[Disk]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for d in disks {
        if d.serial.is_empty()
            || d.serial.len() > 20
            || !d
                .serial
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Config(format!(
                "disk serial {:?} must be 1-20 characters of [A-Za-z0-9_-]",
                d.serial
            )));
        }
        if !seen.insert(&d.serial) {
            return Err(Error::Config(format!(
                "two disks share the serial {:?}",
                d.serial
            )));
        }
        let meta = std::fs::metadata(&d.path).map_err(|e| Error::Disk {
            path: d.path.clone(),
            message: e.to_string(),
        })?;
        if !meta.is_file() && !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
            return Err(Error::Disk {
                path: d.path.clone(),
                message: "not a regular file or block device".into(),
            });
        }
    }
    Ok(())
}

/// The guest command line both backends share: serial console, no reboot loop on
/// panic, quiet boot (the console is slow under emulation); `reboot` picks how the
/// guest's reboot reaches the VMM (`t`: triple fault for QEMU with -no-reboot, `k`: the
/// i8042 reset that skiff-vmm exits on). `extra` comes last so it can override.
fn kernel_cmdline(reboot: char, extra: &str) -> String {
    let mut c = format!(
        "console=ttyS0 reboot={reboot} panic=-1 quiet loglevel=4 tsc=reliable no_timer_check \
         i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
    );
    if !extra.is_empty() {
        c.push(' ');
        c.push_str(extra);
    }
    c
}

/// Sets PR_SET_PDEATHSIG in a child about to exec (used through `pre_exec`).
pub(crate) fn die_with_parent() -> io::Result<()> {
    skiff_sys::confine::die_with_parent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_keeps_extra_args_last() {
        assert!(kernel_cmdline('t', "skiff.debug=1").ends_with(" skiff.debug=1"));
        assert!(kernel_cmdline('k', "").contains("reboot=k panic=-1 quiet"));
    }

    #[test]
    fn kinds_parse() {
        assert_eq!(
            "qemu".parse::<HypervisorKind>().unwrap(),
            HypervisorKind::Qemu
        );
        assert_eq!(
            "vmm".parse::<HypervisorKind>().unwrap(),
            HypervisorKind::Vmm
        );
        assert!("firecracker".parse::<HypervisorKind>().is_err());
    }

    #[test]
    fn bad_disks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.img");
        std::fs::write(&f, b"").unwrap();
        let disk = |serial: &str, path: &Path| Disk {
            path: path.to_path_buf(),
            readonly: true,
            serial: serial.into(),
        };
        assert!(validate_disks(&[disk("layer0", &f)]).is_ok());
        assert!(validate_disks(&[disk("", &f)]).is_err());
        assert!(validate_disks(&[disk("a,b", &f)]).is_err());
        assert!(validate_disks(&[disk("x".repeat(21).as_str(), &f)]).is_err());
        assert!(validate_disks(&[disk("a", &f), disk("a", &f)]).is_err());
        assert!(validate_disks(&[disk("a", &dir.path().join("missing"))]).is_err());
        assert!(validate_disks(&[disk("a", dir.path())]).is_err());
    }
}
