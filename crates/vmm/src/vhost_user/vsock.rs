//! virtio-vsock over vhost-user, with the same UNIX-socket host side as in-process.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;

use skiff_virtio::vsock::device::{fill_rx, process_tx, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use skiff_virtio::vsock::VsockMuxer;
use skiff_virtio::VIRTIO_F_VERSION_1;
use tracing::warn;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VringT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use super::{protocol_feature_bit, ExitEvent, SharedMemory, Vring, MAX_QUEUE_SIZE};

/// Event id of the muxer's epoll fd (ids up to the queue count are the library's).
pub const BACKEND_EVENT: u64 = 4;

/// A vsock device served to a vhost-user front end.
pub struct VsockBackend {
    muxer: VsockMuxer,
    mem: Option<SharedMemory>,
    broken: bool,
    exit: ExitEvent,
}

impl VsockBackend {
    /// Listens on `uds_path` for host clients of guest `guest_cid`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> anyhow::Result<Self> {
        let muxer = VsockMuxer::new(guest_cid, uds_path)
            .map_err(|e| anyhow::anyhow!("vsock socket {}: {e}", uds_path.display()))?;
        Ok(Self {
            muxer,
            mem: None,
            broken: false,
            exit: ExitEvent::new()?,
        })
    }

    /// The fd to register with the daemon's event loop.
    pub fn epoll_fd(&self) -> RawFd {
        self.muxer.epoll_fd()
    }

    fn run(&mut self, vrings: &[Vring], event: u16) -> io::Result<()> {
        let (Some(mem), Some(rx), Some(tx)) = (
            self.mem.as_ref(),
            vrings.get(RX_QUEUE),
            vrings.get(TX_QUEUE),
        ) else {
            return Ok(());
        };
        let mem = mem.memory();
        let mut signal_tx = false;
        let mut result = Ok(false);
        if usize::from(event) == TX_QUEUE {
            let mut state = tx.get_mut();
            match process_tx(&mut self.muxer, state.get_queue_mut(), &mem) {
                Ok(s) => signal_tx = s,
                Err(e) => result = Err(e),
            }
        } else if usize::from(event) == RX_QUEUE {
            self.muxer.set_rx_starved(false);
        } else if u64::from(event) == BACKEND_EVENT {
            self.muxer.process_host_events();
        }
        if result.is_ok() {
            let mut state = rx.get_mut();
            result = fill_rx(&mut self.muxer, state.get_queue_mut(), &mem);
        }
        if signal_tx {
            tx.signal_used_queue()?;
        }
        match result {
            Ok(true) => rx.signal_used_queue()?,
            Ok(false) => {}
            Err(e) => {
                warn!("vhost-user-vsock: queue unusable: {e}");
                self.broken = true;
            }
        }
        Ok(())
    }
}

impl VhostUserBackendMut for VsockBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        3
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | protocol_feature_bit()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn exit_event(&self, _thread: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.exit.pair()
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.muxer.guest_cid().to_le_bytes();
        let start = (offset as usize).min(config.len());
        let end = start.saturating_add(size as usize).min(config.len());
        let mut out = config[start..end].to_vec();
        // The front end picks `size`; config spaces are tiny, so cap it.
        out.resize((size as usize).min(256), 0);
        out
    }

    fn update_memory(&mut self, mem: SharedMemory) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread: usize,
    ) -> io::Result<()> {
        if !evset.contains(EventSet::IN) || self.broken || usize::from(device_event) == EVENT_QUEUE
        {
            return Ok(());
        }
        self.run(vrings, device_event)
    }
}
