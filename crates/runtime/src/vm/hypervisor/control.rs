//! A running VM's control channel, whichever backend runs it: QEMU's QMP monitor or
//! skiff-vmm's API socket. Pausing and resuming the vCPUs and setting the balloon go
//! through here, over the one QMP client ([`super::qmp::Qmp`]).

use std::path::Path;
use std::time::Duration;

use super::qmp::Qmp;
use super::vmm_api;
use crate::{Error, Result};

/// How long a monitor may take to answer one command.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a running VM listens for control requests.
#[derive(Debug, Clone, Copy)]
pub enum VmControl<'a> {
    /// QEMU's QMP socket; `balloon` if the VM has a virtio-balloon device.
    Qmp { socket: &'a Path, balloon: bool },
    /// skiff-vmm's `--api-socket`.
    VmmApi { socket: &'a Path },
}

impl VmControl<'_> {
    /// Stops (`pause`) or continues the VM's vCPUs.
    pub fn set_paused(&self, pause: bool) -> Result<()> {
        match self {
            Self::Qmp { socket, .. } => {
                let command = if pause { "stop" } else { "cont" };
                Qmp::connect(socket, QMP_TIMEOUT)?
                    .execute(command, serde_json::json!({}))
                    .map(drop)
            }
            Self::VmmApi { socket } => {
                let want = if pause { "paused" } else { "running" };
                let got = vmm_api::request(socket, if pause { "pause" } else { "resume" })?;
                if got != want {
                    return Err(Error::Config(format!(
                        "the VMM reported {got:?} instead of {want:?}"
                    )));
                }
                Ok(())
            }
        }
    }

    /// Sets the memory the guest may use to `mib` through the balloon.
    pub fn set_memory(&self, mib: u32) -> Result<()> {
        match self {
            Self::Qmp {
                socket,
                balloon: true,
            } => {
                let bytes = u64::from(mib) << 20;
                Qmp::connect(socket, QMP_TIMEOUT)?
                    .execute("balloon", serde_json::json!({ "value": bytes }))
                    .map(drop)
            }
            _ => Err(Error::Unsupported(
                "this container's VM has no balloon device to change its memory".into(),
            )),
        }
    }
}
