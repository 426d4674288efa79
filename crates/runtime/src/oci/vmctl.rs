//! Acting on a running container's VM through whichever control channel its backend
//! has: QEMU's QMP monitor or skiff-vmm's API socket (both recorded in the state).

use super::{qmp, vmm_api, Record};
use crate::{Error, Result};

/// Stops (`pause`) or continues the VM's vCPUs.
pub fn set_paused(rec: &Record, pause: bool) -> Result<()> {
    if let Some(sock) = &rec.qmp {
        return qmp::execute(sock, if pause { "stop" } else { "cont" });
    }
    if let Some(sock) = &rec.vmm_api {
        let want = if pause { "paused" } else { "running" };
        let got = vmm_api::request(sock, if pause { "pause" } else { "resume" })?;
        if got != want {
            return Err(Error::Config(format!(
                "the VMM reported {got:?} instead of {want:?}"
            )));
        }
        return Ok(());
    }
    Err(Error::Config(
        "this container's VM has no control socket to pause or resume it".into(),
    ))
}

/// Sets the memory the guest may use to `mib` through the balloon (QEMU backend).
pub fn set_memory(rec: &Record, mib: u32) -> Result<()> {
    let Some(sock) = rec.qmp.as_ref().filter(|_| rec.balloon) else {
        return Err(Error::Config(
            "this container's VM has no balloon device to change its memory".into(),
        ));
    };
    let bytes = u64::from(mib) << 20;
    qmp::call(sock, "balloon", Some(serde_json::json!({ "value": bytes }))).map(drop)
}

/// The memory the guest has now that its balloon took its share, in bytes.
pub fn memory_actual(rec: &Record) -> Result<u64> {
    let Some(sock) = rec.qmp.as_ref().filter(|_| rec.balloon) else {
        return Err(Error::Config(
            "this container's VM has no balloon device".into(),
        ));
    };
    let v = qmp::call(sock, "query-balloon", None)?;
    v.get("actual")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::Config(format!("query-balloon: unexpected reply {v}")))
}
