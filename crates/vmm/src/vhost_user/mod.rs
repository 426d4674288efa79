//! The project's block and vsock device models served over vhost-user, so QEMU (which
//! can run where this machine's KVM cannot boot Linux) drives them with a real Linux
//! virtio driver. The models are the same code `skiff-vmm run` uses; only the queue
//! plumbing differs (vrings handed over by the front end instead of virtio-mmio).
//!
//! Each `serve_*` call listens on the vhost-user socket, serves one front end and
//! returns when it disconnects. [`frontend`] is the other side: `skiff-vmm run`
//! driving a device another process serves (virtio-fs with `virtiofsd`).

mod block;
pub mod frontend;
mod vsock;

use std::path::Path;

pub use block::BlockBackend;
pub use vsock::VsockBackend;

use skiff_virtio::GuestMemoryMmap;
use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vhost_user_backend::{VhostUserDaemon, VringRwLock};
use vm_memory::GuestMemoryAtomic;

use crate::vmm_config::DiskConfig;

/// Guest memory shared by the front end.
pub type SharedMemory = GuestMemoryAtomic<GuestMemoryMmap>;
/// The vring type of our backends.
pub type Vring = VringRwLock<SharedMemory>;

/// The event the daemon uses to stop its vring worker threads once the front end
/// disconnects (without it, the daemon's drop would wait for them forever).
pub struct ExitEvent {
    consumer: vmm_sys_util::event::EventConsumer,
    notifier: vmm_sys_util::event::EventNotifier,
}

impl ExitEvent {
    /// A fresh non-blocking event.
    pub fn new() -> std::io::Result<Self> {
        let (consumer, notifier) = vmm_sys_util::event::new_event_consumer_and_notifier(
            vmm_sys_util::event::EventFlag::NONBLOCK,
        )?;
        Ok(Self { consumer, notifier })
    }

    /// Clones handed to the daemon.
    pub fn pair(
        &self,
    ) -> Option<(
        vmm_sys_util::event::EventConsumer,
        vmm_sys_util::event::EventNotifier,
    )> {
        Some((
            self.consumer.try_clone().ok()?,
            self.notifier.try_clone().ok()?,
        ))
    }
}

/// Largest queue a front end may configure.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// `VHOST_USER_F_PROTOCOL_FEATURES`, which every backend must offer.
pub fn protocol_feature_bit() -> u64 {
    VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// Serves vsock for guest `guest_cid` on vhost-user socket `socket`; host programs use
/// the UNIX socket `uds_path` (the flags and behaviour of `vhost-device-vsock`). With
/// `seccomp`, the whole process is confined first (see [`confine`]): the daemon's
/// `main` asks for it, a test serving in one of its threads does not.
pub fn serve_vsock(
    guest_cid: u64,
    socket: &Path,
    uds_path: &Path,
    seccomp: bool,
) -> anyhow::Result<()> {
    if guest_cid < 3 || guest_cid > u64::from(u32::MAX) {
        anyhow::bail!("--guest-cid must be 3..=4294967295");
    }
    let backend = VsockBackend::new(guest_cid, uds_path)?;
    let epoll_fd = backend.epoll_fd();
    let backend = std::sync::Arc::new(std::sync::RwLock::new(backend));
    let mut daemon = VhostUserDaemon::new(
        "skiff-vhost-user-vsock".into(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| anyhow::anyhow!("vhost-user daemon: {e:?}"))?;
    for handler in daemon.get_epoll_handlers() {
        handler
            .register_listener(
                epoll_fd,
                vmm_sys_util::epoll::EventSet::IN,
                vsock::BACKEND_EVENT,
            )
            .map_err(|e| anyhow::anyhow!("registering vsock sockets: {e}"))?;
    }
    if seccomp {
        confine()?;
    }
    daemon
        .serve(socket)
        .map_err(|e| anyhow::anyhow!("vhost-user-vsock on {}: {e:?}", socket.display()))
}

/// Serves `disk` as virtio-blk on vhost-user socket `socket` (`seccomp` as for
/// [`serve_vsock`]).
pub fn serve_block(socket: &Path, disk: DiskConfig, seccomp: bool) -> anyhow::Result<()> {
    let backend = std::sync::Arc::new(std::sync::RwLock::new(BlockBackend::new(&disk)?));
    let mut daemon = VhostUserDaemon::new(
        "skiff-vhost-user-blk".into(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| anyhow::anyhow!("vhost-user daemon: {e:?}"))?;
    if seccomp {
        confine()?;
    }
    daemon
        .serve(socket)
        .map_err(|e| anyhow::anyhow!("vhost-user-blk on {}: {e:?}", socket.display()))
}

/// Once the daemon's own files are open: from here on it parses what the guest's
/// driver puts in the rings, so it runs under the vhost-user filter (no file opens,
/// no programs, no processes), a refused call reported on stderr.
fn confine() -> anyhow::Result<()> {
    crate::seccomp::install_violation_reporter()
        .map_err(|e| anyhow::anyhow!("install the seccomp violation reporter: {e}"))?;
    crate::seccomp::install_process_wide(crate::seccomp::ThreadKind::VhostUser)?;
    Ok(())
}
