//! Boots the project's guest kernel (guest/kernel/build.sh) with skiff-vmm. Needs a
//! hardware-backed KVM: under PVM (this project's machines) a stock kernel cannot
//! boot, so the test says so loudly and returns without running.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn kernel_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("SKIFF_KERNEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    let out = Command::new(repo_root().join("guest/kernel/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

fn boot(kernel: &std::path::Path, disk: &std::path::Path) -> String {
    let child = Command::new(vmm_binary())
        .args(["run", "--kernel"])
        .arg(kernel)
        .arg("--disk")
        .arg(disk)
        .args([
            "--cmdline",
            "console=ttyS0 reboot=k panic=-1",
            "--memory-mib",
            "256",
            "--cpus",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff-vmm");
    let out = wait_with_deadline(child, Duration::from_secs(120));
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    // No root filesystem: the kernel panics and, with panic=-1 reboot=k, resets at once.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: console:\n{console}\nstderr:\n{}",
        kernel.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    console
}

#[test]
fn linux_boots_to_its_console_and_resets() {
    if !skiff_vmm::host_kvm_boots_linux() {
        eprintln!(
            "SKIPPED (loudly): this host's KVM is not hardware-backed (/dev/kvm missing or \
             the kvm_pvm module is loaded), and a stock Linux guest does not boot under PVM. \
             This test runs by itself on bare metal or a VM with nested VT-x/AMD-V."
        );
        return;
    }
    let Some(dir) = kernel_dir() else {
        skip("guest kernel is not built (guest/kernel/build.sh failed)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    for image in ["vmlinux", "bzImage"] {
        let console = boot(&dir.join(image), &disk);
        assert!(
            console.contains("Linux version"),
            "{image}: no banner in:\n{console}"
        );
        assert!(
            console.contains("[vda]"),
            "{image}: virtio-blk disk not seen:\n{console}"
        );
    }
}
