//! What every container supervisor does with its microVM, written once: boot it (or
//! take one restored from a snapshot), watch its device daemons, create the container,
//! start the main process, relay its output until the VM powers off, and turn the end
//! into an exit code. skiff's [`Supervisor`](super::Supervisor) and skiff-runtime's OCI
//! supervisor are adapters around it: they differ in where the container comes from
//! and where its state and output are recorded, not in how its VM is run.

use std::path::PathBuf;
use std::time::Duration;

use skiff_proto::{ContainerConfig, ExitStatus, ProcessSpec};

use super::helper_watch::HelperWatch;
use crate::vm::relay::{self, Output, Relayed, Until};
use crate::{AgentConn, AgentSender, MicroVm, Result, StartOutcome, VmConfig};

/// The stream number of the container's main process on the main connection.
pub const MAIN_STREAM: u32 = 1;

/// How long a VM whose container ended may take to power off before it is killed.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the console quoted when a VM ended without an exit status.
const CONSOLE_TAIL_LINES: usize = 5;

/// A container's VM with its agent connection, owned by the supervisor.
pub struct Session {
    /// Dropped first: a VM being torn down is no device daemon's victim.
    watch: HelperWatch,
    agent: AgentConn,
    vm: MicroVm,
}

/// How a container ended, as its supervisor records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The main process's exit code, or 137 when the VM ended without reporting one.
    pub code: i32,
    /// Why there is no exit status, when there is none.
    pub error: Option<String>,
}

impl Session {
    /// Boots `config` and creates the container in it.
    pub fn boot(config: &VmConfig, container: &ContainerConfig) -> Result<Self> {
        let (vm, agent) = MicroVm::boot(config)?;
        Self::create(vm, agent, container)
    }

    /// Creates the container in a VM that is already up (restored from a snapshot).
    /// A device daemon dying under the VM would hang the guest: the VM is stopped
    /// instead, and [`Session::finish`] says why.
    pub fn create(vm: MicroVm, agent: AgentConn, container: &ContainerConfig) -> Result<Self> {
        super::trace::mark_ago("vmm_spawn", vm.timings.launch_to_ready);
        super::trace::mark("agent_ready");
        let watch = HelperWatch::start(vm.helpers(), vm.pid());
        let mut session = Self { watch, agent, vm };
        session.agent.create_container(container)?;
        Ok(session)
    }

    pub fn vm(&self) -> &MicroVm {
        &self.vm
    }

    pub fn agent(&mut self) -> &mut AgentConn {
        &mut self.agent
    }

    /// For stdin, signals, window sizes and stop requests of the main process.
    pub fn sender(&self) -> AgentSender {
        self.agent.sender()
    }

    /// Where the supervisor serves its control requests (in the VM's scratch directory).
    pub fn control_socket(&self) -> PathBuf {
        self.vm.work_dir().join("ctl.sock")
    }

    /// Starts the main process; `Some(status)` when it could not be executed.
    pub fn start(&mut self, process: &ProcessSpec) -> Result<(Option<i32>, Option<ExitStatus>)> {
        Ok(match self.agent.start(MAIN_STREAM, true, process)? {
            StartOutcome::Running { pid } => (Some(pid), None),
            StartOutcome::Failed { status } => (None, Some(status)),
        })
    }

    /// Relays the main process's output to `out` until the VM powers off.
    pub fn relay(&mut self, out: &mut dyn Output) -> Relayed {
        relay::relay(&mut self.agent, MAIN_STREAM, Until::PowerOff, out)
    }

    /// Kills the VM now (a container ended before it started).
    pub fn kill(&mut self) {
        self.vm.kill();
    }

    /// `Some(status)` once the VM has exited, without waiting.
    pub fn vm_exited(&mut self) -> Option<String> {
        self.vm.wait(Duration::ZERO).ok().flatten()
    }

    /// Hangs up, lets the VM power off (killed after 10 s) and says how the container
    /// ended: `status` (the relayed one, or the start failure's), else 137 with why.
    pub fn finish(mut self, status: Option<ExitStatus>, agent_error: Option<String>) -> Exit {
        self.watch.stop();
        self.agent.sender().hang_up();
        let vm_status = match self.vm.wait(POWER_OFF_TIMEOUT) {
            Ok(Some(s)) => Some(s),
            _ => {
                tracing::warn!("the VM did not power off in time; killing it");
                self.vm.kill();
                None
            }
        };
        super::trace::mark("vm_gone");
        if let Some(s) = status {
            return Exit {
                code: s.code(),
                error: None,
            };
        }
        let why = self.watch.failure().or(agent_error).unwrap_or_else(|| {
            format!(
                "the microVM stopped ({}) without reporting the exit status",
                vm_status.as_deref().unwrap_or("killed")
            )
        });
        let tail = self.vm.console_tail(CONSOLE_TAIL_LINES).join(" | ");
        Exit {
            code: 137,
            error: Some(if tail.is_empty() {
                why
            } else {
                format!("{why}; console: {tail}")
            }),
        }
    }
}
