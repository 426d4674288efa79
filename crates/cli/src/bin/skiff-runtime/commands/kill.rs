//! `kill`: a signal for the container's process, through its supervisor.

use super::*;

pub(super) fn kill(store: &Store, id: &str, signal: Option<&str>) -> Result<()> {
    // As runc: SIGTERM when none is named.
    let sig = match signal {
        Some(s) => skiff_engine::run_config::parse_signal(s)?,
        None => libc::SIGTERM,
    };
    let rec = store.lock(id)?.load()?;
    match (rec.status(), rec.pid) {
        (Status::Created | Status::Running | Status::Paused, Some(pid)) => {
            // The supervisor forwards catchable signals to the container; SIGKILL ends
            // it and, with it, the VM.
            skiff_sys::signals::send(pid, sig).with_context(|| format!("signal container {id}"))
        }
        _ => bail!("container not running"),
    }
}

pub(super) fn kill_and_wait(pid: u32) {
    // A pid that is gone (or refused: 0, beyond pid_t) is not alive to wait for either.
    let _ = skiff_sys::signals::send(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while records::process_alive(pid, None) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
