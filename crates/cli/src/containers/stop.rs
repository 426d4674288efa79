//! `stop` and `kill`: signals through the container's supervisor.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_runtime::container::{control_request, Containers, ControlRequest, Status};

use skiff_engine::run_config;

use super::*;

pub(super) fn control(c: &Containers, id: &str, req: ControlRequest) -> Result<()> {
    let st = c.state(id)?;
    let running = st.is_running();
    let Some(sock) = st.control_socket.filter(|_| running) else {
        bail!("container {} is not running", &id[..12]);
    };
    {
        let lock = c.lock(id)?;
        let mut st = lock.state()?;
        st.stop_requested = true;
        lock.save(&st)?;
    }
    control_request(&sock, req)?;
    Ok(())
}

pub(super) fn stop(
    c: &Containers,
    id: &str,
    time: Option<u64>,
    signal: Option<&str>,
) -> Result<()> {
    let spec = c.spec(id)?;
    if !c.state(id)?.is_running() {
        return Ok(()); // as Docker: stopping a stopped container is fine
    }
    let grace = time.unwrap_or(spec.stop_timeout_s);
    let signal = match signal {
        Some(s) => run_config::parse_signal(s)?,
        None => spec.stop_signal,
    };
    control(
        c,
        id,
        ControlRequest::Stop {
            signal,
            grace_ms: grace.saturating_mul(1000),
        },
    )?;
    let limit = Duration::from_secs(grace.saturating_add(30));
    if wait_exited(c, id, Some(limit)).is_err() {
        kill_supervisor(c, id)?;
    }
    Ok(())
}

pub(super) fn kill(c: &Containers, id: &str, sig: i32) -> Result<()> {
    control(c, id, ControlRequest::Signal(sig))
}

/// Last resort for a supervisor that does not answer: its VM dies with it.
pub(super) fn kill_supervisor(c: &Containers, id: &str) -> Result<()> {
    let st = c.state(id)?;
    if let (Some(pid), true) = (st.pid, st.status != Status::Exited) {
        let pid = i32::try_from(pid).context("pid")?;
        // SAFETY: plain kill(2) of the recorded supervisor.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_exited(c, id, Some(Duration::from_secs(10)))?;
    }
    Ok(())
}
