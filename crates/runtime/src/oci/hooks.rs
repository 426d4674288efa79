//! OCI hooks that run on the host (createRuntime/prestart, poststart, poststop): each
//! gets the state JSON on stdin and is killed when its timeout passes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::{Error, Result};

/// Used when a hook names no timeout, so a stuck hook cannot stall the caller forever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `hooks` in order; the first failure is the error.
pub fn run_all(kind: &str, hooks: &[Hook], state: &serde_json::Value) -> Result<()> {
    for h in hooks {
        run_one(kind, h, state)?;
    }
    Ok(())
}

fn run_one(kind: &str, hook: &Hook, state: &serde_json::Value) -> Result<()> {
    let path = hook.path();
    let what = format!("{kind} hook {}", path.display());
    let mut cmd = Command::new(path);
    let args = hook.args().clone().unwrap_or_default();
    if let Some((argv0, rest)) = args.split_first() {
        use std::os::unix::process::CommandExt;
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for e in hook.env().as_deref().unwrap_or_default() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| Error::Launch {
            what: what.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state.to_string().as_bytes());
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map_or(DEFAULT_TIMEOUT, |t| Duration::from_secs(t as u64));
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(Error::Config(format!("{what} failed: {s}"))),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Config(format!("{what} timed out after {timeout:?}")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(Error::io(what)(e)),
        }
    }
}
