//! A VM's device daemons (virtiofsd for each `-v`, the vsock daemon) can die while the
//! VM runs; the guest would then hang on that device for good. The watch notices such a
//! death, kills the VM and keeps the reason for the container's record. A daemon that
//! ends because the VM is going away (it powers off, or died first) is not a failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_sys::procfs::gone;

const POLL: Duration = Duration::from_millis(250);
/// How long a daemon's death may precede its VM's own exit and still count as the VM's
/// shutdown (virtiofsd leaves as soon as QEMU drops the connection).
const GRACE: Duration = Duration::from_secs(1);

pub struct HelperWatch {
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
}

impl HelperWatch {
    /// Watches `helpers` (what, pid) of the VM whose VMM is `vmm_pid`.
    pub fn start(helpers: Vec<(String, u32)>, vmm_pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        if !helpers.is_empty() {
            let (stop, failure) = (stop.clone(), failure.clone());
            let spawned = std::thread::Builder::new()
                .name("helper-watch".into())
                .spawn(move || watch(&helpers, vmm_pid, &stop, &failure));
            if let Err(e) = spawned {
                tracing::warn!("cannot watch the VM's device daemons: {e}");
            }
        }
        Self { stop, failure }
    }

    /// The VM is shutting down: daemons leaving from now on are expected.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Why the watch killed the VM, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for HelperWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(helpers: &[(String, u32)], vmm: u32, stop: &AtomicBool, failure: &Mutex<Option<String>>) {
    while !stop.load(Ordering::SeqCst) {
        if let Some((what, pid)) = helpers.iter().find(|(_, pid)| gone(*pid)) {
            std::thread::sleep(GRACE);
            if stop.load(Ordering::SeqCst) || gone(vmm) {
                return;
            }
            let why = format!("{what} (pid {pid}) exited while the VM ran; the VM was stopped");
            tracing::error!("{why}");
            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            // The VMM this supervisor started: still our unreaped child, so the pid
            // cannot have been reused.
            let _ = skiff_sys::signals::send(vmm, libc::SIGKILL);
            return;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(secs: &str) -> std::process::Child {
        std::process::Command::new("sleep")
            .arg(secs)
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_dead_helper_stops_its_vm_and_says_why() {
        let mut helper = child("0");
        let mut vmm = child("30");
        let w = HelperWatch::start(vec![("virtiofsd for /x".into(), helper.id())], vmm.id());
        let status = vmm.wait().unwrap();
        assert!(!status.success(), "the VMM was killed");
        std::thread::sleep(Duration::from_millis(50));
        let why = w.failure().unwrap();
        assert!(why.contains("virtiofsd for /x"), "{why}");
        let _ = helper.wait();
    }

    #[test]
    fn helpers_leaving_with_their_vm_are_no_failure() {
        let mut helper = child("0");
        let mut vmm = child("0");
        let w = HelperWatch::start(vec![("virtiofsd".into(), helper.id())], vmm.id());
        std::thread::sleep(GRACE + POLL * 4);
        assert_eq!(w.failure(), None);
        let _ = (helper.wait(), vmm.wait());
    }
}
