//! `skiff info`: which backend, why, and where the guest comes from.

use anyhow::Result;
use serde::Serialize;
use skiff_runtime::vm::hypervisor::{self, KvmState};
use skiff_runtime::GuestArtifacts;

use crate::GlobalOpts;

#[derive(clap::Args)]
pub struct InfoArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    hypervisor: Option<String>,
    accel: Option<String>,
    reason: String,
    kvm: String,
    kernel: Option<String>,
    initramfs: Option<String>,
    guest_error: Option<String>,
    /// What confines every host process of a VM today.
    jail: &'static str,
}

/// Kept in step with `skiff_runtime::vm::hypervisor` (where VM processes are spawned);
/// `skiff inspect` shows each running process's own uid, no_new_privs and seccomp mode.
const JAIL: &str = "no_new_privs and no core dumps for every VM host process; QEMU under \
its seccomp -sandbox; skiff-vmm run/restore and its vhost-user device daemons under \
seccomp; processes run as the caller (no per-VM uid, namespaces or pivot_root yet; see \
docs/security.md)";

pub fn run(args: &InfoArgs, global: &GlobalOpts) -> Result<u8> {
    let (hv, accel, reason) = match hypervisor::select(global.hypervisor) {
        Ok(s) => (
            Some(s.kind.to_string()),
            Some(format!("{:?}", s.accel).to_lowercase()),
            s.reason,
        ),
        Err(e) => (None, None, e.to_string()),
    };
    let kvm = match hypervisor::kvm_state() {
        KvmState::Hardware => "hardware".to_owned(),
        KvmState::Pvm => "pvm (software; stock Linux guests do not boot)".to_owned(),
        KvmState::Unavailable(why) => format!("unavailable: {why}"),
    };
    let (kernel, initramfs, guest_error) =
        match GuestArtifacts::locate(global.kernel.as_deref(), global.initramfs.as_deref()) {
            Ok(a) => (
                Some(a.kernel.display().to_string()),
                Some(a.initramfs.display().to_string()),
                None,
            ),
            Err(e) => (None, None, Some(e.to_string())),
        };
    let info = Info {
        version: env!("CARGO_PKG_VERSION"),
        hypervisor: hv,
        accel,
        reason,
        kvm,
        kernel,
        initramfs,
        guest_error,
        jail: JAIL,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(0);
    }
    println!("skiff {}", info.version);
    println!(
        "Hypervisor: {}",
        match (&info.hypervisor, &info.accel) {
            (Some(h), Some(a)) => format!("{h} ({a})"),
            _ => "none available".into(),
        }
    );
    println!("  why: {}", info.reason);
    println!("KVM: {}", info.kvm);
    println!("Jail: {}", info.jail);
    match (&info.kernel, &info.initramfs, &info.guest_error) {
        (Some(k), Some(i), _) => println!("Guest kernel: {k}\nGuest initramfs: {i}"),
        (_, _, Some(e)) => println!("Guest: {e}"),
        _ => {}
    }
    Ok(0)
}
