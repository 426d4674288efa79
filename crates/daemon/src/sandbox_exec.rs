//! `POST /v1/sandboxes/{id}/exec`: another process in a running sandbox, started
//! through the sandbox's agent, its output relayed as NDJSON lines until it exits.
//! Everything here blocks (the agent connection): handlers call it on tokio's
//! blocking pool.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skiff_engine::run_config;
use skiff_runtime::container::MAIN_STREAM;
use skiff_runtime::{AgentConn, Event, StartOutcome};

use crate::error::ApiError;
use crate::requests::check_process_input;
use crate::sandboxes;
use crate::state::Daemon;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Kill the process after this many seconds.
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// One NDJSON line of an exec's output stream.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ExecChunk {
    Output { stream: &'static str, data: String },
    Exit { exit_code: i32 },
    Error { error: serde_json::Value },
}

/// Connects to the sandbox's agent and starts the process; output then comes from
/// [`pump`]; returns the sandbox's ID too. Errors here are the request's (404, 409, 422).
pub fn start(
    d: &Daemon,
    tenant: &str,
    key: &str,
    req: &ExecRequest,
) -> Result<(String, AgentConn, Option<i32>), ApiError> {
    let spec = sandboxes::find(d, tenant, key)?;
    if req.cmd.is_empty() {
        return Err(ApiError::invalid("cmd must not be empty"));
    }
    check_process_input(&req.cmd, &req.env, req.workdir.as_deref())?;
    let st = sandboxes::state(d, &spec.id)?;
    let Some(uds) = st.vsock_uds.clone().filter(|_| st.is_running()) else {
        return Err(ApiError::conflict(
            "not_running",
            "the sandbox is not running",
        ));
    };
    let mut p = spec.process.clone();
    p.args = req.cmd.clone();
    p.env =
        run_config::merge_env(&p.env, &req.env).map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    if let Some(w) = &req.workdir {
        p.cwd = w.clone();
    }
    p.terminal = false;
    p.stdin = false;
    let mut agent = AgentConn::connect(&uds, skiff_proto::AGENT_PORT, Duration::from_secs(10))
        .map_err(|e| ApiError::conflict("not_running", format!("the sandbox's agent: {e}")))?;
    let outcome = agent
        .start(MAIN_STREAM, false, &p)
        .map_err(|e| ApiError::internal(format!("start the process: {e}")))?;
    d.events
        .publish(tenant, "exec.started", Some(&spec.id), None);
    Ok((
        spec.id,
        agent,
        match outcome {
            StartOutcome::Failed { status } => Some(status.code()),
            StartOutcome::Running { .. } => None,
        },
    ))
}

/// Relays the exec'd process's output as NDJSON lines until it exits. When the client
/// goes away (`send` fails) the process is killed: nothing keeps running for nobody.
pub fn pump(
    mut agent: AgentConn,
    failed: Option<i32>,
    timeout: Option<Duration>,
    mut send: impl FnMut(ExecChunk) -> bool,
    client_gone: impl Fn() -> bool + Send + 'static,
) -> Option<i32> {
    if let Some(code) = failed {
        send(ExecChunk::Exit { exit_code: code });
        return Some(code);
    }
    let sender = agent.sender();
    let watch_sender = agent.sender();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let deadline = timeout.map(|t| Instant::now() + t);
    // The agent read blocks; this watcher notices a departed client or the deadline.
    let watcher = std::thread::spawn(move || {
        while !done2.load(std::sync::atomic::Ordering::Relaxed) {
            if client_gone() || deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = watch_sender.signal(MAIN_STREAM, libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut code = None;
    let mut connected = true;
    loop {
        let chunk = match agent.next_event() {
            Ok(Some(Event::Stdout { bytes, .. })) => ExecChunk::Output {
                stream: "stdout",
                data: String::from_utf8_lossy(&bytes).into_owned(),
            },
            Ok(Some(Event::Stderr { bytes, .. })) => ExecChunk::Output {
                stream: "stderr",
                data: String::from_utf8_lossy(&bytes).into_owned(),
            },
            Ok(Some(Event::Exited { stream, status })) if stream == MAIN_STREAM => {
                code = Some(status.code());
                break;
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        };
        if connected && !send(chunk) {
            connected = false;
            let _ = sender.signal(MAIN_STREAM, libc::SIGKILL);
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    sender.hang_up();
    if connected {
        match code {
            Some(c) => send(ExecChunk::Exit { exit_code: c }),
            None => send(ExecChunk::Error {
                error: ApiError::internal(
                    "the sandbox stopped before the process reported its exit status",
                )
                .body()["error"]
                    .clone(),
            }),
        };
    }
    code
}
