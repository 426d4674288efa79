//! virtio-blk over vhost-user.

use std::io;

use skiff_virtio::block::{Block, Disk};
use tracing::warn;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VringT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use super::{protocol_feature_bit, ExitEvent, SharedMemory, Vring, MAX_QUEUE_SIZE};
use crate::vmm_config::DiskConfig;

/// A disk served to a vhost-user front end.
pub struct BlockBackend {
    disk: Disk,
    mem: Option<SharedMemory>,
    broken: bool,
    exit: ExitEvent,
}

impl BlockBackend {
    /// Opens the disk.
    pub fn new(config: &DiskConfig) -> anyhow::Result<Self> {
        Ok(Self {
            disk: Disk::open(config)?,
            mem: None,
            broken: false,
            exit: ExitEvent::new()?,
        })
    }
}

impl VhostUserBackendMut for BlockBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        Block::features_for(self.disk.read_only()) | protocol_feature_bit()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn exit_event(&self, _thread: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.exit.pair()
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = Block::config_space(&self.disk);
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
        if !evset.contains(EventSet::IN) || device_event != 0 || self.broken {
            return Ok(());
        }
        let (Some(mem), Some(vring)) = (self.mem.as_ref(), vrings.first()) else {
            return Ok(());
        };
        let mem = mem.memory();
        let result = {
            let mut state = vring.get_mut();
            Block::process_requests(&mut self.disk, state.get_queue_mut(), &mem)
        };
        match result {
            Ok(true) => vring.signal_used_queue()?,
            Ok(false) => {}
            Err(e) => {
                warn!("vhost-user-blk: request queue unusable: {e}");
                self.broken = true;
            }
        }
        Ok(())
    }
}
