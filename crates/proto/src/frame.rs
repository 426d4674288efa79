//! Framing: a fixed header, then a bounded payload.

use std::io::{self, Read, Write};

use crate::message::Message;

/// Header: payload length (u32 BE), kind (u8), stream id (u32 BE).
pub const HEADER_LEN: usize = 9;

/// Largest payload either side accepts. Stdio is chunked well below this; a control
/// message (a process spec with its environment) fits with room to spare.
pub const MAX_PAYLOAD: usize = 1 << 20;

const KIND_CONTROL: u8 = 1;

/// Which stdio stream a data frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// Host -> guest. An empty payload closes the process's stdin.
    Stdin = 2,
    /// Guest -> host. With a terminal, all output arrives as stdout.
    Stdout = 3,
    /// Guest -> host.
    Stderr = 4,
}

impl DataKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            2 => Some(Self::Stdin),
            3 => Some(Self::Stdout),
            4 => Some(Self::Stderr),
            _ => None,
        }
    }
}

/// One unit on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Control(Message),
    Data {
        kind: DataKind,
        stream: u32,
        bytes: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed control message: {0}")]
    BadMessage(#[from] serde_json::Error),
}

/// Reads one frame. `Ok(None)` is a clean end of stream at a frame boundary.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    if !read_exact_or_eof(r, &mut header)? {
        return Ok(None);
    }
    let [l0, l1, l2, l3, kind, s0, s1, s2, s3] = header;
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    let stream = u32::from_be_bytes([s0, s1, s2, s3]);
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    // Validate the kind before reading (and allocating for) the payload.
    let data_kind = match kind {
        KIND_CONTROL => None,
        other => Some(DataKind::from_byte(other).ok_or(FrameError::UnknownKind(other))?),
    };
    let mut payload = vec![0u8; len];
    if len > 0 && !read_exact_or_eof(r, &mut payload)? {
        return Err(FrameError::Truncated);
    }
    Ok(Some(match data_kind {
        None => Frame::Control(serde_json::from_slice(&payload)?),
        Some(kind) => Frame::Data {
            kind,
            stream,
            bytes: payload,
        },
    }))
}

/// Writes one frame as a single `write_all` so frames from several threads sharing a
/// locked writer never interleave.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> Result<(), FrameError> {
    let (kind, stream, payload): (u8, u32, std::borrow::Cow<'_, [u8]>) = match frame {
        Frame::Control(msg) => (KIND_CONTROL, 0, serde_json::to_vec(msg)?.into()),
        Frame::Data {
            kind,
            stream,
            bytes,
        } => (*kind as u8, *stream, bytes.as_slice().into()),
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge(payload.len()))?;
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.push(kind);
    buf.extend_from_slice(&stream.to_be_bytes());
    buf.extend_from_slice(&payload);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Fills `buf` completely; `Ok(false)` if the stream ended before the first byte,
