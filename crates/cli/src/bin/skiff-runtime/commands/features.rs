//! `features`: what this runtime supports, as runc reports it.

use super::*;

pub(super) fn features() -> Result<i32> {
    let f = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "bind", "rbind", "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
            "sync", "async", "dirsync", "mand", "nomand", "atime", "noatime", "diratime",
            "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime",
        ],
        "linux": {
            "namespaces": ["mount", "network", "pid", "ipc", "uts"],
            // The microVM's VMM joins a cgroup of the cpu controller on either
            // hierarchy (see skiff_runtime::oci::cgroup); systemd's slice form of
            // cgroupsPath falls back to skiff-runtime/<id> rather than asking systemd.
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
        },
        "annotations": {
            "io.skiff.runtime.microvm": "true",
        },
    });
    println!("{}", serde_json::to_string_pretty(&f)?);
    Ok(0)
}
