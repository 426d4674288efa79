//! The control API of skiff-vmm (`--api-socket`): one request line, one reply line
//! (`ok ...` or `error ...`). Used for pause and resume on the vmm backend (`control`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::{Error, Result};

/// Longest reply line read from the VMM.
const MAX_LINE: u64 = 64 << 10;
/// Pausing waits for every vCPU to stop; the VMM itself gives up after 60 s.
const TIMEOUT: Duration = Duration::from_secs(90);

/// Sends `request` and returns what follows `ok` in the reply.
pub fn request(socket: &Path, request: &str) -> Result<String> {
    let err = |m: String| Error::Config(format!("VMM API {}: {m}", socket.display()));
    let mut s = UnixStream::connect(socket).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| err(e.to_string()))?;
    writeln!(s, "{request}").map_err(|e| err(e.to_string()))?;
    let mut line = String::new();
    BufReader::new((&s).take(MAX_LINE))
        .read_line(&mut line)
        .map_err(|e| err(e.to_string()))?;
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("ok") {
        return Ok(rest.trim_start().to_owned());
    }
    match line.strip_prefix("error ") {
        Some(why) => Err(err(format!("{request}: {why}"))),
        None if line.is_empty() => Err(err(format!("{request}: no reply"))),
        None => Err(err(format!("{request}: unexpected reply {line:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn serve_once(reply: &'static str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("api.sock");
        let l = UnixListener::bind(&p).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            (&s).write_all(reply.as_bytes()).unwrap();
        });
        (d, p)
    }

    #[test]
    fn replies_are_parsed() {
        let (_d, p) = serve_once("ok paused\n");
        assert_eq!(request(&p, "pause").unwrap(), "paused");
        let (_d, p) = serve_once("error unknown request `x`\n");
        let e = request(&p, "x").unwrap_err().to_string();
        assert!(e.contains("unknown request"), "{e}");
        let (_d, p) = serve_once("");
        assert!(request(&p, "pause").is_err());
        let (_d, p) = serve_once("garbage\n");
        assert!(request(&p, "pause").is_err());
    }
}
