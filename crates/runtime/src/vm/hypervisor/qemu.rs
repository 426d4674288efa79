//! The QEMU backend: `qemu-system-x86_64 -M microvm` booting the guest kernel and
//! initramfs, with the disks and the vsock device served by skiff's own device models
//! over vhost-user (`skiff-vmm vhost-user-blk` / `vhost-user-vsock`), so the code the
//! `vmm` backend runs in-process is the code a real Linux driver exercises here.
//!
//! Shared directories are virtio-fs served by `virtiofsd` (as on the vmm backend).
//!
//! `SKIFF_QEMU_DEVICES=qemu` selects QEMU's built-in virtio-blk and virtio-9p and the
//! third-party `vhost-device-vsock` daemon instead (for comparison and as a fallback).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use skiff_vmm_config::{
    DiskConfig, SpecError, VhostUserBlkPlan, VhostUserVsockPlan, DEFAULT_GUEST_CID,
};

use super::daemons::ProcessGroup;
use super::{Accel, LaunchSpec, SnapshotRole};
use crate::tools::find_program;
use crate::{Error, Result};

pub fn find_qemu() -> std::result::Result<PathBuf, String> {
    find_program("qemu-system-x86_64", "SKIFF_QEMU")
}

/// Whose device models serve the VM's disks and vsock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceModels {
    /// skiff's block and vsock models over vhost-user, from this `skiff-vmm`, and
    /// virtio-fs (virtiofsd) for shared directories.
    Skiff(PathBuf),
    /// QEMU's virtio-blk and virtio-9p, and vhost-device-vsock for vsock.
    QemuBuiltin(PathBuf),
}

impl DeviceModels {
    pub fn detect() -> Result<Self> {
        let want = std::env::var("SKIFF_QEMU_DEVICES").unwrap_or_default();
        let skiff = || {
            find_program("skiff-vmm", "SKIFF_VMM").map(Self::Skiff).map_err(|looked| Error::MissingTool {
                tool: "skiff-vmm",
                looked,
                hint: "build it with `cargo build --release -p skiff-vmm` (scripts/setup.sh does)",
            })
        };
        let builtin = || {
            find_program("vhost-device-vsock", "SKIFF_VSOCK_BACKEND")
                .map(Self::QemuBuiltin)
                .map_err(|looked| Error::MissingTool {
                    tool: "vhost-device-vsock",
                    looked,
                    hint: "install it with `cargo install --locked vhost-device-vsock@0.3.0`",
                })
        };
        match want.as_str() {
            "" | "skiff" => skiff(),
            "qemu" => builtin(),
            other => Err(Error::Invalid(format!(
                "SKIFF_QEMU_DEVICES={other:?}: expected skiff or qemu"
            ))),
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Self::Skiff(_) => "skiff's block and vsock models over vhost-user, virtio-fs shares",
            Self::QemuBuiltin(_) => "QEMU's virtio-blk and virtio-9p, vhost-device-vsock",
        }
    }
}

fn refused(e: SpecError) -> Error {
    Error::Config(format!("skiff-vmm's device backends cannot be told: {e}"))
}

/// QEMU option values use `,` as a separator; a literal comma is written twice.
fn qemu_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// A string as one single-quoted shell word (QEMU runs `exec:` migration URIs with
/// `/bin/sh -c`).
pub(crate) fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

