//! The `vmm` backend: skiff's own KVM VMM (`skiff-vmm run`), one process per VM with the
//! block and vsock device models in-process, and one `virtiofsd` per shared directory
//! (virtio-fs through skiff-vmm's vhost-user front end, `--fs`). Used where the host's KVM is
//! hardware-backed; on PVM hosts a stock Linux guest cannot boot (see `skiff info`).

use std::path::Path;
use std::process::Command;

use super::daemons::ProcessGroup;
use super::LaunchSpec;
use crate::{Error, Result};

/// Starts skiff-vmm for one VM.
pub fn launch(vmm: &Path, spec: &LaunchSpec<'_>) -> Result<ProcessGroup> {
    let mut cmd = Command::new(vmm);
    cmd.arg("run")
        .arg("--kernel")
        .arg(&spec.artifacts.kernel)
        .arg("--initramfs")
        .arg(&spec.artifacts.initramfs)
        .args(["--cmdline", &super::kernel_cmdline('k', spec.cmdline_extra)])
        .args(["--memory-mib", &spec.memory_mib.to_string()])
        .args(["--cpus", &spec.vcpus.to_string()])
        .arg("--vsock")
        .arg(spec.vsock_uds)
        .arg("--console")
        .arg(spec.console)
        // Pause and resume (skiff-runtime) go through the VMM's API socket.
        .arg("--api-socket")
        .arg(spec.work_dir.join(super::VMM_API_SOCKET));
    for d in spec.disks {
        let path = d
            .path
            .to_str()
            .filter(|p| !p.contains(','))
            .ok_or_else(|| Error::Disk {
                path: d.path.clone(),
                message: "the vmm backend needs a UTF-8 disk path without commas".into(),
            })?;
        let ro = if d.readonly { ",ro" } else { "" };
        cmd.arg("--disk").arg(format!("{path}{ro},id={}", d.serial));
    }
    for n in spec.nets {
        let super::NetBackend::Tap(tap) = &n.backend else {
            return Err(Error::Config(
                "the vmm backend has no passt (stream) network device; use the QEMU backend".into(),
            ));
        };
        cmd.arg("--net").arg(format!("tap={tap},mac={}", n.mac));
    }
    let mut processes = ProcessGroup::default();
    let sockets = super::virtiofs::start_daemons(
        &mut processes,
        spec.shares,
        spec.work_dir,
        spec.die_with_parent,
    )?;
    for (sh, sock) in spec.shares.iter().zip(&sockets) {
        let sock = sock.to_str().filter(|p| !p.contains(',')).ok_or_else(|| {
            Error::Config(format!(
                "the vmm backend needs a UTF-8 work directory without commas, not {}",
                spec.work_dir.display()
            ))
        })?;
        cmd.arg("--fs").arg(format!("tag={},socket={sock}", sh.tag));
    }
    processes.spawn(
        "skiff-vmm",
        cmd,
        &spec.work_dir.join("vmm.log"),
        spec.die_with_parent,
    )?;
    Ok(processes)
}
