//! Layer blobs as the registry and archives give them (plain, gzip or zstd tar) and
//! the readers that undo the compression.

use std::io::{BufRead, BufReader, Read};

use crate::error::{Error, IoContext, Result};

/// Layer compression media types we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_media_type(mt: &str) -> Result<Self> {
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") || mt.ends_with("tar.gzip") {
            Ok(Self::Gzip)
        } else if mt.ends_with("+zstd") {
            Ok(Self::Zstd)
        } else if mt.ends_with(".tar") || mt.ends_with("diff.tar") {
            Ok(Self::None)
        } else {
            Err(Error::Unsupported(format!("layer media type {mt}")))
        }
    }
}

/// A decompressing reader for a layer blob.
pub fn decompress<'a>(r: Box<dyn Read + 'a>, c: Compression) -> Result<Box<dyn Read + 'a>> {
    decompress_buffered(BufReader::with_capacity(1 << 20, r), c)
}

/// `decompress` reading straight from the caller's buffer.
pub fn decompress_buffered<'a>(r: impl BufRead + 'a, c: Compression) -> Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(r).ctx(|| "start zstd decoder".to_owned())?,
        ),
    })
}
