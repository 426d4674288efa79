//! Host processes that belong to one VM: the VMM itself and any vhost-user device
//! daemons. All are killed and reaped together, on every path.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::VmProcess;
use crate::{Error, Result};

#[derive(Default)]
pub struct ProcessGroup {
    children: Vec<(String, Child)>,
}

impl ProcessGroup {
    /// Spawns `cmd` with stdout and stderr to `log`, optionally dying with its parent.
    /// Every host process of a VM starts here, and none can gain privileges
    /// (no_new_privs) or dump a core with the guest's memory in it, whatever the guest
    /// makes of it.
    pub fn spawn(
        &mut self,
        what: &str,
        mut cmd: Command,
        log: &Path,
        die_with_parent: bool,
    ) -> Result<&mut Child> {
        let out = open_log(log)?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("open {}", log.display())))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: the closures only call prctl and setrlimit, both async-signal-safe.
        unsafe {
            cmd.pre_exec(skiff_sys::confine::vm_process);
            if die_with_parent {
                cmd.pre_exec(super::die_with_parent);
            }
        }
        tracing::debug!(?cmd, "starting {what}");
        let child = cmd.spawn().map_err(|source| Error::Launch {
            what: what.to_owned(),
            source,
        })?;
        self.children.push((what.to_owned(), child));
        let last = self.children.len() - 1;
        Ok(&mut self.children[last].1)
    }

    /// Waits for a daemon to create its socket (or die trying).
    pub fn wait_for_socket(&mut self, path: &Path, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let Some((what, child)) = self.children.last_mut() else {
            return Ok(());
        };
        while Instant::now() < deadline {
            if path.exists() {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Launch {
                    what: what.clone(),
                    source: io::Error::other(format!(
                        "it exited ({status}) before creating {}",
                        path.display()
                    )),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(Error::Launch {
            what: what.clone(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} did not appear", path.display()),
            ),
        })
    }
}

/// The VMM is the last process started; device daemons come before it.
impl VmProcess for ProcessGroup {
    fn pid(&self) -> u32 {
        self.children.last().map_or(0, |(_, c)| c.id())
    }

    fn try_wait(&mut self) -> io::Result<Option<String>> {
        match self.children.last_mut() {
            Some((_, c)) => Ok(c.try_wait()?.map(|s| s.to_string())),
            None => Ok(Some("no process".into())),
        }
    }

    fn helpers(&self) -> Vec<(String, u32)> {
        let n = self.children.len().saturating_sub(1);
        self.children[..n]
            .iter()
            .map(|(what, c)| (what.clone(), c.id()))
            .collect()
    }

    /// Kills the VMM first, then the device daemons, and reaps them all.
    fn kill(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

fn open_log(path: &Path) -> Result<File> {
    crate::owner_only::create(path)
}
