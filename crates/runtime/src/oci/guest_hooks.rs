//! OCI hooks that run inside the guest: createContainer (during `create`, after the
//! host's createRuntime hooks) and startContainer (during `start`, before the
//! container's process). Each runs in the container's mount namespace, its path
//! resolved in the container, as a process of its own PID namespace (the container's
//! does not exist before its process starts), with the state JSON on stdin and killed
//! when its timeout passes; a failure fails the operation, as in runc.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::Hook;
use skiff_proto::{ExitStatus, ProcessSpec};

use crate::{AgentConn, Error, Event, Result, StartOutcome};

fn fail(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// Used when a hook names no timeout, as for the host's hooks.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Hooks use streams from here on the supervisor's connection (the container's own
/// process is stream 1).
const FIRST_STREAM: u32 = 1000;

/// The process that runs `hook`: its path, the rest of its args, its env only.
fn process_of(hook: &Hook) -> Result<ProcessSpec> {
    let path = hook.path().to_string_lossy().into_owned();
    if !path.starts_with('/') {
        return Err(fail(format!("hook path {path:?} must be absolute")));
    }
    let mut args = vec![path];
    args.extend(hook.args().iter().flatten().skip(1).cloned());
    let mut p = ProcessSpec::new(args);
    p.env = hook.env().clone().unwrap_or_default();
    p.stdin = true;
    Ok(p)
}

fn timeout_of(hook: &Hook) -> Duration {
    hook.timeout()
        .filter(|t| *t > 0)
        .map_or(DEFAULT_TIMEOUT, |t| Duration::from_secs(t.unsigned_abs()))
}

/// Runs `hooks` of `kind` in order through the container's agent; the first failure is
/// the error.
pub fn run_all(
    agent: &mut AgentConn,
    kind: &str,
    hooks: &[Hook],
    state: &serde_json::Value,
) -> Result<()> {
    for (i, hook) in hooks.iter().enumerate() {
        let stream = FIRST_STREAM + u32::try_from(i).unwrap_or(u32::MAX - FIRST_STREAM);
        let what = format!("{kind} hook {}", hook.path().display());
        run_one(agent, stream, hook, state).map_err(|e| fail(format!("{what}: {e}")))?;
    }
    Ok(())
}

fn run_one(
    agent: &mut AgentConn,
    stream: u32,
    hook: &Hook,
    state: &serde_json::Value,
) -> Result<()> {
    let p = process_of(hook)?;
    let timeout = timeout_of(hook);
    let mut failed_start = None;
    match agent.start(stream, false, &p)? {
        StartOutcome::Running { .. } => {
            let sender = agent.sender();
            sender.stdin(stream, state.to_string().into_bytes())?;
            sender.stdin(stream, Vec::new())?;
        }
        StartOutcome::Failed { status } => failed_start = Some(status),
    }
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    if failed_start.is_none() {
        let (done, timed_out, sender) = (done.clone(), timed_out.clone(), agent.sender());
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            if !done.load(Ordering::SeqCst) {
                timed_out.store(true, Ordering::SeqCst);
                let _ = sender.signal(stream, libc::SIGKILL);
            }
        });
    }
    let mut stderr = Vec::new();
    let status = loop {
        match agent.next_event()? {
            Some(Event::Exited { stream: s, status }) if s == stream => break status,
            Some(Event::Stderr { stream: s, bytes }) if s == stream => {
                if stderr.len() < 4096 {
                    stderr.extend_from_slice(&bytes);
                }
            }
            Some(Event::Stdout { stream: s, bytes }) if s == stream => {
                tracing::info!(output = %String::from_utf8_lossy(&bytes), "hook stdout");
            }
            Some(Event::Error { message, .. }) => return Err(fail(message)),
            Some(Event::PoweringOff) | None => {
                return Err(fail("the VM stopped while the hook ran"))
            }
            Some(_) => {}
        }
    };
    done.store(true, Ordering::SeqCst);
    if timed_out.load(Ordering::SeqCst) {
        return Err(fail(format!("timed out after {timeout:?}")));
    }
    let why = String::from_utf8_lossy(&stderr);
    let why = why.trim();
    match status {
        ExitStatus::Exited(0) => Ok(()),
        ExitStatus::Exited(c) if why.is_empty() => Err(fail(format!("failed: exit status {c}"))),
        ExitStatus::Exited(c) => Err(fail(format!("failed: exit status {c}: {why}"))),
        ExitStatus::Signaled(s) => Err(fail(format!("failed: killed by signal {s}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hooks_become_processes_with_their_path_args_and_env() {
        let p = process_of(&hook(
            r#"{"path":"/bin/sh","args":["sh","-c","cat > /x"],"env":["A=1"],"timeout":3}"#,
        ))
        .unwrap();
        assert_eq!(p.args, ["/bin/sh", "-c", "cat > /x"]);
        assert_eq!(p.env, ["A=1"]);
        assert!(p.stdin);
        assert!(process_of(&hook(r#"{"path":"relative"}"#)).is_err());
        assert_eq!(
            timeout_of(&hook(r#"{"path":"/x","timeout":3}"#)),
            Duration::from_secs(3)
        );
        assert_eq!(timeout_of(&hook(r#"{"path":"/x"}"#)), DEFAULT_TIMEOUT);
    }
}
