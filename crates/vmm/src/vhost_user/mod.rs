//! The block and vsock device models served over vhost-user, so that QEMU drives them.

use std::path::Path;

use crate::vmm_config::DiskConfig;

/// Serves vsock over vhost-user on `socket`.
pub fn serve_vsock(_guest_cid: u64, _socket: &Path, _uds_path: &Path) -> anyhow::Result<()> {
    anyhow::bail!("vhost-user-vsock is not implemented yet")
}

/// Serves a disk over vhost-user on `socket`.
pub fn serve_block(_socket: &Path, _disk: DiskConfig) -> anyhow::Result<()> {
    anyhow::bail!("vhost-user-blk is not implemented yet")
}