/// Starts the device daemons and QEMU; the group owns them all.
pub fn launch(accel: Accel, spec: &LaunchSpec<'_>) -> Result<ProcessGroup> {
    let qemu_bin = find_qemu().map_err(|looked| Error::MissingTool {
        tool: "qemu-system-x86_64",
        looked,
        hint: "install it with `apt-get install qemu-system-x86`",
    })?;
    if let Some(role) = spec.snapshot {
        return launch_migratable(&qemu_bin, accel, spec, role);
    }
    let devices = DeviceModels::detect()?;
    let mut processes = ProcessGroup::default();
    let dir = spec.work_dir;
    let socket_timeout = Duration::from_secs(5);

    // vsock device backend.
    let vhost_vsock = dir.join("vhost-vsock.sock");
    let vsock_plan = VhostUserVsockPlan {
        guest_cid: DEFAULT_GUEST_CID,
        socket: vhost_vsock.clone(),
        uds_path: spec.vsock_uds.to_path_buf(),
    };
    let vsock = match &devices {
        DeviceModels::Skiff(vmm) => {
            let mut c = Command::new(vmm);
            c.args(vsock_plan.to_args().map_err(refused)?);
            c
        }
        // vhost-device-vsock takes the same flags.
        DeviceModels::QemuBuiltin(daemon) => {
            let mut c = Command::new(daemon);
            c.args(vsock_plan.flags().map_err(refused)?);
            c
        }
    };
    processes.spawn(
        "the vsock device backend",
        vsock,
        &dir.join("vsock-device.log"),
        spec.die_with_parent,
    )?;
    processes.wait_for_socket(&vhost_vsock, socket_timeout)?;

    let mem = format!(
        "memory-backend-memfd,id=mem,size={}M,share=on",
        spec.memory_mib
    );
    let mut cmd = base_command(&qemu_bin, accel, spec, &mem);
    cmd.args(["-sandbox", SANDBOX]);
    cmd.args(["-append", &super::kernel_cmdline('t', spec.cmdline_extra)])
        .args(["-serial", &format!("file:{}", qemu_escape(spec.console))]);
    cmd.args([
        "-chardev",
        &format!("socket,id=vsock0,path={}", qemu_escape(&vhost_vsock)),
    ])
    .args(["-device", "vhost-user-vsock-device,chardev=vsock0"]);

    for (i, d) in spec.disks.iter().enumerate() {
        match &devices {
            DeviceModels::Skiff(vmm) => {
                let sock = dir.join(format!("vhost-blk{i}.sock"));
                let plan = VhostUserBlkPlan {
                    socket: sock.clone(),
                    disk: DiskConfig {
                        path: d.path.clone(),
                        read_only: d.readonly,
                        serial: Some(d.serial.clone()),
                    },
                };
                let mut blk = Command::new(vmm);
                blk.args(plan.to_args().map_err(refused)?);
                processes.spawn(
                    &format!("the block device backend for {}", d.path.display()),
                    blk,
                    &dir.join(format!("blk{i}.log")),
                    spec.die_with_parent,
                )?;
                processes.wait_for_socket(&sock, socket_timeout)?;
                cmd.args([
                    "-chardev",
                    &format!("socket,id=blk{i},path={}", qemu_escape(&sock)),
                ])
                .args(["-device", &format!("vhost-user-blk,chardev=blk{i}")]);
            }
            DeviceModels::QemuBuiltin(_) => builtin_disk(&mut cmd, i, d),
        }
    }
    match &devices {
        // virtio-fs: one virtiofsd per share (see `virtiofs`).
        DeviceModels::Skiff(_) => {
            let sockets = super::virtiofs::start_daemons(
                &mut processes,
                spec.shares,
                dir,
                spec.die_with_parent,
            )?;
            for (i, (sh, sock)) in spec.shares.iter().zip(&sockets).enumerate() {
                cmd.args([
                    "-chardev",
                    &format!("socket,id=fs{i},path={}", qemu_escape(sock)),
                ])
                .args([
                    "-device",
                    &format!("vhost-user-fs-device,chardev=fs{i},tag={}", sh.tag),
                ]);
            }
        }
        // QEMU's own 9p server; passthrough keeps owners and modes as the guest sets
        // them (we run as root, as Docker's bind mounts do).
        DeviceModels::QemuBuiltin(_) => {
            for (i, sh) in spec.shares.iter().enumerate() {
                let ro = if sh.readonly { ",readonly=on" } else { "" };
                cmd.args([
                    "-fsdev",
                    &format!(
                        "local,id=fs{i},path={},security_model=passthrough{ro}",
                        qemu_escape(&sh.host_path)
                    ),
                ])
                .args([
                    "-device",
                    &format!("virtio-9p-device,fsdev=fs{i},mount_tag={}", sh.tag),
                ]);
            }
        }
    }
    // QEMU's own virtio-net on the TAP skiff made (validated names and MACs: no commas),
    // or on passt's socket (`-netdev stream`, QEMU 7.2).
    for (i, n) in spec.nets.iter().enumerate() {
        let netdev = match &n.backend {
            super::NetBackend::Tap(tap) => {
                format!("tap,id=net{i},ifname={tap},script=no,downscript=no")
            }
            super::NetBackend::Stream(path) => format!(
                "stream,id=net{i},server=off,addr.type=unix,addr.path={}",
                qemu_escape(path)
            ),
        };
        cmd.args(["-netdev", &netdev]).args([
            "-device",
            &format!("virtio-net-device,netdev=net{i},mac={}", n.mac),
        ]);
    }
    if spec.balloon {
        // Free page reporting would also hand freed guest pages back, but `balloon`
        // targets are what `update` needs; deflate-on-oom stays off so the guest's
        // MemTotal shows the target.
        cmd.args(["-device", "virtio-balloon-device,id=balloon0"]);
    }
    processes.spawn(
        &format!("{}", qemu_bin.display()),
        cmd,
        &dir.join("qemu.log"),
        spec.die_with_parent,
    )?;
    Ok(processes)
}

/// QEMU's own seccomp filter (Kata's recommended value): no obsolete system calls, no
/// set*id, no fork/exec, no scheduler or resource changes. A VM that is snapshotted
/// keeps `spawn`: QEMU 7.2 saves and loads its state through an `exec:` URI.
const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
const SANDBOX_MIGRATABLE: &str = "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny";

