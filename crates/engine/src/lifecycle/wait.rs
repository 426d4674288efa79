//! `wait`: until a container has exited.

use std::time::{Duration, Instant};

use skiff_runtime::container::{ContainerState, Containers, Status};

use crate::{Error, Result};

const POLL: Duration = Duration::from_millis(20);

/// Polls the record until the container has exited, or was never started
/// (`timeout: None` = forever); its last state.
pub fn wait_exited(
    containers: &Containers,
    id: &str,
    timeout: Option<Duration>,
) -> Result<ContainerState> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let st = containers.state(id)?;
        if st.status == Status::Exited || (st.status == Status::Created && st.pid.is_none()) {
            return Ok(st);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout {
                id: id.to_owned(),
                what: "stop",
                secs: timeout.map_or(0, |t| t.as_secs()),
            });
        }
        std::thread::sleep(POLL);
    }
}
