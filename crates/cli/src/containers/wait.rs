//! `wait`: until the container has exited; its status.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use skiff_runtime::container::{ContainerState, Containers, Status};

/// Polls until the container has exited (`None` = forever).
pub(super) fn wait_exited(
    c: &Containers,
    id: &str,
    timeout: Option<Duration>,
) -> Result<ContainerState> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let st = c.state(id)?;
        if st.status == Status::Exited || (st.status == Status::Created && st.pid.is_none()) {
            return Ok(st);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!("container {} did not stop in time", &id[..12]);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
