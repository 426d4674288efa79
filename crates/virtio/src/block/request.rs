//! Parsing and executing one virtio-blk request.
//!
//! A request is a chain of a 16-byte readable header, data buffers (readable for
//! writes, writable for reads and GET_ID) and a final writable status byte. Anything
//! else is answered with an error status when there is room for one, and with a zero
//! length used element when there is not.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use tracing::debug;
use virtio_queue::{DescriptorChain, Reader, Writer};

use super::{SECTOR_SIZE, SERIAL_LEN};
use crate::GuestMemoryMmap;

const REQ_IN: u32 = 0;
const REQ_OUT: u32 = 1;
const REQ_FLUSH: u32 = 4;
const REQ_GET_ID: u32 = 8;

/// Request completed.
pub const STATUS_OK: u8 = 0;
/// Request failed (bad range, read-only disk, host I/O error).
pub const STATUS_IOERR: u8 = 1;
/// Request type not supported.
pub const STATUS_UNSUPP: u8 = 2;

/// Host bytes moved per read/write call: bounds the bounce buffer.
const CHUNK: usize = 128 * 1024;
/// Largest data transfer accepted in one request; Linux stays far below it.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// How a disk is attached: the type of skiff-vmm's `--disk` option.
pub use skiff_vmm_config::DiskConfig;

/// Why a disk could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image could not be opened or measured.
    #[error("disk {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An open disk image.
#[derive(Debug)]
pub struct Disk {
    file: File,
    size: u64,
    read_only: bool,
    serial: [u8; SERIAL_LEN],
}

impl Disk {
    /// Opens the image described by `config`.
    pub fn open(config: &DiskConfig) -> Result<Self, DiskError> {
        let err = |source| DiskError::Open {
            path: config.path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(&config.path)
            .map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        let mut serial = [0u8; SERIAL_LEN];
        if let Some(s) = &config.serial {
            let n = s.len().min(SERIAL_LEN);
            serial[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        Ok(Self {
            file,
            size,
            read_only: config.read_only,
            serial,
        })
    }

    /// Capacity in 512-byte sectors (a trailing partial sector is not exposed).
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Whether guest writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Executes the request in `chain`; returns the number of bytes written into the
    /// chain (the used length), status byte included.
    pub fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> u32 {
        let Ok(mut reader) = Reader::new(mem, chain.clone()) else {
            debug!("virtio-blk: readable part outside guest memory");
            return 0;
        };
        let Ok(mut writer) = Writer::new(mem, chain) else {
            debug!("virtio-blk: writable part outside guest memory");
            return 0;
        };
        let writable = writer.available_bytes();
        if writable == 0 {
            debug!("virtio-blk: no room for a status byte");
            return 0;
        }
        let Ok(mut status_writer) = writer.split_at(writable - 1) else {
            return 0;
        };
        let status = self.run(&mut reader, &mut writer);
        let data_len = writer.bytes_written();
        if status_writer.write_all(&[status]).is_err() {
            return 0;
        }
        // data_len <= writable, which came from a u32 descriptor length sum
        u32::try_from(data_len + 1).unwrap_or(u32::MAX)
    }

    fn run(&mut self, reader: &mut Reader<'_>, writer: &mut Writer<'_>) -> u8 {
        let mut header = [0u8; 16];
        if reader.read_exact(&mut header).is_err() {
            debug!("virtio-blk: short request header");
            return STATUS_IOERR;
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        match kind {
            REQ_IN => self.read_sectors(sector, writer),
            REQ_OUT => self.write_sectors(sector, reader),
            REQ_FLUSH => {
                if self.read_only || self.file.sync_data().is_ok() {
                    STATUS_OK
                } else {
                    STATUS_IOERR
                }
            }
            REQ_GET_ID => {
                let n = writer.available_bytes().min(SERIAL_LEN);
                if writer.write_all(&self.serial[..n]).is_ok() {
                    STATUS_OK
                } else {
                    STATUS_IOERR
                }
            }
            other => {
                debug!("virtio-blk: unsupported request type {other}");
                STATUS_UNSUPP
            }
        }
    }

    /// Byte range of `len` bytes at `sector`, if it lies inside the disk.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        if !(len as u64).is_multiple_of(SECTOR_SIZE) || len > MAX_REQUEST_BYTES {
            return None;
        }
        let start = sector.checked_mul(SECTOR_SIZE)?;
        let end = start.checked_add(len as u64)?;
        (end <= self.sectors() * SECTOR_SIZE).then_some(start)
    }

    fn read_sectors(&mut self, sector: u64, writer: &mut Writer<'_>) -> u8 {
        let len = writer.available_bytes();
        let Some(mut offset) = self.range(sector, len) else {
            debug!("virtio-blk: read of {len} bytes at sector {sector} out of range");
            return STATUS_IOERR;
        };
        let mut buf = vec![0u8; len.min(CHUNK)];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            if self.file.read_exact_at(&mut buf[..n], offset).is_err()
                || writer.write_all(&buf[..n]).is_err()
            {
                return STATUS_IOERR;
            }
            offset += n as u64;
            left -= n;
        }
        STATUS_OK
    }

    fn write_sectors(&mut self, sector: u64, reader: &mut Reader<'_>) -> u8 {
        if self.read_only {
            debug!("virtio-blk: write to read-only disk");
            return STATUS_IOERR;
        }
        let len = reader.available_bytes();
        let Some(mut offset) = self.range(sector, len) else {
            debug!("virtio-blk: write of {len} bytes at sector {sector} out of range");
            return STATUS_IOERR;
        };
        let mut buf = vec![0u8; len.min(CHUNK)];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            if reader.read_exact(&mut buf[..n]).is_err()
                || self.file.write_all_at(&buf[..n], offset).is_err()
            {
                return STATUS_IOERR;
            }
            offset += n as u64;
            left -= n;
        }
        STATUS_OK
    }
}
