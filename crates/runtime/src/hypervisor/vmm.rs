//! The `vmm` backend: skiff's own KVM VMM (`skiff-vmm run`), one process per VM with the
//! block and vsock device models in-process. Used where the host's KVM is
//! hardware-backed; on PVM hosts a stock Linux guest cannot boot (see `skiff info`).

use std::io;
use std::path::Path;
use std::process::Command;

use super::daemons::ProcessGroup;
use super::{LaunchSpec, VmProcess};
use crate::{Error, Result};

pub struct VmmVm {
    processes: ProcessGroup,
}

/// `reboot=k`: the agent's reboot resets through the i8042 controller, which makes
/// skiff-vmm exit.
fn kernel_cmdline(extra: &str) -> String {
    let base = "console=ttyS0 reboot=k panic=-1 quiet loglevel=4 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";
    if extra.is_empty() {
        base.to_owned()
    } else {
        format!("{base} {extra}")
    }
}

impl VmmVm {
    pub fn launch(vmm: &Path, spec: &LaunchSpec<'_>) -> Result<Self> {
        let mut cmd = Command::new(vmm);
        cmd.arg("run")
            .arg("--kernel")
            .arg(&spec.artifacts.kernel)
            .arg("--initramfs")
            .arg(&spec.artifacts.initramfs)
            .args(["--cmdline", &kernel_cmdline(spec.cmdline_extra)])
            .args(["--memory-mib", &spec.memory_mib.to_string()])
            .args(["--cpus", &spec.vcpus.to_string()])
            .arg("--vsock")
            .arg(spec.vsock_uds)
            .arg("--console")
            .arg(spec.console_log);
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
        let mut processes = ProcessGroup::default();
        processes.spawn(
            "skiff-vmm",
            cmd,
            &spec.work_dir.join("vmm.log"),
            spec.die_with_parent,
        )?;
        Ok(Self { processes })
    }
}

impl VmProcess for VmmVm {
    fn pid(&self) -> u32 {
        self.processes.last_pid()
    }

    fn try_wait(&mut self) -> io::Result<Option<String>> {
        self.processes.try_wait_last()
    }

    fn kill(&mut self) {
        self.processes.kill_all();
    }
}
