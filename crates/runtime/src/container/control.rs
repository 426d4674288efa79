//! The supervisor's control socket, the one protocol of both supervisors: `kill` and
//! `stop` from any shell reach the container's main process through the supervisor,
//! which holds the main agent connection; skiff-runtime's `start` (and the
//! createContainer hooks between its `create` and `start`) are requests too. One
//! request per connection, one line each way (`signal 15` / `stop 15 10000` / `start` /
//! `create-hooks`, answered `ok` or `error <why>`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// A signal for the main process.
    Signal(i32),
    /// The stop signal, then SIGKILL after the grace period.
    Stop { signal: i32, grace_ms: u64 },
    /// Start the main process of a created container (the OCI `start`).
    Start,
    /// Run the createContainer hooks in the guest (the OCI `create`, after its
    /// createRuntime hooks).
    CreateHooks,
}

impl ControlRequest {
    fn encode(self) -> String {
        match self {
            Self::Signal(s) => format!("signal {s}\n"),
            Self::Stop { signal, grace_ms } => format!("stop {signal} {grace_ms}\n"),
            Self::Start => "start\n".into(),
            Self::CreateHooks => "create-hooks\n".into(),
        }
    }

    fn decode(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Some(match words.as_slice() {
            ["signal", s] => Self::Signal(s.parse().ok()?),
            ["stop", s, g] => Self::Stop {
                signal: s.parse().ok()?,
                grace_ms: g.parse().ok()?,
            },
            ["start"] => Self::Start,
            ["create-hooks"] => Self::CreateHooks,
            _ => return None,
        })
    }

    /// How long the answer may take: starting runs the guest's hooks and the process.
    fn reply_timeout(self) -> Duration {
        match self {
            Self::Signal(_) | Self::Stop { .. } => Duration::from_secs(10),
            Self::Start | Self::CreateHooks => Duration::from_secs(300),
        }
    }
}

/// Sends one request to the supervisor listening on `path`.
pub fn request(path: &Path, req: ControlRequest) -> Result<()> {
    let mut s = UnixStream::connect(path).map_err(Error::io(format!(
        "reach the container's supervisor at {}",
        path.display()
    )))?;
    s.set_read_timeout(Some(req.reply_timeout()))
        .map_err(Error::io("control socket"))?;
    s.write_all(req.encode().as_bytes())
        .map_err(Error::io("send to the supervisor"))?;
    let mut reply = String::new();
    s.take(512)
        .read_to_string(&mut reply)
        .map_err(Error::io("read the supervisor's reply"))?;
    match reply.trim_end() {
        "ok" => Ok(()),
        "" => Err(Error::Agent(
            "the container's supervisor exited before it answered".into(),
        )),
        r => Err(Error::Agent(
            r.strip_prefix("error ").unwrap_or(r).to_owned(),
        )),
    }
}

/// Serves requests on `listener` until the process ends; `apply` acts on each one.
pub fn serve(
    listener: UnixListener,
    apply: impl Fn(ControlRequest) -> Result<()> + Send + 'static,
) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let read = BufReader::new((&conn).take(256)).read_line(&mut line);
            let reply = match read.ok().and_then(|_| ControlRequest::decode(&line)) {
                Some(req) => match apply(req) {
                    Ok(()) => "ok\n".to_owned(),
                    Err(e) => format!("error {}\n", e.to_string().replace('\n', " ")),
                },
                None => "error malformed request\n".to_owned(),
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        for r in [
            ControlRequest::Signal(10),
            ControlRequest::Stop {
                signal: 15,
                grace_ms: 5,
            },
            ControlRequest::Start,
            ControlRequest::CreateHooks,
        ] {
            assert_eq!(ControlRequest::decode(&r.encode()), Some(r));
        }
        for bad in [
            "",
            "signal",
            "signal x",
            "stop 1",
            "stop 1 2 3",
            "reboot 1",
            "start now",
        ] {
            assert_eq!(ControlRequest::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn served_over_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctl.sock");
        let l = UnixListener::bind(&p).unwrap();
        serve(l, |r| match r {
            ControlRequest::Signal(9) => Err(Error::Agent("no".into())),
            _ => Ok(()),
        });
        request(&p, ControlRequest::Signal(15)).unwrap();
        assert!(request(&p, ControlRequest::Signal(9))
            .unwrap_err()
            .to_string()
            .contains("no"));
    }
}
