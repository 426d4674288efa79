//! Shared directories as virtio-fs: one `virtiofsd` process per share, the same on
//! both backends (QEMU's `vhost-user-fs-device`, skiff-vmm's `--fs`). The daemon
//! belongs to the VM's process group: it is killed with the VM, dies with its parent
//! when asked to, and exits by itself when the front end disconnects.
//!
//! Options: running as root, virtiofsd switches to the guest caller's uid/gid for each
//! request, so owners and modes are kept as the guest sets them (as 9p passthrough
//! did); its namespace sandbox confines it to the shared directory, `--readonly`
//! refuses writes on the host side whatever the guest does, and `--cache=auto` gives
//! close-to-open coherence with host-side changes while still letting the guest mmap
//! and execute files (a bundle's root filesystem).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::daemons::ProcessGroup;
use super::Share;
use crate::tools::find_program;
use crate::{Error, Result};

/// How long a virtiofsd may take to create its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

/// Finds virtiofsd (`$SKIFF_VIRTIOFSD`, beside skiff, skiff's tool cache, PATH).
pub fn find_virtiofsd() -> Result<PathBuf> {
    find_program("virtiofsd", "SKIFF_VIRTIOFSD").map_err(|looked| Error::MissingTool {
        tool: "virtiofsd",
        looked,
        hint: "build it with scripts/setup.sh (cargo install --locked --root ~/.cache/skiff/tools virtiofsd@1.14.0)",
    })
}

/// The command line of the daemon serving `share` on `socket`.
pub fn command(bin: &Path, share: &Share, socket: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--socket-path")
        .arg(socket)
        .arg("--shared-dir")
        .arg(&share.host_path)
        .args(["--cache", "auto", "--log-level", "warn"]);
    // The namespace sandbox needs root (or user namespaces); without it the daemon still
    // resolves every path inside the shared directory.
    let root = skiff_sys::ids::is_root();
    cmd.args(["--sandbox", if root { "namespace" } else { "none" }]);
    if share.readonly {
        cmd.arg("--readonly");
    }
    cmd
}

/// Starts one virtiofsd per share in `dir`, waits for their sockets and returns them
/// (index = share index).
pub fn start_daemons(
    processes: &mut ProcessGroup,
    shares: &[Share],
    dir: &Path,
    die_with_parent: bool,
) -> Result<Vec<PathBuf>> {
    if shares.is_empty() {
        return Ok(Vec::new());
    }
    let bin = find_virtiofsd()?;
    let mut sockets = Vec::with_capacity(shares.len());
    for (i, share) in shares.iter().enumerate() {
        let socket = dir.join(format!("virtiofs{i}.sock"));
        processes.spawn(
            &format!("virtiofsd for {}", share.host_path.display()),
            command(&bin, share, &socket),
            &dir.join(format!("virtiofsd{i}.log")),
            die_with_parent,
        )?;
        processes.wait_for_socket(&socket, SOCKET_TIMEOUT)?;
        sockets.push(socket);
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn readonly_shares_are_readonly_on_the_host_side() {
        let share = |readonly| Share {
            host_path: "/srv/data".into(),
            tag: "t".into(),
            readonly,
        };
        let ro = args(&command(
            Path::new("virtiofsd"),
            &share(true),
            Path::new("/s"),
        ));
        assert!(ro.contains(&"--readonly".to_owned()), "{ro:?}");
        let rw = args(&command(
            Path::new("virtiofsd"),
            &share(false),
            Path::new("/s"),
        ));
        assert!(!rw.contains(&"--readonly".to_owned()), "{rw:?}");
        assert!(rw.windows(2).any(|w| w == ["--shared-dir", "/srv/data"]));
        assert!(rw.windows(2).any(|w| w == ["--socket-path", "/s"]));
    }
}
