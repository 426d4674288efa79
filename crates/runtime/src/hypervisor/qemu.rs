//! The QEMU backend: `qemu-system-x86_64 -M microvm` with the layer disks and the
//! writable disk as virtio-blk devices and a vhost-user vsock device whose backend
//! (a separate process) exposes the Firecracker-style UNIX socket.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Accel, LaunchSpec, VmProcess};
use crate::tools::find_program;
use crate::{Error, Result};

pub fn find_qemu() -> std::result::Result<PathBuf, String> {
    find_program("qemu-system-x86_64", "SKIFF_QEMU")
}

/// The vsock device backend: any program taking vhost-device-vsock's flags
/// (`--guest-cid`, `--socket`, `--uds-path`).
fn find_vsock_backend() -> Result<PathBuf> {
    find_program("vhost-device-vsock", "SKIFF_VSOCK_BACKEND").map_err(|looked| Error::MissingTool {
        tool: "vhost-device-vsock",
        looked,
        hint: "install it with `cargo install --locked vhost-device-vsock@0.3.0` or `scripts/setup.sh`",
    })
}

/// QEMU option values use `,` as a separator; a literal comma is written twice.
fn qemu_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

pub struct QemuVm {
    qemu: Child,
    vsock_backend: Child,
}

impl QemuVm {
    pub fn launch(accel: Accel, spec: &LaunchSpec<'_>) -> Result<Self> {
        let qemu_bin = find_qemu().map_err(|looked| Error::MissingTool {
            tool: "qemu-system-x86_64",
            looked,
            hint: "install it with `apt-get install qemu-system-x86`",
        })?;
        let vsock_bin = find_vsock_backend()?;
        let vhost_sock = spec.work_dir.join("vhost-vsock.sock");
        let backend_log = open_log(&spec.work_dir.join("vsock-backend.log"))?;
        let mut backend = Command::new(&vsock_bin);
        backend
            .arg("--guest-cid")
            .arg("3")
            .arg("--socket")
            .arg(&vhost_sock)
            .arg("--uds-path")
            .arg(spec.vsock_uds)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(backend_log);
        if spec.die_with_parent {
            // SAFETY: the closure only calls prctl, which is async-signal-safe.
            unsafe { backend.pre_exec(super::die_with_parent) };
        }
        let mut vsock_backend = backend.spawn().map_err(|source| Error::Launch {
            what: vsock_bin.display().to_string(),
            source,
        })?;
        if let Err(e) = wait_for_socket(&vhost_sock, &mut vsock_backend, Duration::from_secs(5)) {
            let _ = vsock_backend.kill();
            let _ = vsock_backend.wait();
            return Err(e);
        }

        let mut cmd = Command::new(&qemu_bin);
        let mem = format!("{}M", spec.memory_mib);
        cmd.args([
            "-M",
            "microvm,x-option-roms=off,isa-serial=on,acpi=off,rtc=on,memory-backend=mem",
        ])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        ])
        .args(["-m", &mem])
        .args(["-smp", &spec.vcpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        match accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
        };
        cmd.arg("-kernel")
            .arg(&spec.artifacts.kernel)
            .arg("-initrd")
            .arg(&spec.artifacts.initramfs)
            .args(["-append", &kernel_cmdline(spec.cmdline_extra)])
            .args([
                "-serial",
                &format!("file:{}", qemu_escape(spec.console_log)),
            ])
            .args([
                "-chardev",
                &format!("socket,id=vsock0,path={}", qemu_escape(&vhost_sock)),
            ])
            .args(["-device", "vhost-user-vsock-device,chardev=vsock0"]);
        for (i, d) in spec.disks.iter().enumerate() {
            let ro = if d.readonly { ",readonly=on" } else { "" };
            cmd.args([
                "-drive",
                &format!(
                    "id=disk{i},file={},format=raw,if=none,cache=unsafe,discard=unmap{ro}",
                    qemu_escape(&d.path)
                ),
            ])
            .args([
                "-device",
                &format!("virtio-blk-device,drive=disk{i},serial={}", d.serial),
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(open_log(&spec.work_dir.join("qemu.log"))?)
            .stderr(open_log(&spec.work_dir.join("qemu.err"))?);
        if spec.die_with_parent {
            // SAFETY: the closure only calls prctl, which is async-signal-safe.
            unsafe { cmd.pre_exec(super::die_with_parent) };
        }
        tracing::debug!(?cmd, "starting QEMU");
        let qemu = match cmd.spawn() {
            Ok(q) => q,
            Err(source) => {
                let _ = vsock_backend.kill();
                let _ = vsock_backend.wait();
                return Err(Error::Launch {
                    what: qemu_bin.display().to_string(),
                    source,
                });
            }
        };
        Ok(Self {
            qemu,
            vsock_backend,
        })
    }
}

/// The guest command line: serial console, reset = exit (`reboot=t` with `-no-reboot`),
/// no reboot loop on panic, and quiet boot (the console is slow under emulation).
fn kernel_cmdline(extra: &str) -> String {
    let base = "console=ttyS0 reboot=t panic=-1 quiet loglevel=4 tsc=reliable no_timer_check i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";
    if extra.is_empty() {
        base.to_owned()
    } else {
        format!("{base} {extra}")
    }
}

fn open_log(path: &Path) -> Result<File> {
    File::create(path).map_err(Error::io(format!("create {}", path.display())))
}

fn wait_for_socket(path: &Path, backend: &mut Child, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = backend.try_wait() {
            return Err(Error::Launch {
                what: "the vsock backend".into(),
                source: io::Error::other(format!(
                    "it exited ({status}) before creating {}",
                    path.display()
                )),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(Error::Launch {
        what: "the vsock backend".into(),
        source: io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} did not appear", path.display()),
        ),
    })
}

impl VmProcess for QemuVm {
    fn pid(&self) -> u32 {
        self.qemu.id()
    }

    fn try_wait(&mut self) -> io::Result<Option<String>> {
        Ok(self.qemu.try_wait()?.map(|s| s.to_string()))
    }

    fn kill(&mut self) {
        for child in [&mut self.qemu, &mut self.vsock_backend] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_paths_are_escaped() {
        assert_eq!(qemu_escape(Path::new("/a,b/c")), "/a,,b/c");
    }

    #[test]
    fn cmdline_keeps_extra_args_last() {
        assert!(kernel_cmdline("skiff.debug=1").ends_with(" skiff.debug=1"));
        assert!(kernel_cmdline("").contains("reboot=t"));
    }
}
