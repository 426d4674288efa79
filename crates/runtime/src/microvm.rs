//! One booted microVM: its host processes, its scratch directory, and the agent that
//! dialled in. Dropping a [`MicroVm`] kills whatever is left of it and removes the
//! scratch directory, on every path including errors.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_proto::{AGENT_PORT, READY_PORT};

use crate::agent::AgentConn;
use crate::artifacts::GuestArtifacts;
use crate::hypervisor::{self, Disk, LaunchSpec, NetDevice, Selection, Share, VmProcess};
use crate::{Error, Result};

/// Lines of console output kept in boot errors.
const CONSOLE_TAIL_LINES: usize = 20;

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub artifacts: GuestArtifacts,
    pub selection: Selection,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub disks: Vec<Disk>,
    /// Host directories shared with the guest (`-v`).
    pub shares: Vec<Share>,
    /// virtio-net devices on host TAPs.
    pub nets: Vec<NetDevice>,
    /// A virtio-balloon device (QEMU backend).
    pub balloon: bool,
    pub cmdline_extra: String,
    /// How long the agent may take to dial in after the VMM starts.
    pub boot_timeout: Duration,
    pub die_with_parent: bool,
    /// Parent of the VM's scratch directory (default: the system temp dir).
    pub scratch_parent: Option<PathBuf>,
}

impl VmConfig {
    pub fn new(artifacts: GuestArtifacts, selection: Selection) -> Self {
        Self {
            artifacts,
            selection,
            memory_mib: 256,
            vcpus: 1,
            disks: Vec::new(),
            shares: Vec::new(),
            nets: Vec::new(),
            balloon: false,
            cmdline_extra: String::new(),
            boot_timeout: Duration::from_secs(30),
            die_with_parent: false,
            scratch_parent: None,
        }
    }
}

/// Where boot time went, measured on the host (plus the guest's own clock).
#[derive(Debug, Clone, Copy, Default)]
pub struct BootTimings {
    /// Scratch directory, sockets and backend processes, up to the VMM's spawn.
    pub prepare: Duration,
    /// VMM spawn until the agent's hello.
    pub launch_to_ready: Duration,
    /// Guest time since kernel start when the agent said hello.
    pub guest_uptime_at_ready: Option<Duration>,
}

pub struct MicroVm {
    process: Box<dyn VmProcess>,
    work_dir: tempfile::TempDir,
    vsock_uds: PathBuf,
    console_log: PathBuf,
    pub timings: BootTimings,
}

impl MicroVm {
    /// Starts the VM and waits for its agent. On any error every host process of the VM
    /// is killed and the scratch directory removed before returning.
    pub fn boot(config: &VmConfig) -> Result<(Self, AgentConn)> {
        let t0 = Instant::now();
        let parent = config
            .scratch_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let work_dir = tempfile::Builder::new()
            .prefix("skiff-vm-")
            .tempdir_in(parent)
            .map_err(Error::io("create the VM's scratch directory"))?;
        let vsock_uds = work_dir.path().join("vsock.sock");
        let console_log = work_dir.path().join("console.log");
        let ready_path = PathBuf::from(format!("{}_{READY_PORT}", vsock_uds.display()));
        let ready = UnixListener::bind(&ready_path)
            .map_err(Error::io(format!("listen on {}", ready_path.display())))?;
        ready
            .set_nonblocking(true)
            .map_err(Error::io("agent listener"))?;

        let spec = LaunchSpec {
            artifacts: &config.artifacts,
            memory_mib: config.memory_mib,
            vcpus: config.vcpus,
            disks: &config.disks,
            shares: &config.shares,
            nets: &config.nets,
            balloon: config.balloon,
            cmdline_extra: &config.cmdline_extra,
            vsock_uds: &vsock_uds,
            console_log: &console_log,
            work_dir: work_dir.path(),
            die_with_parent: config.die_with_parent,
        };
        let t_launch = Instant::now();
        let process = hypervisor::launch(&config.selection, &spec)?;
        let mut vm = Self {
            process,
            work_dir,
            vsock_uds,
            console_log,
            timings: BootTimings {
                prepare: t_launch - t0,
                ..BootTimings::default()
            },
        };
        let stream = vm.await_agent(&ready, t_launch + config.boot_timeout, config.boot_timeout)?;
        let conn = AgentConn::handshake(stream, Duration::from_secs(10))?;
        vm.timings.launch_to_ready = t_launch.elapsed();
        vm.timings.guest_uptime_at_ready = conn.guest_uptime_ms.map(Duration::from_millis);
        tracing::debug!(timings = ?vm.timings, pid = vm.pid(), "agent ready");
        Ok((vm, conn))
    }

    fn await_agent(
        &mut self,
        listener: &UnixListener,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<std::os::unix::net::UnixStream> {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(Error::io("agent socket"))?;
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::io("accept the agent's connection")(e)),
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                self.process.kill();
                return Err(Error::VmExitedEarly {
                    status,
                    console_tail: self.console_tail(CONSOLE_TAIL_LINES),
                });
            }
            if Instant::now() >= deadline {
                self.process.kill();
                return Err(Error::BootTimeout {
                    after: timeout,
                    console_tail: self.console_tail(CONSOLE_TAIL_LINES),
                });
            }
            poll_readable(listener.as_raw_fd(), Duration::from_millis(5));
        }
    }

    /// The host process that is the VM (QEMU or skiff-vmm).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The vsock device's UNIX socket (for `CONNECT <port>`).
    pub fn vsock_uds(&self) -> &Path {
        &self.vsock_uds
    }

    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// A further connection to the agent (e.g. for an `exec` from another client).
    pub fn connect(&self) -> Result<AgentConn> {
        AgentConn::connect(&self.vsock_uds, AGENT_PORT, Duration::from_secs(10))
    }

    /// Waits up to `timeout` for the VM to power off; `Some(status)` if it did.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .process
                .try_wait()
                .map_err(Error::io("wait for the VM"))?
            {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills the VM's host processes at once.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// The last `n` lines the guest printed on its serial console.
    pub fn console_tail(&self, n: usize) -> Vec<String> {
        console_tail(&self.console_log, n)
    }
}

impl Drop for MicroVm {
    fn drop(&mut self) {
        self.process.kill();
    }
}

fn console_tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

fn poll_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: pfd is a valid pollfd array of length 1.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_tail_keeps_the_last_non_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, "a\r\n\nb\nc\n").unwrap();
        assert_eq!(console_tail(&p, 2), ["b", "c"]);
        assert_eq!(console_tail(&p, 10), ["a", "b", "c"]);
        assert!(console_tail(&dir.path().join("none"), 3).is_empty());
    }
}
