//! Loading a kernel and preparing the Linux boot protocol state: the zero page with
//! its e820 map, the command line and the initramfs.

use std::fs::File;
use std::path::Path;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::layout::{
    CMDLINE, CMDLINE_MAX, EBDA_START, HIMEM_START, INITRD_ADDR_MAX, MMIO_GAP_END, MMIO_GAP_START,
    ZERO_PAGE,
};
use crate::GuestMemoryMmap;

const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
/// 64-bit entry point of a bzImage relative to its protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Errors while loading the guest's boot images.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is neither an x86_64 ELF vmlinux nor a bzImage (ELF: {elf}; bzImage: {bzimage})"
    )]
    Kernel {
        path: String,
        elf: String,
        bzimage: String,
    },
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory below {max:#x}")]
    InitramfsTooBig { path: String, size: u64, max: u64 },
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error("writing boot state into guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// A kernel placed in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Where the vCPU starts (64-bit).
    pub entry: u64,
    /// First byte after the kernel image.
    pub end: u64,
    /// bzImage setup header to carry into the zero page.
    pub setup_header: Option<setup_header>,
}

/// Loads an ELF vmlinux (or any static x86_64 ELF, such as the test guest) or a bzImage.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let shown = path.display().to_string();
    let open = || {
        File::open(path).map_err(|source| BootError::Open {
            path: shown.clone(),
            source,
        })
    };
    let mut file = open()?;
    let elf = match Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => {
            return Ok(LoadedKernel {
                entry: r.kernel_load.raw_value(),
                end: r.kernel_end,
                setup_header: None,
            })
        }
        Err(e) => e.to_string(),
    };
    let mut file = open()?;
    match BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => Ok(LoadedKernel {
            entry: r.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET,
            end: r.kernel_end,
            setup_header: r.setup_header,
        }),
        Err(e) => Err(BootError::Kernel {
            path: shown,
            elf,
            bzimage: e.to_string(),
        }),
    }
}

/// Where an initramfs was placed.
#[derive(Debug, Clone, Copy)]
pub struct LoadedInitramfs {
    pub addr: u64,
    pub size: u64,
}

/// Copies an initramfs to the highest page-aligned spot below the initrd limit that
/// stays above the kernel.
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<LoadedInitramfs, BootError> {
    let shown = path.display().to_string();
    let mut file = File::open(path).map_err(|source| BootError::Open {
        path: shown.clone(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| BootError::Open {
            path: shown.clone(),
            source,
        })?
        .len();
    let low_end = mem.last_addr().raw_value().min(MMIO_GAP_START - 1) + 1;
    let top = low_end.min(INITRD_ADDR_MAX);
    let too_big = || BootError::InitramfsTooBig {
        path: shown.clone(),
        size,
        max: top,
    };
    let addr = top.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if addr < kernel_end.max(HIMEM_START) {
        return Err(too_big());
    }
    let count = usize::try_from(size).map_err(|_| too_big())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, count)?;
    Ok(LoadedInitramfs { addr, size })
}

/// Writes the command line at [`CMDLINE`].
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<usize, BootError> {
    load_cmdline(mem, GuestAddress(CMDLINE), cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let len = cmdline
        .as_cstring()
        .map_err(|e| BootError::Cmdline(e.to_string()))?
        .as_bytes()
        .len();
    if len >= CMDLINE_MAX {
        return Err(BootError::Cmdline(format!(
            "{len} bytes, at most {} allowed",
            CMDLINE_MAX - 1
        )));
    }
    Ok(len)
}

/// Fills the zero page: setup header, command line pointer, initramfs, e820 map.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initramfs: Option<LoadedInitramfs>,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(hdr) = kernel.setup_header {
        params.hdr = hdr;
    }
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    // CMDLINE is a small constant, cmdline_len < CMDLINE_MAX: both fit in u32.
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = u32::try_from(cmdline_len).unwrap_or(0);
    if let Some(initrd) = initramfs {
        // Placed below INITRD_ADDR_MAX, so both fit in u32.
        params.hdr.ramdisk_image = u32::try_from(initrd.addr).unwrap_or(0);
        params.hdr.ramdisk_size = u32::try_from(initrd.size).unwrap_or(0);
    }
    let mut entries = vec![(0u64, EBDA_START)];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIMEM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            entries.push((start, end - start));
        }
    }
    for (i, (addr, size)) in entries.iter().enumerate().take(params.e820_table.len()) {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = u8::try_from(entries.len().min(params.e820_table.len())).unwrap_or(0);
    debug_assert!(entries
        .iter()
        .all(|(a, s)| a + s <= MMIO_GAP_START || *a >= MMIO_GAP_END));
    mem.write_obj(params, GuestAddress(ZERO_PAGE))?;
    Ok(())
}
