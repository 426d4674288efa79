//! Layer conversion with the decompressor on its own thread
//! (`layerdisk::convert`): compressed and uncompressed layers give the same
//! image byte for byte; corrupt, truncated, mislabelled and hostile streams
//! fail with the right error and leave nothing behind.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

use std::io::{BufReader, Cursor};
use std::path::Path;

use skiff_image::store::layerdisk;
use skiff_image::store::Compression;
use skiff_image::{Digest, Error, Store};

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    (d, s)
}

/// A layer of a few MB: spans many 1 MiB hand-over chunks.
fn layer() -> Vec<u8> {
    let big: Vec<u8> = (0..1_500_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes())
        .collect();
    let text = "some text that compresses well\n".repeat(40_000);
    tar_of(&[
        E::Dir("etc"),
        E::File("etc/big", &big),
        E::File("etc/text", text.as_bytes()),
        E::Symlink("etc/link", "big"),
        E::File("small", b"hello"),
    ])
}

fn convert(
    s: &Store,
    blob: Vec<u8>,
    c: Compression,
    diff_id: &Digest,
    out: &Path,
) -> skiff_image::Result<skiff_image::unpack::UnpackStats> {
    layerdisk::convert(
        s,
        Box::new(BufReader::new(Cursor::new(blob))),
        c,
        diff_id,
        out,
    )
}

fn leftovers(s: &Store) -> usize {
    std::fs::read_dir(s.tmp_dir()).map_or(0, |d| d.count())
}

#[test]
fn gzip_and_zstd_layers_give_the_same_image_as_the_plain_tar() {
    let (_d, s) = store();
    let tar = layer();
    let diff_id = Digest::of(&tar);
    let plain = s.root().join("plain.erofs");
    let st = convert(&s, tar.clone(), Compression::None, &diff_id, &plain).unwrap();
    assert_eq!(st.bytes, tar.len() as u64);
    let want = std::fs::read(&plain).unwrap();
    let gz = s.root().join("gz.erofs");
    convert(&s, gzip(&tar), Compression::Gzip, &diff_id, &gz).unwrap();
    assert!(std::fs::read(&gz).unwrap() == want, "gzip image differs");
    let zs = s.root().join("zstd.erofs");
    let z = zstd::encode_all(&tar[..], 1).unwrap();
    convert(&s, z, Compression::Zstd, &diff_id, &zs).unwrap();
    assert!(std::fs::read(&zs).unwrap() == want, "zstd image differs");
    assert_eq!(leftovers(&s), 0);
}

#[test]
fn corrupt_truncated_and_mislabelled_streams_leave_nothing() {
    let (_d, s) = store();
    let tar = layer();
    let diff_id = Digest::of(&tar);
    let gz = gzip(&tar);
    let out = s.root().join("layer.erofs");

    let mut corrupt = gz.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 64].fill(0x55);
    let e = convert(&s, corrupt, Compression::Gzip, &diff_id, &out).unwrap_err();
    assert!(!matches!(e, Error::HostileLayer(_)), "corrupt gzip: {e}");

    let truncated = gz[..gz.len() * 2 / 3].to_vec();
    convert(&s, truncated, Compression::Gzip, &diff_id, &out).unwrap_err();

    let other = Digest::of(b"another layer");
    let e = convert(&s, gz, Compression::Gzip, &other, &out).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");

    assert!(!out.exists());
    assert_eq!(leftovers(&s), 0);
}

#[test]
fn hostile_tars_are_refused_through_the_inflating_thread() {
    let (_d, s) = store();
    let out = s.root().join("layer.erofs");
    for (name, tar) in hostile_tars() {
        let e = convert(&s, gzip(&tar), Compression::Gzip, &Digest::of(&tar), &out).unwrap_err();
        assert!(
            matches!(e, Error::HostileLayer(_) | Error::LimitExceeded(_)),
            "{name}: {e}"
        );
        assert!(!out.exists(), "{name}");
    }
    assert_eq!(leftovers(&s), 0);
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Store::open(d.path()).unwrap();
    s.limits.max_layer_uncompressed = 1 << 20;
    // 8 MiB of zeros inside one file: compresses to a few KiB.
    let zeros = vec![0u8; 8 << 20];
    let tar = tar_of(&[E::File("bomb", &zeros)]);
    let out = d.path().join("bomb.erofs");
    let e = layerdisk::convert(
        &s,
        Box::new(Cursor::new(gzip(&tar))),
        Compression::Gzip,
        &Digest::of(&tar),
        &out,
    )
    .unwrap_err();
    assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
    assert!(!out.exists());
}
