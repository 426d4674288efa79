//! A QMP (QEMU's JSON monitor) connection that stays open for several commands;
//! asynchronous events arriving in between are skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{Error, Result};

/// Longest line QEMU may send us (its replies here are small).
const MAX_LINE: usize = 1 << 20;

pub struct Qmp {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects (retrying until `timeout` while QEMU creates the socket) and
    /// negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Config(format!("QMP {}: {e}", path.display())))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let io = |e: std::io::Error| Error::Config(format!("QMP {}: {e}", path.display()));
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        let mut qmp = Self {
            path: path.to_path_buf(),
            writer: stream,
            reader,
        };
        qmp.read_value()?; // the greeting
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn err(&self, m: impl std::fmt::Display) -> Error {
        Error::Config(format!("QMP {}: {m}", self.path.display()))
    }

    fn read_value(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .map_err(|e| self.err(e))?;
        if n == 0 || !line.ends_with('\n') {
            return Err(self.err("QEMU closed the monitor (did it exit?)"));
        }
        serde_json::from_str(&line).map_err(|e| self.err(e))
    }

    /// Runs `command` and returns its `return` value; an `error` reply is an error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}").map_err(|e| self.err(e))?;
        loop {
            let mut v = self.read_value()?;
            if let Some(r) = v.get_mut("return") {
                return Ok(r.take());
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("failed");
                return Err(self.err(format!("{command}: {desc}")));
            }
        }
    }
}
