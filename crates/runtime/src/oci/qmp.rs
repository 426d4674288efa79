//! Just enough QMP (QEMU's JSON monitor protocol) to pause and resume a VM's vCPUs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::{Error, Result};

/// Runs one QMP command (`stop`, `cont`) and waits for its `return`.
pub fn execute(socket: &Path, command: &str) -> Result<()> {
    let err = |m: String| Error::Config(format!("QMP {}: {m}", socket.display()));
    let mut s = UnixStream::connect(socket).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| err(e.to_string()))?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| err(e.to_string()))?);
    let mut line = String::new();
    // Greeting, then capabilities negotiation, then the command.
    r.read_line(&mut line).map_err(|e| err(e.to_string()))?;
    for cmd in ["qmp_capabilities", command] {
        writeln!(s, "{{\"execute\":\"{cmd}\"}}").map_err(|e| err(e.to_string()))?;
        loop {
            line.clear();
            let n = r.read_line(&mut line).map_err(|e| err(e.to_string()))?;
            if n == 0 || line.len() > 64 << 10 {
                return Err(err("the monitor closed the connection".into()));
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
            if v.get("return").is_some() {
                break;
            }
            if let Some(e) = v.get("error") {
                return Err(err(format!("{cmd}: {e}")));
            }
            // Anything else is an asynchronous event; keep reading.
        }
    }
    Ok(())
}
