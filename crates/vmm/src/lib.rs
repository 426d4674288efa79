//! skiff's own KVM virtual machine monitor.
//!
//! One `skiff-vmm` process runs one microVM: guest RAM with an MMIO hole below 4 GiB, an
//! ELF vmlinux or bzImage loaded with linux-loader and entered in 64-bit mode (Linux
//! boot protocol: zero page, e820, command line, initramfs), an in-kernel irqchip and
//! PIT, 1..=32 vCPUs, a COM1 console, i8042 reset, a boot timer and virtio-mmio block,
//! net (TAP) and vsock devices (see `skiff-virtio`) wired with irqfds and ioeventfds,
//! and a seccomp filter per thread kind.
//!
//! # Command line
//!
//! ```text
//! skiff-vmm run --kernel PATH [--initramfs PATH] [--cmdline STR] [--memory-mib N]
//!               [--cpus N] [--disk PATH[,ro][,id=SERIAL]]...
//!               [--net tap=NAME[,mac=XX:XX:XX:XX:XX:XX]]... [--vsock UDS_PATH]
//!               [--fs tag=T,socket=VHOST_SOCK]... [--guest-cid N] [--console stdout|off|PATH] [--report-boot-time]
//!               [--no-seccomp] [--api-socket PATH]
//! skiff-vmm restore --snapshot DIR [--disk PATH]... [--vsock UDS_PATH] [--memory-mib N]
//!                   [--paused] [--api-socket PATH] [--console ...] [--report-boot-time]
//!                   [--no-seccomp]
//! skiff-vmm vhost-user-vsock --guest-cid N --socket VHOST_SOCK --uds-path VM_SOCK
//! skiff-vmm vhost-user-blk --socket VHOST_SOCK --disk PATH [--readonly] [--id SERIAL]
//! ```
//!
//! `--api-socket` serves the control API (see [`api`]): `pause` stops every vCPU at a
//! consistent point, `resume` lets them carry on, `status` says which, and
//! `snapshot DIR [resume|pause|exit]` writes guest memory, vCPU, VM and device state
//! to DIR (see [`snapshot`]). `restore` rebuilds that VM in a new process (guest
//! memory mapped copy-on-write from the snapshot, so several restores share its
//! pages) and lets it carry on; a corrupt or mismatched snapshot is one line on
//! stderr and exit status 125. Disks are re-opened by path (or the `--disk` paths, in
//! order): keep them as they were at the snapshot.
//!
//! `--fs` attaches virtio-fs served by a vhost-user backend such as `virtiofsd`
//! (see [`vhost_user::frontend`]); guest RAM is then a shared memfd.
//!
//! Devices appear in the order disks, nets, vsock, fs at `0xd0001000 + i*4K`, IRQ `5 + i`,
//! and are announced on the command line as `virtio_mmio.device=4K@ADDR:IRQ`; the
//! first disk is `/dev/vda`. Log verbosity: `SKIFF_VMM_LOG` (tracing env-filter,
//! default `warn`), logs go to stderr.
//!
//! # Exit status of `run`
//!
//! - guest reset (i8042, `reboot=k`) or power-off: the byte the guest last wrote to
//!   port 0x501 ([`devices::STATUS_PORT`]), or 0 if it wrote none;
//! - [`exit::EXIT_GUEST_CRASH`] (124): triple fault, KVM internal error, failed entry;
//! - [`exit::EXIT_VMM_ERROR`] (125): the VMM could not build or run the VM (bad
//!   flags, missing kernel, no /dev/kvm); one line on stderr says why;
//! - 2: command-line syntax error (clap).

pub mod api;
pub mod arch;
pub mod builder;
pub mod cli;
pub mod devices;
pub mod event_loop;
pub mod exit;
pub mod restore;
pub mod seccomp;
pub mod snapshot;
pub mod vhost_user;
pub mod vmm_config;
pub mod vstate;

/// Guest memory type used throughout the VMM.
pub type GuestMemoryMmap = skiff_virtio::GuestMemoryMmap;

/// Whether this host's KVM is hardware-backed (VT-x/AMD-V), i.e. boots stock Linux
/// guests: `/dev/kvm` exists and the PVM module (software virtualization that only
/// runs purpose-built guests) is not loaded.
pub fn host_kvm_boots_linux() -> bool {
    std::path::Path::new("/dev/kvm").exists()
        && !std::path::Path::new("/sys/module/kvm_pvm").exists()
}
