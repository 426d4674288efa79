//! `stop` and `kill`: the flags resolved against the container's own stop signal and
//! timeout; the signalling is the engine's.

use anyhow::Result;
use skiff_engine::{lifecycle, run_config};
use skiff_runtime::container::Containers;

pub(super) fn stop(
    c: &Containers,
    id: &str,
    time: Option<u64>,
    signal: Option<&str>,
) -> Result<()> {
    let spec = c.spec(id)?;
    let grace = time.unwrap_or(spec.stop_timeout_s);
    let signal = match signal {
        Some(s) => run_config::parse_signal(s)?,
        None => spec.stop_signal,
    };
    Ok(lifecycle::stop(c, id, signal, grace)?)
}

pub(super) fn kill(c: &Containers, id: &str, sig: i32) -> Result<()> {
    Ok(lifecycle::kill(c, id, sig)?)
}
