//! The `vmm` backend: skiff's own KVM VMM (`skiff-vmm run`), one process per VM with the
//! block and vsock device models in-process, and one `virtiofsd` per shared directory
//! (virtio-fs through skiff-vmm's vhost-user front end, `--fs`). Used where the host's KVM is
//! hardware-backed; on PVM hosts a stock Linux guest cannot boot (see `skiff info`).

use std::path::Path;
use std::process::Command;

use skiff_vmm_config::{
    parse_mac, ConsoleConfig, DiskConfig, FsConfig, NetConfig, RunPlan, SpecError, VsockConfig,
    DEFAULT_GUEST_CID,
};

use super::daemons::ProcessGroup;
use super::LaunchSpec;
use crate::{Error, Result};

fn refused(e: SpecError) -> Error {
    Error::Unsupported(format!("the vmm backend cannot start this VM: {e}"))
}

/// What skiff-vmm runs for `spec`, without the shares (their sockets come later).
fn plan(spec: &LaunchSpec<'_>) -> Result<RunPlan> {
    let mut plan = RunPlan::new(&spec.artifacts.kernel);
    plan.initramfs = Some(spec.artifacts.initramfs.clone());
    plan.cmdline = super::kernel_cmdline('k', spec.cmdline_extra);
    plan.memory_mib = spec.memory_mib.into();
    plan.vcpus = u8::try_from(spec.vcpus).map_err(|_| {
        Error::Unsupported(format!("{} vCPUs is too many for skiff-vmm", spec.vcpus))
    })?;
    plan.vsock = Some(VsockConfig {
        guest_cid: DEFAULT_GUEST_CID,
        uds_path: spec.vsock_uds.to_path_buf(),
    });
    plan.console = ConsoleConfig::File(spec.console.to_path_buf());
    // Pause and resume (skiff-runtime) go through the VMM's API socket.
    plan.api_socket = Some(spec.work_dir.join(super::VMM_API_SOCKET));
    plan.disks = spec
        .disks
        .iter()
        .map(|d| DiskConfig {
            path: d.path.clone(),
            read_only: d.readonly,
            serial: Some(d.serial.clone()),
        })
        .collect();
    for n in spec.nets {
        let super::NetBackend::Tap(tap) = &n.backend else {
            return Err(Error::Unsupported(
                "the vmm backend has no passt (stream) network device; use the QEMU backend".into(),
            ));
        };
        plan.nets.push(NetConfig {
            tap: tap.clone(),
            mac: parse_mac(&n.mac).map_err(refused)?,
        });
    }
    Ok(plan)
}

/// Starts skiff-vmm for one VM.
pub fn launch(vmm: &Path, spec: &LaunchSpec<'_>) -> Result<ProcessGroup> {
    let mut plan = plan(spec)?;
    // Refuse what skiff-vmm could not be told (a comma in a disk path, say) before
    // any daemon starts.
    plan.to_args().map_err(refused)?;
    let mut processes = ProcessGroup::default();
    let sockets = super::virtiofs::start_daemons(
        &mut processes,
        spec.shares,
        spec.work_dir,
        spec.die_with_parent,
    )?;
    plan.fs = spec
        .shares
        .iter()
        .zip(sockets)
        .map(|(sh, socket)| FsConfig {
            tag: sh.tag.clone(),
            socket,
        })
        .collect();
    let mut cmd = Command::new(vmm);
    cmd.args(plan.to_args().map_err(refused)?);
    processes.spawn(
        "skiff-vmm",
        cmd,
        &spec.work_dir.join("vmm.log"),
        spec.die_with_parent,
    )?;
    Ok(processes)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::vm::hypervisor::{Disk, NetBackend, NetDevice};
    use crate::GuestArtifacts;

    fn with_spec<T>(disks: &[Disk], nets: &[NetDevice], f: impl FnOnce(&LaunchSpec<'_>) -> T) -> T {
        let artifacts = GuestArtifacts {
            kernel: "/k/vmlinux".into(),
            initramfs: "/k/initramfs".into(),
        };
        f(&LaunchSpec {
            artifacts: &artifacts,
            memory_mib: 256,
            vcpus: 2,
            disks,
            shares: &[],
            nets,
            balloon: false,
            cmdline_extra: "",
            vsock_uds: Path::new("/w/vsock.sock"),
            console: Path::new("/w/console"),
            work_dir: Path::new("/w"),
            die_with_parent: false,
            snapshot: None,
        })
    }

    #[test]
    fn plan_carries_the_launch_spec() {
        let disks = [Disk::writable("/d/rw.img".into())];
        let nets = [NetDevice {
            backend: NetBackend::Tap("sk0".into()),
            mac: "02:73:0A:59:00:02".into(),
        }];
        let p = with_spec(&disks, &nets, plan).unwrap();
        assert_eq!((p.memory_mib, p.vcpus), (256, 2));
        assert_eq!(p.disks[0].serial.as_deref(), Some("rw"));
        assert_eq!(p.nets[0].mac, [2, 0x73, 0xa, 0x59, 0, 2]);
        assert_eq!(p.api_socket, Some(PathBuf::from("/w/api.sock")));
        assert_eq!(p.console, ConsoleConfig::File("/w/console".into()));
        assert!(p.to_args().is_ok());
    }

    #[test]
    fn unwritable_disks_and_stream_nets_are_refused() {
        let disks = [Disk::writable("/d/a,b.img".into())];
        let commas = with_spec(&disks, &[], plan).unwrap();
        assert!(commas.to_args().is_err());
        let nets = [NetDevice {
            backend: NetBackend::Stream("/p.sock".into()),
            mac: "02:73:0a:59:00:02".into(),
        }];
        assert!(with_spec(&[], &nets, plan).is_err());
    }
}
