//! The device thread: waits on queue-notify eventfds (ioeventfds) and device backend
//! fds (vsock sockets) and hands each event to its virtio-mmio device.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use skiff_virtio::transport::MmioTransport;
use tracing::warn;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

const BACKEND: u64 = 0xffff_ffff;

/// The set of fds the device thread waits on.
pub struct EventLoop {
    epoll: Epoll,
    devices: Vec<Arc<Mutex<MmioTransport>>>,
}

impl EventLoop {
    /// Registers every queue eventfd and backend fd of `devices`.
    pub fn new(devices: Vec<Arc<Mutex<MmioTransport>>>) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        for (i, dev) in devices.iter().enumerate() {
            let t = dev.lock().unwrap_or_else(PoisonError::into_inner);
            let base = (i as u64) << 32;
            // A vhost-user device's backend process reads its kicks itself.
            if !t.device_takes_notifications() {
                for (q, evt) in t.queue_events().iter().enumerate() {
                    add(&epoll, evt.as_raw_fd(), base | q as u64)?;
                }
            }
            if let Some(fd) = t.device().backend_fd() {
                add(&epoll, fd, base | BACKEND)?;
            }
        }
        Ok(Self { epoll, devices })
    }

    /// Serves events forever (the thread ends with the process).
    pub fn run(self) {
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("device event loop: {e}");
                    return;
                }
            };
            for event in &events[..n] {
                self.dispatch(event.data());
            }
        }
    }

    fn dispatch(&self, token: u64) {
        let Some(dev) = usize::try_from(token >> 32)
            .ok()
            .and_then(|i| self.devices.get(i))
        else {
            return;
        };
        let mut t = dev.lock().unwrap_or_else(PoisonError::into_inner);
        let index = token & 0xffff_ffff;
        if index == BACKEND {
            t.process_backend();
            return;
        }
        let Ok(q) = usize::try_from(index) else {
            return;
        };
        // Draining the counter coalesces a flood of notifications into one pass.
        if let Some(evt) = t.queue_events().get(q) {
            let _ = evt.read();
        }
        t.notify_queue(q);
    }
}

fn add(epoll: &Epoll, fd: RawFd, data: u64) -> std::io::Result<()> {
    epoll.ctl(
        ControlOperation::Add,
        fd,
        EpollEvent::new(EventSet::IN, data),
    )
}
