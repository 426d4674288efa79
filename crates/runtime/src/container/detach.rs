//! A container's supervisor as a process of its own session (`skiff supervise ID`), so
//! it outlives the command or daemon that started it: `skiff start`/`run -d` and
//! skiffd start it the same way.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::records::Containers;
use crate::{owner_only, Error, Result};

impl Containers {
    /// Spawns `skiff_bin --root ROOT --log-level LEVEL supervise ID` in a new session,
    /// its stderr in the container's `supervisor.log` (0600). The caller waits for it to
    /// claim the record.
    pub fn spawn_supervisor(
        &self,
        skiff_bin: &Path,
        root: &Path,
        log_level: &str,
        id: &str,
    ) -> Result<Child> {
        let log = owner_only::create(&self.dir_of(id).join("supervisor.log"))?;
        let mut cmd = Command::new(skiff_bin);
        cmd.arg("--root")
            .arg(root)
            .args(["--log-level", log_level])
            .args(["supervise", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: new_session only calls setsid, which is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, skiff_sys::confine::new_session)
        };
        cmd.spawn().map_err(|source| Error::Launch {
            what: format!("the supervisor ({})", skiff_bin.display()),
            source,
        })
    }
}
