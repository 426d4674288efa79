//! The control API of a running microVM: one request line, one reply line, over a
//! UNIX socket (`--api-socket`), one client at a time.
//!
//! ```text
//! pause                       -> ok paused
//! resume                      -> ok running
//! status                      -> ok running|paused
//! anything else / failure     -> error <one line>
//! ```
//!
//! The client is whoever can open the socket (created 0600 by the VMM's user); lines
//! are still capped and parsed strictly.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::builder::BuildError;
use crate::devices::Devices;
use crate::exit::GuestExit;
use crate::vstate::control::VcpuControl;

/// Longest request line.
const MAX_LINE: u64 = 4096;
/// How long vCPUs may take to stop (generous: on a busy host a vCPU thread may wait
/// a long time to be scheduled; a timeout is an error reply, never a hang).
const PAUSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates the API socket (refusing to replace an existing file), mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, BuildError> {
    let err = |source| BuildError::Io {
        what: "API socket",
        source,
    };
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Everything the API thread acts on.
pub struct Api {
    pub devices: Arc<Devices>,
    pub control: Arc<VcpuControl>,
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Pause,
    Resume,
    Status,
}

fn parse(line: &str) -> Result<Request, String> {
    let mut words = line.split_ascii_whitespace();
    let request = match words.next() {
        Some("pause") => Request::Pause,
        Some("resume") => Request::Resume,
        Some("status") => Request::Status,
        Some(other) => return Err(format!("unknown request `{other}` (pause, resume, status)")),
        None => return Err("empty request".into()),
    };
    if words.next().is_some() {
        return Err("too many arguments".into());
    }
    Ok(request)
}

impl Api {
    /// Serves clients until the process exits.
    pub fn serve(self, listener: UnixListener) {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => self.serve_client(stream),
                Err(e) => warn!("API socket: {e}"),
            }
        }
    }

    fn serve_client(&self, stream: UnixStream) {
        let Ok(mut writer) = stream.try_clone() else {
            warn!("API socket: cannot clone the client stream");
            return;
        };
        let mut reader = BufReader::new(std::io::Read::take(stream, u64::MAX));
        loop {
            reader.get_mut().set_limit(MAX_LINE + 1);
            let mut line = String::new();
            let request = match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if !line.ends_with('\n') => {
                    Err("request line too long or unterminated".to_string())
                }
                Ok(_) => parse(line.trim_end()),
                Err(e) => Err(format!("reading the request: {e}")),
            };
            let fatal = request.is_err() && !line.ends_with('\n');
            let (reply, exit) = match request {
                Ok(request) => self.handle(request),
                Err(e) => (Err(e), None),
            };
            let text = match reply {
                Ok(ok) => format!("ok {ok}\n"),
                Err(e) => format!("error {}\n", e.replace('\n', " ")),
            };
            // The reply is on its way before the VMM may exit: a client never sees a
            // dropped connection instead of the answer to its request.
            let sent = writer
                .write_all(text.as_bytes())
                .and_then(|()| writer.flush());
            if let Err(e) = &sent {
                warn!("API socket: cannot send the reply: {e}");
            }
            if let Some(exit) = exit {
                let _ = writer.shutdown(std::net::Shutdown::Both);
                self.devices.request_exit(exit);
                return;
            }
            if sent.is_err() || fatal {
                return;
            }
        }
    }

    fn state_word(&self) -> &'static str {
        if self.control.pause_requested() {
            "paused"
        } else {
            "running"
        }
    }

    /// Carries out `request`: the reply line, and how the VM must end once the reply
    /// is sent (none of today's requests ends it).
    fn handle(&self, request: Request) -> (Result<String, String>, Option<GuestExit>) {
        match request {
            Request::Pause => (
                self.control
                    .pause(PAUSE_TIMEOUT)
                    .map(|()| "paused".into())
                    .map_err(|e| e.to_string()),
                None,
            ),
            Request::Resume => {
                self.control.resume();
                (Ok("running".into()), None)
            }
            Request::Status => (Ok(self.state_word().into()), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        assert_eq!(parse("pause"), Ok(Request::Pause));
        assert_eq!(parse("resume"), Ok(Request::Resume));
        assert_eq!(parse("status"), Ok(Request::Status));
        for bad in ["", "pause now", "reboot"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
