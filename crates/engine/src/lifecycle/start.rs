//! `start`: the container's supervisor as a detached process of its own session (it
//! outlives the command or daemon that started it), waited on until the container's
//! process runs, or until it is clear why it does not.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use skiff_runtime::container::{read_log, ContainerState, Containers, LogStream, Status};

use super::wait_exited;
use crate::{Error, Result, StartFailure};

/// How long a supervisor may take to boot the VM and start the process.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a new supervisor may take to claim the container's record.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process that was started but could not run takes to be recorded as exited.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// The supervisor's command line: `exe --root ROOT --log-level LEVEL supervise ID`.
pub struct SupervisorCommand<'a> {
    pub exe: &'a Path,
    pub root: &'a Path,
    pub log_level: &'a str,
}

/// A supervisor that has claimed its container and is starting it.
pub struct Starting<'a> {
    containers: &'a Containers,
    id: String,
    child: Child,
}

/// Spawns the supervisor of a created or exited container and waits until it has
/// claimed the record, so that a second start sees the container busy. Callers that
/// admit starts (quotas) hold their lock across this call only.
pub fn spawn_supervisor<'a>(
    containers: &'a Containers,
    id: &str,
    cmd: &SupervisorCommand<'_>,
) -> Result<Starting<'a>> {
    let st = containers.state(id)?;
    if busy(&st) {
        return Err(Error::AlreadyRunning { id: id.to_owned() });
    }
    let child = containers.spawn_supervisor(cmd.exe, cmd.root, cmd.log_level, id)?;
    let deadline = Instant::now() + CLAIM_TIMEOUT;
    while containers.state(id)?.pid != Some(child.id()) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    Ok(Starting {
        containers,
        id: id.to_owned(),
        child,
    })
}

/// [`spawn_supervisor`], then [`Starting::wait_running`]; the supervisor is left to
/// init once the caller exits.
pub fn start(containers: &Containers, id: &str, cmd: &SupervisorCommand<'_>) -> Result<()> {
    let mut starting = spawn_supervisor(containers, id, cmd)?;
    let result = starting.wait_running();
    // Reap it if it is already done.
    let _ = starting.child.try_wait();
    result
}

impl Starting<'_> {
    /// Waits until the container's process runs; a process that ran and ended is
    /// started too. Errors say why it did not start.
    pub fn wait_running(&mut self) -> Result<()> {
        let (c, id) = (self.containers, self.id.as_str());
        let child_pid = self.child.id();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let st = c.state(id)?;
            // Until the supervisor claims the record, the state is the previous run's.
            let claimed = st.pid == Some(child_pid);
            if claimed && st.is_running() && st.guest_pid.is_some() {
                return Ok(());
            }
            if claimed
                && (st.status == Status::Exited || (st.is_running() && st.started_ms.is_some()))
            {
                // Exited, or running without a guest process: the command could not
                // run, or ran and ended.
                let st = match st.status {
                    Status::Exited => st,
                    _ => wait_exited(c, id, Some(EXIT_TIMEOUT)).unwrap_or(st),
                };
                return self.outcome(&st);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let st = c.state(id)?;
                if st.status == Status::Exited && st.pid == Some(child_pid) {
                    return self.outcome(&st);
                }
                return Err(Error::SupervisorExited {
                    id: id.to_owned(),
                    status,
                    log: c.dir_of(id).join("supervisor.log"),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    id: id.to_owned(),
                    what: "start",
                    secs: START_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The supervisor, for a caller that reaps its children itself.
    pub fn into_child(self) -> Child {
        self.child
    }

    fn outcome(&self, st: &ContainerState) -> Result<()> {
        match start_failure(self.containers, &self.id, st) {
            Some(failure) => Err(Error::StartFailed {
                id: self.id.clone(),
                failure,
            }),
            None => Ok(()),
        }
    }
}

/// Why an exited container did not really start; `None` when its command ran.
fn start_failure(c: &Containers, id: &str, st: &ContainerState) -> Option<StartFailure> {
    if st.status != Status::Exited {
        return None;
    }
    match (&st.error, st.exit_code) {
        (Some(e), _) => Some(StartFailure::Recorded(e.clone())),
        (None, Some(exit_code @ (126 | 127))) => {
            let (entries, _) = read_log(&c.log_path(id)).unwrap_or_default();
            let stderr = entries
                .iter()
                .filter(|e| e.stream == LogStream::Stderr)
                .map(|e| e.log.trim_end().to_owned())
                .collect::<Vec<_>>()
                .join("; ");
            Some(StartFailure::NotRunnable { exit_code, stderr })
        }
        _ => None,
    }
}

/// Running, or a supervisor is starting it.
pub(super) fn busy(st: &ContainerState) -> bool {
    st.is_running() || (st.status == Status::Created && st.pid.is_some())
}
