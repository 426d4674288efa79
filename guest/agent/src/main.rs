//! skiff-agent: PID 1 of every skiff microVM.
//!
//! It prepares the guest (pseudo filesystems, a pivotable root), then serves the host
//! over vsock (or the serial port, for VMs that are snapshotted): it assembles the container's root filesystem from the layer disks and the
//! writable disk, runs the container's process and any `exec`s inside it, relays their
//! stdio, signals and exit statuses, and on stop syncs, unmounts and powers the VM off.

mod changes;
mod container;
mod identity;
mod init;
mod mounts;
mod net;
mod process;
mod ps;
mod reaper;
mod rootfs;
mod serial;
mod session;
mod sys;
mod users;
mod vsock;

use skiff_proto::{AGENT_PORT, HOST_CID, READY_PORT};

/// Writes one line to the console (PID 1's stderr), where the host keeps the tail for
/// error reports.
macro_rules! log {
    ($($t:tt)*) => {
        eprintln!("skiff-agent: {}", format_args!($($t)*))
    };
}
pub(crate) use log;

fn main() {
    if let Err(e) = run() {
        log!("fatal: {e}");
        container::power_off();
    }
}

fn run() -> std::io::Result<()> {
    init::prepare_guest()?;
    // SIGCHLD must be blocked before any thread exists so only the reaper sees it.
    reaper::start()?;

    if serial::requested() {
        serial::silence_console()?;
        let mut port = serial::Port::open()?;
        loop {
            port.wait_for_host()?;
            session::serve(crate::session::Conn::try_clone(&port)?);
        }
    }
    let listener = vsock::Listener::bind(AGENT_PORT)?;
    std::thread::spawn(|| match vsock::Stream::connect(HOST_CID, READY_PORT) {
        Ok(conn) => session::serve(conn),
        Err(e) => log!("could not dial the host on vsock port {READY_PORT}: {e}"),
    });
    loop {
        match listener.accept() {
            Ok(conn) => {
                std::thread::spawn(move || session::serve(conn));
            }
            Err(e) => log!("accept on vsock port {AGENT_PORT}: {e}"),
        }
    }
}
