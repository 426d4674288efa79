//! Snapshots of a running microVM: guest memory, vCPU, VM and device state, written
//! to a directory (see [`format`]) and restored into a new `skiff-vmm` process.
//!
//! Guest memory is its own file so restore maps it `MAP_PRIVATE`: pages load lazily
//! and the guest's writes stay in the restoring process, so any number of VMs can
//! start from one snapshot without seeing each other's writes (copy-on-write).
//!
//! What is not carried over: vsock connections (host sockets cannot move between
//! processes; the restored device sends the driver a transport reset), frames in
//! flight on a TAP, and disk *contents* — disks are re-opened by path (or the path
//! given at restore), so the caller keeps the disk as it was at snapshot time (copy it
//! while the VM is paused; see `skiff-vmm run --api-socket`).

pub mod format;
pub mod kvm_state;
pub mod state;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion,
    GuestRegionMmap,
};

pub use format::{SnapshotError, MEMORY_FILE, STATE_FILE};
pub use state::{HostInfo, Snapshot};

use crate::GuestMemoryMmap;
use format::io_err;

impl HostInfo {
    /// This host.
    pub fn current(kvm_api: i32) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_vendor = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("vendor_id"))
            .and_then(|rest| rest.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            cpu_vendor,
            kvm_api,
            pvm: Path::new("/sys/module/kvm_pvm").exists(),
            kernel,
        }
    }

    /// Whether a snapshot taken on `self` can run here: same CPU vendor, KVM API and
    /// KVM flavour (PVM guests and hardware guests have different CPU state).
    pub fn check_compatible(&self, here: &HostInfo) -> Result<(), SnapshotError> {
        let why = if self.cpu_vendor != here.cpu_vendor {
            Some("different CPU vendor")
        } else if self.kvm_api != here.kvm_api {
            Some("different KVM API version")
        } else if self.pvm != here.pvm {
            Some("PVM and hardware-backed KVM snapshots are not interchangeable")
        } else {
            None
        };
        match why {
            None => Ok(()),
            Some(why) => Err(SnapshotError::Host {
                taken: self.describe(),
                here: here.describe(),
                why,
            }),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} KVM API {}{} (kernel {})",
            self.cpu_vendor,
            self.kvm_api,
            if self.pvm { " PVM" } else { "" },
            self.kernel
        )
    }
}

/// Guest RAM regions in file order: (guest address, length).
pub fn memory_regions(mem: &GuestMemoryMmap) -> Vec<(u64, u64)> {
    mem.iter()
        .map(|r| (r.start_addr().raw_value(), r.len()))
        .collect()
}

const PAGE: usize = 4096;
const CHUNK: usize = 1 << 20;

/// Writes guest RAM to `path`, regions back to back, leaving all-zero pages as holes
/// (most of a small guest's RAM), and syncs it. Returns the file length.
pub fn write_memory(mem: &GuestMemoryMmap, path: &Path) -> Result<u64, SnapshotError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err(path))?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    for region in mem.iter() {
        let start = region.start_addr();
        let len = region.len();
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = &mut buf[..n];
            mem.read_slice(chunk, start.unchecked_add(done))
                .map_err(|e| SnapshotError::Unsupported(format!("reading guest memory: {e}")))?;
            for (i, page) in chunk.chunks(PAGE).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    let at = offset + done + (i * PAGE) as u64;
                    file.write_all_at(page, at).map_err(io_err(path))?;
                }
            }
            done += n as u64;
        }
        offset += len;
    }
    file.set_len(offset).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))?;
    Ok(offset)
}

/// Maps the memory file of a snapshot copy-on-write at `regions`. The file is opened
/// read-only: nothing the guest does reaches it.
pub fn map_memory(
    path: &Path,
    regions: &[(u64, u64)],
    expected_len: u64,
) -> Result<GuestMemoryMmap, SnapshotError> {
    let file = File::open(path).map_err(io_err(path))?;
    let found = file.metadata().map_err(io_err(path))?.len();
    if found != expected_len {
        return Err(SnapshotError::MemorySize {
            expected: expected_len,
            found,
        });
    }
    let file = Arc::new(file);
    let mut mapped = Vec::with_capacity(regions.len());
    let mut offset = 0u64;
    for &(gpa, len) in regions {
        let size = usize::try_from(len)
            .map_err(|_| SnapshotError::Invalid("memory region too large".into()))?;
        let region = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| SnapshotError::Unsupported(format!("mapping guest memory: {e}")))?;
        let region = GuestRegionMmap::new(region, GuestAddress(gpa))
            .ok_or_else(|| SnapshotError::Invalid("memory region wraps around".into()))?;
        mapped.push(region);
        offset += len;
    }
    GuestMemoryMmap::from_regions(mapped)
        .map_err(|e| SnapshotError::Invalid(format!("memory regions: {e}")))
}

/// Writes `dir/state` atomically (temp file, fsync, rename), creating `dir`.
pub fn write_state(dir: &Path, snapshot: &Snapshot, memory_len: u64) -> Result<u64, SnapshotError> {
    let bytes = format::encode(snapshot, memory_len)?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    let dst = dir.join(STATE_FILE);
    std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    Ok(bytes.len() as u64)
}