/// The command line every QEMU microVM shares: machine, memory backend `mem_object`,
/// CPUs, QMP monitor, kernel and initramfs.
fn base_command(qemu_bin: &Path, accel: Accel, spec: &LaunchSpec<'_>, mem_object: &str) -> Command {
    let mut cmd = Command::new(qemu_bin);
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,isa-serial=on,acpi=off,rtc=on,memory-backend=mem",
    ])
    .args(["-object", mem_object])
    .args(["-m", &format!("{}M", spec.memory_mib)])
    .args(["-smp", &spec.vcpus.to_string()])
    .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // A QMP monitor, so skiff-runtime can pause and resume the vCPUs (`stop`/`cont`)
    // and save VMs.
    cmd.arg("-qmp").arg(format!(
        "unix:{},server=on,wait=off",
        qemu_escape(&spec.work_dir.join(super::QMP_SOCKET))
    ));
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
    };
    cmd.arg("-kernel")
        .arg(&spec.artifacts.kernel)
        .arg("-initrd")
        .arg(&spec.artifacts.initramfs);
    cmd
}

/// A VM that can be saved or restored: guest RAM in a file, the agent on the serial
/// port, QEMU's own virtio-blk for the disks (migratable, and the
/// read-only layer files are simply reopened). vhost-user devices (vsock, fs) cannot
/// be migrated by QEMU 7.2, and TAP names are per VM, so shares and networks are
/// refused. The device list must be identical on both sides of a snapshot.
fn launch_migratable(
    qemu_bin: &Path,
    accel: Accel,
    spec: &LaunchSpec<'_>,
    role: SnapshotRole<'_>,
) -> Result<ProcessGroup> {
    if !spec.shares.is_empty() || !spec.nets.is_empty() {
        return Err(Error::Unsupported(
            "a VM that is snapshotted can have no shared directories or network devices".into(),
        ));
    }
    let size = format!("size={}M", spec.memory_mib);
    let (ram, share) = match role {
        SnapshotRole::Template { ram } => (ram, "on"),
        SnapshotRole::Restore { ram, .. } => (ram, "off"),
    };
    let mem = format!(
        "memory-backend-file,id=mem,{size},mem-path={},share={share}",
        qemu_escape(ram)
    );
    let extra = if spec.cmdline_extra.is_empty() {
        skiff_proto::SERIAL_SWITCH.to_owned()
    } else {
        format!("{} {}", skiff_proto::SERIAL_SWITCH, spec.cmdline_extra)
    };
    let mut cmd = base_command(qemu_bin, accel, spec, &mem);
    cmd.args(["-sandbox", SANDBOX_MIGRATABLE]);
    // The serial port is the agent's channel; the agent silences the console on it.
    cmd.args(["-append", &super::kernel_cmdline('t', &extra)])
        .args([
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                qemu_escape(&spec.work_dir.join(super::AGENT_SERIAL_SOCKET))
            ),
        ])
        .args(["-serial", "chardev:agent"]);
    for (i, d) in spec.disks.iter().enumerate() {
        builtin_disk(&mut cmd, i, d);
    }
    if let SnapshotRole::Restore { .. } = role {
        // The state is loaded over QMP (see `start_incoming`), once `x-ignore-shared`
        // is on: QEMU 7.2 has no command-line switch for it.
        cmd.args(["-incoming", "defer"]);
    }
    let mut processes = ProcessGroup::default();
    processes.spawn(
        &format!("{}", qemu_bin.display()),
        cmd,
        &spec.work_dir.join("qemu.log"),
        spec.die_with_parent,
    )?;
    Ok(processes)
}

/// Migration capabilities both sides of a snapshot use: RAM lives in the memory
/// file (shared on the saving side), so the stream carries only CPU and device state.
pub(crate) fn set_snapshot_capabilities(qmp: &mut super::qmp::Qmp) -> Result<()> {
    qmp.execute(
        "migrate-set-capabilities",
        serde_json::json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )?;
    Ok(())
}

/// Loads a restored VM's device state from `state`; QEMU resumes it when done.
pub(crate) fn start_incoming(qmp: &mut super::qmp::Qmp, state: &Path) -> Result<()> {
    set_snapshot_capabilities(qmp)?;
    qmp.execute(
        "migrate-incoming",
        serde_json::json!({"uri": format!("exec:cat {}", shell_quote(state))}),
    )?;
    Ok(())
}

/// Disk `i` on QEMU's own virtio-blk model (the guest finds it by its serial).
fn builtin_disk(cmd: &mut Command, i: usize, d: &super::Disk) {
    let ro = if d.readonly { ",readonly=on" } else { "" };
    cmd.args([
        "-drive",
        &format!(
            "id=disk{i},file={},format=raw,if=none,cache=unsafe{ro}",
            qemu_escape(&d.path)
        ),
    ])
    .args([
        "-device",
        &format!("virtio-blk-device,drive=disk{i},serial={}", d.serial),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_paths_are_escaped() {
        assert_eq!(qemu_escape(Path::new("/a,b/c")), "/a,,b/c");
    }

    #[test]
    fn shell_words_survive_quotes() {
        assert_eq!(shell_quote(Path::new("/a b/c")), "'/a b/c'");
        assert_eq!(shell_quote(Path::new("/it's")), "'/it'\\''s'");
    }
}
