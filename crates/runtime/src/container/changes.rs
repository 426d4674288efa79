//! A stopped container's writable-layer changes, as its own guest produces them: the
//! container's VM boots with its disks (no network, no shares), the agent assembles the
//! rootfs and streams the overlay upper directory as a layer tar. The host never mounts
//! the guest-written filesystem; the caller must treat the stream as hostile (it is the
//! guest's: `skiff_image::commit` checks every entry).

use std::io::{self, Read};
use std::time::Duration;

use skiff_proto::{ContainerConfig, ExitStatus, Message};

use super::records::{ContainerSpec, Containers};
use super::supervisor::disks_vm_config;
use crate::vm::hypervisor::Disk;
use crate::{AgentConn, Error, Event, MicroVm, Result};

/// The stream number of the export on its VM's fresh connection.
const EXPORT_STREAM: u32 = 1;
/// How long the VM may take to power off after the export.
const POWER_OFF_WAIT: Duration = Duration::from_secs(30);

/// The layer tar, read as it arrives; the VM lives until this is dropped or finished.
pub struct ChangesStream {
    vm: MicroVm,
    agent: AgentConn,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Boots `spec`'s VM and starts the export. The caller holds the container's lock and
/// has checked that the container is not running (both VMs would write its disk).
pub fn export_changes(containers: &Containers, spec: &ContainerSpec) -> Result<ChangesStream> {
    if spec.boot.snapshot.is_some() {
        return Err(Error::Config(
            "a container started from a snapshot keeps its writable layer in memory; \
             there is nothing to commit once it stopped"
                .into(),
        ));
    }
    let config = disks_vm_config(containers, spec)?;
    let (vm, mut agent) = MicroVm::boot(&config)?;
    agent.create_container(&ContainerConfig {
        id: spec.id.clone(),
        layers: Disk::layer_serials(spec.layers.len()),
        writable: Some(Disk::WRITABLE_SERIAL.into()),
        ..ContainerConfig::default()
    })?;
    agent.sender().control(Message::ExportChanges {
        stream: EXPORT_STREAM,
    })?;
    Ok(ChangesStream {
        vm,
        agent,
        buf: Vec::new(),
        pos: 0,
        done: false,
    })
}

impl ChangesStream {
    /// Powers the VM off cleanly (the guest unmounts the writable disk).
    pub fn finish(mut self) -> Result<()> {
        self.agent.sender().stop(libc::SIGKILL, Duration::ZERO)?;
        if self.vm.wait(POWER_OFF_WAIT)?.is_none() {
            tracing::warn!("the export VM did not power off; killing it");
        }
        Ok(())
    }

    fn fill(&mut self) -> Result<()> {
        while self.pos == self.buf.len() && !self.done {
            match self.agent.next_event()? {
                Some(Event::Stdout { stream, bytes }) if stream == EXPORT_STREAM => {
                    self.buf = bytes;
                    self.pos = 0;
                }
                Some(Event::Exited {
                    stream,
                    status: ExitStatus::Exited(0),
                }) if stream == EXPORT_STREAM => self.done = true,
                Some(Event::Error { message, .. }) => return Err(Error::Agent(message)),
                Some(Event::Exited { status, .. }) => {
                    return Err(Error::Agent(format!(
                        "the export ended with status {}",
                        status.code()
                    )))
                }
                Some(other) => {
                    return Err(Error::Protocol(format!(
                        "unexpected event during the export: {other:?}"
                    )))
                }
                None => {
                    return Err(Error::Protocol(
                        "the agent hung up in the middle of the export".into(),
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Read for ChangesStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.fill().map_err(io::Error::other)?;
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
