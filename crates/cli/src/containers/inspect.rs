//! `inspect`: a container's record and state as Docker's JSON (and `-f` templates).

use anyhow::Result;
use serde_json::{json, Value};
use skiff_runtime::container::{self, ContainerSpec, Containers, Status};

use crate::template;

use super::*;

/// How the VM's host processes (every descendant of the supervisor) are confined, as
/// /proc shows them: their uid, whether they can gain privileges, their seccomp mode.
fn jail(supervisor: Option<u32>) -> Value {
    use skiff_sys::procfs;
    let Some(root) = supervisor else {
        return Value::Null;
    };
    let processes: Vec<Value> = procfs::tree(root)[1..]
        .iter()
        .filter_map(|&pid| {
            let field = |f: &str| procfs::status_field(pid, f);
            Some(json!({
                "Pid": pid,
                "Name": field("Name")?,
                "Uid": field("Uid")?.split_whitespace().nth(1).unwrap_or_default(),
                "NoNewPrivs": field("NoNewPrivs").as_deref() == Some("1"),
                "Seccomp": match field("Seccomp").as_deref() {
                    Some("2") => "filter",
                    Some("1") => "strict",
                    _ => "none",
                },
            }))
        })
        .collect();
    json!({ "Processes": processes })
}

pub(super) fn inspect_value(c: &Containers, spec: &ContainerSpec) -> Result<Value> {
    let st = c.state(&spec.id)?;
    let time = |ms: Option<u64>| {
        ms.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), container::rfc3339_ms)
    };
    Ok(json!({
        "Id": spec.id,
        "Created": container::rfc3339_ms(spec.created_ms),
        "Path": spec.process.args.first(),
        "Args": spec.process.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": st.status.as_str(),
            "Running": st.is_running(),
            "Pid": st.pid.filter(|_| st.status != Status::Exited).unwrap_or(0),
            "ExitCode": st.exit_code.unwrap_or(0),
            "Error": st.error.clone().unwrap_or_default(),
            "StartedAt": time(st.started_ms),
            "FinishedAt": time(st.finished_ms),
        },
        "Image": spec.image_id,
        "Name": format!("/{}", spec.name),
        "LogPath": c.log_path(&spec.id),
        "HostConfig": {
            "Memory": u64::from(spec.memory_mib) << 20,
            "NanoCpus": u64::from(spec.vcpus) * 1_000_000_000,
            "ReadonlyRootfs": spec.readonly_rootfs,
            "AutoRemove": spec.auto_remove,
            "NetworkMode": spec.network.name(),
            "Egress": spec.egress.to_string(),
        },
        "Config": {
            "Hostname": spec.hostname,
            "User": spec.user,
            "Tty": spec.process.terminal,
            "OpenStdin": spec.process.stdin,
            "Env": spec.process.env,
            "Cmd": spec.cmd,
            "Entrypoint": spec.entrypoint,
            "Image": spec.image,
            "WorkingDir": spec.process.cwd,
            "Labels": spec.labels,
            "StopSignal": spec.stop_signal,
            "StopTimeout": spec.stop_timeout_s,
        },
        "MicroVM": {
            "Pid": st.vm_pid.filter(|_| st.is_running()).unwrap_or(0),
            "Memory": format!("{}M", spec.memory_mib),
            "Vcpus": spec.vcpus,
            "BootMs": st.boot_ms,
            "Layers": spec.layers,
            "WritableDisk": c.writable_disk(&spec.id),
            "VsockSocket": st.vsock_uds,
            "ControlSocket": st.control_socket,
            "GuestPid": st.guest_pid,
        },
        "Jail": jail(st.pid.filter(|_| st.is_running())),
        "NetworkSettings": crate::networks::inspect_settings(spec)?,
        "Plugins": {
            "Admission": spec.plugin_decision,
            "Audit": skiff_engine::policy::audit_records(&c.dir_of(&spec.id)),
        },
    }))
}

pub(super) fn inspect(ctx: &Ctx, a: &InspectArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let mut values = Vec::new();
    for name in &a.containers {
        let spec = c.resolve(name)?;
        values.push(inspect_value(&c, &spec)?);
    }
    match &a.format {
        Some(t) => {
            for v in &values {
                println!("{}", template::render(t, v));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&values)?),
    }
    Ok(0)
}