/// `Truncated` if it ended part-way.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        match r.read(rest) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ExitStatus, Message};
    use std::io::Cursor;

    fn roundtrip(frame: Frame) -> Frame {
        let mut buf = Vec::new();
        write_frame(&mut buf, &frame).unwrap();
        read_frame(&mut Cursor::new(buf)).unwrap().unwrap()
    }

    #[test]
    fn control_and_data_roundtrip() {
        let ctl = Frame::Control(Message::Exited {
            stream: 7,
            status: ExitStatus::Signaled(9),
        });
        assert_eq!(roundtrip(ctl.clone()), ctl);
        let data = Frame::Data {
            kind: DataKind::Stderr,
            stream: 3,
            bytes: b"oops\n".to_vec(),
        };
        assert_eq!(roundtrip(data.clone()), data);
        let eof = Frame::Data {
            kind: DataKind::Stdin,
            stream: 1,
            bytes: vec![],
        };
        assert_eq!(roundtrip(eof.clone()), eof);
    }

    #[test]
    fn clean_eof_is_none() {
        assert!(read_frame(&mut Cursor::new(Vec::new())).unwrap().is_none());
    }

    #[test]
    fn truncated_header_and_payload_are_errors() {
        let err = read_frame(&mut Cursor::new(vec![0, 0, 0])).unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &Frame::Data {
                kind: DataKind::Stdout,
                stream: 1,
                bytes: vec![1; 100],
            },
        )
        .unwrap();
        buf.truncate(50);
        assert!(matches!(
            read_frame(&mut Cursor::new(buf)).unwrap_err(),
            FrameError::Truncated
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut hdr = vec![0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0, 1];
        hdr.extend_from_slice(b"x");
        assert!(matches!(
            read_frame(&mut Cursor::new(hdr)).unwrap_err(),
            FrameError::TooLarge(_)
        ));
    }

    #[test]
    fn unknown_kind_and_bad_json_are_errors() {
        let hdr = vec![0, 0, 0, 0, 99, 0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut Cursor::new(hdr)).unwrap_err(),
            FrameError::UnknownKind(99)
        ));
        let mut bad = vec![0, 0, 0, 5, KIND_CONTROL, 0, 0, 0, 0];
        bad.extend_from_slice(b"{nope");
        assert!(matches!(
            read_frame(&mut Cursor::new(bad)).unwrap_err(),
            FrameError::BadMessage(_)
        ));
        let mut unknown = Vec::new();
        let body = br#"{"type":"launch_missiles"}"#;
        unknown.extend_from_slice(&(body.len() as u32).to_be_bytes());
        unknown.push(KIND_CONTROL);
        unknown.extend_from_slice(&[0, 0, 0, 0]);
        unknown.extend_from_slice(body);
        assert!(read_frame(&mut Cursor::new(unknown)).is_err());
    }

    /// Every prefix and every single-byte corruption of a valid stream either decodes
    /// or errors; none panics.
    #[test]
    fn corrupted_streams_never_panic() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &Frame::Control(Message::Hello {
                version: 1,
                uptime_ms: Some(12),
            }),
        )
        .unwrap();
        write_frame(
            &mut buf,
            &Frame::Data {
                kind: DataKind::Stdout,
                stream: 2,
                bytes: b"hello".to_vec(),
            },
        )
        .unwrap();
        for cut in 0..buf.len() {
            let mut c = Cursor::new(buf[..cut].to_vec());
            while let Ok(Some(_)) = read_frame(&mut c) {}
        }
        for i in 0..buf.len() {
            for x in [0u8, 1, 0x7f, 0xff] {
                let mut b = buf.clone();
                b[i] ^= x;
                let mut c = Cursor::new(b);
                while let Ok(Some(_)) = read_frame(&mut c) {}
            }
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes from a hostile peer: decoding ends in frames, a clean end
        /// or an error, never a panic, and never reads past what was sent.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let len = bytes.len() as u64;
            let mut c = Cursor::new(bytes);
            while let Ok(Some(_)) = read_frame(&mut c) {}
            prop_assert!(c.position() <= len);
        }

        /// A valid header followed by arbitrary JSON-ish payloads.
        #[test]
        fn arbitrary_control_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
            buf.push(KIND_CONTROL);
            buf.extend_from_slice(&[0, 0, 0, 0]);
            buf.extend_from_slice(&payload);
            let _ = read_frame(&mut Cursor::new(buf));
        }

        /// Data frames of any kind, stream and content survive a round trip.
        #[test]
        fn data_frames_roundtrip(stream in any::<u32>(), bytes in proptest::collection::vec(any::<u8>(), 0..2048), k in 0u8..3) {
            let kind = [DataKind::Stdin, DataKind::Stdout, DataKind::Stderr][k as usize];
            let f = Frame::Data { kind, stream, bytes };
            let mut buf = Vec::new();
            write_frame(&mut buf, &f).unwrap();
            prop_assert_eq!(read_frame(&mut Cursor::new(buf)).unwrap(), Some(f));
        }
    }
}
