//! `stop` and `kill`: signals through the container's supervisor, and the last resort
//! for a supervisor that does not answer.

use std::time::Duration;

use skiff_runtime::container::{control_request, Containers, ControlRequest, Status};

use super::start::busy;
use super::wait_exited;
use crate::{Error, Result};

/// What a supervisor killed with SIGKILL has to record its container exited.
const KILLED_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond the grace period, what a supervisor may take to stop the VM.
const STOP_SLACK_S: u64 = 30;

/// The stop signal, `grace_s` seconds, then SIGKILL (the supervisor's job); a
/// supervisor that has not recorded the exit by grace + 30 s is killed, and its VM dies
/// with it. Stopping a stopped container is fine, as in Docker.
pub fn stop(containers: &Containers, id: &str, signal: i32, grace_s: u64) -> Result<()> {
    let st = containers.state(id)?;
    if !busy(&st) {
        return Ok(());
    }
    if st.is_running() {
        let req = ControlRequest::Stop {
            signal,
            grace_ms: grace_s.saturating_mul(1000),
        };
        // A supervisor that does not answer is killed below.
        if let Err(e) = request(containers, id, req) {
            tracing::warn!("stop {id}: {e}");
        }
    }
    let limit = Duration::from_secs(grace_s.saturating_add(STOP_SLACK_S));
    if wait_exited(containers, id, Some(limit)).is_err() {
        kill_supervisor(containers, id)?;
    }
    Ok(())
}

/// Sends `signal` to the container's main process.
pub fn kill(containers: &Containers, id: &str, signal: i32) -> Result<()> {
    if !containers.state(id)?.is_running() {
        return Err(Error::NotRunning { id: id.to_owned() });
    }
    request(containers, id, ControlRequest::Signal(signal))
}

/// Marks the stop as asked for (an exit it causes is not a crash) and sends `req` to
/// the supervisor's control socket.
fn request(containers: &Containers, id: &str, req: ControlRequest) -> Result<()> {
    let st = containers.state(id)?;
    let running = st.is_running();
    let Some(sock) = st.control_socket.filter(|_| running) else {
        return Err(Error::NotRunning { id: id.to_owned() });
    };
    {
        let lock = containers.lock(id)?;
        let mut st = lock.state()?;
        st.stop_requested = true;
        lock.save(&st)?;
    }
    control_request(&sock, req)?;
    Ok(())
}

/// Last resort for a supervisor that does not answer: its VM dies with it.
fn kill_supervisor(containers: &Containers, id: &str) -> Result<()> {
    let st = containers.state(id)?;
    if let (Some(pid), true) = (st.pid, st.status != Status::Exited) {
        if let Err(e) = skiff_sys::signals::send(pid, libc::SIGKILL) {
            tracing::warn!("kill the supervisor {pid} of {id}: {e}");
        }
        wait_exited(containers, id, Some(KILLED_TIMEOUT))?;
    }
    Ok(())
}
