//! Just enough QMP (QEMU's JSON monitor protocol) for a running container's VM: pause
//! and resume the vCPUs (`stop`, `cont`), set and read the balloon (`balloon`,
//! `query-balloon`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// Longest reply line read from the monitor.
const MAX_LINE: usize = 64 << 10;

/// Runs one QMP command without arguments and waits for its `return`.
pub fn execute(socket: &Path, command: &str) -> Result<()> {
    call(socket, command, None).map(drop)
}

/// Runs one QMP command with optional `arguments` and returns its `return` value.
pub fn call(socket: &Path, command: &str, arguments: Option<Value>) -> Result<Value> {
    let err = |m: String| Error::Config(format!("QMP {}: {m}", socket.display()));
    let mut s = UnixStream::connect(socket).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| err(e.to_string()))?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| err(e.to_string()))?);
    let mut line = String::new();
    // Greeting, then capabilities negotiation, then the command.
    r.read_line(&mut line).map_err(|e| err(e.to_string()))?;
    let mut result = Value::Null;
    for (cmd, args) in [("qmp_capabilities", None), (command, arguments)] {
        let mut request = serde_json::json!({ "execute": cmd });
        if let Some(a) = args {
            request["arguments"] = a;
        }
        writeln!(s, "{request}").map_err(|e| err(e.to_string()))?;
        loop {
            line.clear();
            let n = r.read_line(&mut line).map_err(|e| err(e.to_string()))?;
            if n == 0 || line.len() > MAX_LINE {
                return Err(err("the monitor closed the connection".into()));
            }
            let mut v: Value = serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
            if let Some(ret) = v.get_mut("return") {
                result = ret.take();
                break;
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("failed");
                return Err(err(format!("{cmd}: {desc}")));
            }
            // Anything else is an asynchronous event; keep reading.
        }
    }
    Ok(result)
}
