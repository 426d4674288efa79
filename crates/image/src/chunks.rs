//! Handing a byte stream from one thread to another in owned buffers: the
//! producer fills a buffer and moves it over a bounded channel, the consumer
//! reads it as an `io::Read` and hands the buffer back for reuse. Unlike a
//! pipe this costs no copies through the kernel, and the end of the stream
//! is explicit: a producer that goes away without `finish` shows up as an
//! error, never as a clean (truncated) end.
//!
//! Used twice per layer on a pull: download -> converter (the compressed
//! blob as it arrives) and decompressor -> tar/erofs writer (so inflating
//! and hashing + writing run on two cores).

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

/// Buffers in flight between the two sides.
const DEPTH: usize = 4;

enum Msg {
    Data(Vec<u8>, usize),
    End,
    Failed(io::Error),
}

/// The producing side.
pub struct ChunkSender {
    tx: SyncSender<Msg>,
    back: Receiver<Vec<u8>>,
    size: usize,
}

/// The consuming side: an `io::Read` over the chunks sent.
pub struct ChunkReader {
    rx: Receiver<Msg>,
    back: Sender<Vec<u8>>,
    cur: Vec<u8>,
    len: usize,
    pos: usize,
    ended: bool,
}

/// A connected pair handing over buffers of `size` bytes.
pub fn channel(size: usize) -> (ChunkSender, ChunkReader) {
    let (tx, rx) = mpsc::sync_channel(DEPTH);
    let (back_tx, back_rx) = mpsc::channel();
    (
        ChunkSender {
            tx,
            back: back_rx,
            size: size.max(1),
        },
        ChunkReader {
            rx,
            back: back_tx,
            cur: Vec::new(),
            len: 0,
            pos: 0,
            ended: false,
        },
    )
}

impl ChunkSender {
    /// An empty buffer to fill (a returned one when there is one); its
    /// length is the chunk size.
    pub fn buffer(&self) -> Vec<u8> {
        match self.back.try_recv() {
            Ok(b) => b,
            Err(_) => vec![0; self.size],
        }
    }

    /// Hand over the first `len` bytes of `buf`. False when the reader has
    /// gone away (it stopped; it reports why itself).
    pub fn send(&self, buf: Vec<u8>, len: usize) -> bool {
        let len = len.min(buf.len());
        self.tx.send(Msg::Data(buf, len)).is_ok()
    }

    /// The stream ended cleanly.
    pub fn finish(self) {
        let _ = self.tx.send(Msg::End);
    }

    /// The stream failed: the reader gets this error.
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.send(Msg::Failed(e));
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let avail = self.fill_buf()?;
        let n = out.len().min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Readers that take a `BufRead` (the decompressors) read the chunks in
/// place, without copying them into a buffer of their own.
impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.len {
            if self.ended {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Msg::Data(buf, len)) => {
                    let old = std::mem::replace(&mut self.cur, buf);
                    if !old.is_empty() {
                        let _ = self.back.send(old);
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Msg::End) => self.ended = true,
                Ok(Msg::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream interrupted",
                    ))
                }
            }
        }
        Ok(&self.cur[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

/// Read `r` to its end on the calling thread, sending it in chunks. Stops
/// early (returning) when the reader goes away.
pub fn pump(mut r: impl Read, tx: ChunkSender) {
    loop {
        let mut buf = tx.buffer();
        let mut filled = 0;
        while filled < buf.len() {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return tx.fail(e),
            }
        }
        if filled == 0 {
            return tx.finish();
        }
        let last = filled < buf.len();
        if !tx.send(buf, filled) {
            return;
        }
        if last {
            return tx.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn passes_a_stream_through_unchanged() {
        for n in [0, 1, 999, 1000, 1001, 12_345] {
            let data = bytes(n);
            let (tx, mut rx) = channel(1000);
            let out = std::thread::scope(|s| {
                s.spawn(|| pump(&data[..], tx));
                let mut out = Vec::new();
                rx.read_to_end(&mut out).unwrap();
                out
            });
            assert_eq!(out, data, "{n} bytes");
        }
    }

    #[test]
    fn reads_in_place_as_bufread() {
        let data = bytes(2500);
        let (tx, mut rx) = channel(1000);
        std::thread::scope(|s| {
            s.spawn(|| pump(&data[..], tx));
            let mut out = Vec::new();
            loop {
                let b = rx.fill_buf().unwrap();
                if b.is_empty() {
                    break;
                }
                assert!(b.len() <= 1000);
                let n = b.len().min(300);
                out.extend_from_slice(&b[..n]);
                rx.consume(n);
            }
            assert_eq!(out, data);
        });
    }

    #[test]
    fn a_vanished_producer_is_an_error_not_an_end() {
        let (tx, mut rx) = channel(10);
        let b = tx.buffer();
        assert!(tx.send(b, 4));
        drop(tx);
        let mut out = Vec::new();
        let e = rx.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn a_failed_producer_passes_its_error() {
        struct Bad(bool);
        impl Read for Bad {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt gzip"))
                } else {
                    b[0] = 1;
                    Ok(1)
                }
            }
        }
        let (tx, mut rx) = channel(1);
        std::thread::scope(|s| {
            s.spawn(|| pump(Bad(false), tx));
            let mut out = Vec::new();
            let e = rx.read_to_end(&mut out).unwrap_err();
            assert_eq!(e.to_string(), "corrupt gzip");
            assert_eq!(out, [1]);
        });
    }

    #[test]
    fn producer_stops_when_the_reader_goes_away() {
        // An endless source: pump must return once the reader is dropped.
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                b.fill(7);
                Ok(b.len())
            }
        }
        let (tx, mut rx) = channel(64);
        std::thread::scope(|s| {
            let h = s.spawn(|| pump(Endless, tx));
            let mut first = [0u8; 10];
            rx.read_exact(&mut first).unwrap();
            drop(rx);
            h.join().unwrap();
        });
    }
}
