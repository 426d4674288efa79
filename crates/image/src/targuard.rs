//! A reader that watches a tar stream's headers before the `tar` crate sees
//! them. The crate reads GNU long names and PAX records fully into memory, so
//! an enormous extension header would exhaust memory: this guard refuses it
//! first. It also caps the uncompressed size (decompression bombs) and the
//! number of entries.

use std::io::{self, Read};

/// Why the guard stopped the stream; carried inside the `io::Error`.
#[derive(Debug)]
pub struct Violation {
    pub hostile: bool,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Violation {}

/// Find a guard violation inside an error chain from the tar crate.
pub fn violation(e: &io::Error) -> Option<&Violation> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while let Some(err) = cur {
        if let Some(v) = err.downcast_ref::<Violation>() {
            return Some(v);
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(v) = io.get_ref().and_then(|r| r.downcast_ref::<Violation>()) {
                return Some(v);
            }
        }
        cur = err.source();
    }
    None
}

pub struct TarGuard<R> {
    inner: R,
    block: Vec<u8>,
    /// Bytes of entry data (with padding) still to pass before the next header.
    data_left: u64,
    /// Data of a GNU sparse entry, deferred until its extension blocks pass.
    sparse_data: Option<u64>,
    /// PAX record being captured (to learn the next entry's `size`).
    pax: Option<(Vec<u8>, u64)>,
    pax_size: Option<u64>,
    total: u64,
    entries: u64,
    max_total: u64,
    max_entries: u64,
    max_extension: u64,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R, max_total: u64, max_entries: u64, max_extension: u64) -> Self {
        Self {
            inner,
            block: Vec::with_capacity(512),
            data_left: 0,
            sparse_data: None,
            pax: None,
            pax_size: None,
            total: 0,
            entries: 0,
            max_total,
            max_entries,
            max_extension,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn stop(hostile: bool, message: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, Violation { hostile, message })
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.data_left > 0 {
                let take =
                    usize::try_from(self.data_left.min(bytes.len() as u64)).unwrap_or(bytes.len());
                if let Some((buf, want)) = &mut self.pax {
                    let room = usize::try_from(*want)
                        .unwrap_or(0)
                        .saturating_sub(buf.len());
                    buf.extend_from_slice(&bytes[..take.min(room)]);
                }
                self.data_left -= take as u64;
                bytes = &bytes[take..];
                if self.data_left == 0 {
                    if let Some((buf, _)) = self.pax.take() {
                        self.pax_size = pax_size(&buf);
                    }
                }
                continue;
            }
            let take = (512 - self.block.len()).min(bytes.len());
            self.block.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.block.len() == 512 {
                let block = std::mem::replace(&mut self.block, Vec::with_capacity(512));
                self.on_block(&block)?;
            }
        }
        Ok(())
    }

    fn on_block(&mut self, h: &[u8]) -> io::Result<()> {
        if let Some(data) = self.sparse_data {
            // GNU sparse extension block: byte 504 says whether another follows.
            if h[504] == 0 {
                self.sparse_data = None;
                self.data_left = data;
            }
            return Ok(());
        }
        if h.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let kind = h[156];
        let mut size = parse_size(&h[124..136])
            .ok_or_else(|| Self::stop(true, "tar header with an unparsable size field".into()))?;
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g' | b'X');
        if extension {
            if size > self.max_extension {
                return Err(Self::stop(
                    true,
                    format!(
                        "tar extension header of {size} bytes (limit {})",
                        self.max_extension
                    ),
                ));
            }
            if kind == b'x' || kind == b'X' {
                self.pax = Some((Vec::new(), size));
            }
        } else {
            if let Some(s) = self.pax_size.take() {
                size = s;
            }
            self.entries += 1;
            if self.entries > self.max_entries {
                return Err(Self::stop(
                    false,
                    format!("more than {} entries in a layer", self.max_entries),
                ));
            }
        }
        let padded = size
            .checked_add(511)
            .map(|s| s / 512 * 512)
            .ok_or_else(|| Self::stop(true, "tar entry size overflows".into()))?;
        if padded > self.max_total {
            return Err(Self::stop(
                false,
                format!(
                    "tar entry of {size} bytes exceeds the layer limit of {} bytes",
                    self.max_total
                ),
            ));
        }
        if kind == b'S' && h[482] != 0 {
            self.sparse_data = Some(padded);
        } else {
            self.data_left = padded;
        }
        if self.pax.is_some() && padded == 0 {
            self.pax = None;
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.max_total {
            return Err(Self::stop(
                false,
                format!(
                    "layer expands beyond {} bytes (decompression bomb?)",
                    self.max_total
                ),
            ));
        }
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

/// Octal (NUL/space padded) or GNU base-256 size field.
fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(f[0] & 0x7f);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&s).ok()?;
    u64::from_str_radix(s, 8).ok()
}

/// The `size` record of a PAX extended header, if any.
fn pax_size(data: &[u8]) -> Option<u64> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return found;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(v) = rec.strip_prefix(b"size=") {
            found = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
        }
        rest = &rest[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size(b"00000001750\0"), Some(1000));
        assert_eq!(parse_size(b"\0\0\0\0\0\0\0\0\0\0\0\0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 5;
        assert_eq!(parse_size(&big), Some(5));
        big[1] = 0xff;
        big[2] = 0xff;
        assert_eq!(parse_size(&big), None);
        assert_eq!(pax_size(b"13 size=1234\n20 path=abcdefghijk\n"), Some(1234));
    }
}
