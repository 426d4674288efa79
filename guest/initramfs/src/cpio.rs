//! The cpio "newc" format, as the kernel's initramfs unpacker reads it.

use anyhow::{ensure, Result};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

struct Entry<'a> {
    name: &'a str,
    mode: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

/// The whole initramfs (uncompressed: the kernel unpacks it faster than it would
/// decompress it under emulation, and the agent is small).
pub fn initramfs(agent: &[u8]) -> Result<Vec<u8>> {
    let mut entries = Vec::new();
    for dir in ["dev", "proc", "sys", "run", "tmp"] {
        entries.push(Entry {
            name: dir,
            mode: S_IFDIR | 0o755,
            rdev: (0, 0),
            data: &[],
        });
    }
    entries.push(Entry {
        name: "dev/console",
        mode: S_IFCHR | 0o600,
        rdev: (5, 1),
        data: &[],
    });
    entries.push(Entry {
        name: "init",
        mode: S_IFREG | 0o755,
        rdev: (0, 0),
        data: agent,
    });
    let mut out = Vec::with_capacity(agent.len() + 4096);
    for (ino, e) in entries.iter().enumerate() {
        write_entry(&mut out, u32::try_from(ino + 1)?, e)?;
    }
    write_entry(
        &mut out,
        0,
        &Entry {
            name: "TRAILER!!!",
            mode: 0,
            rdev: (0, 0),
            data: &[],
        },
    )?;
    pad(&mut out, 512);
    Ok(out)
}

fn write_entry(out: &mut Vec<u8>, ino: u32, e: &Entry<'_>) -> Result<()> {
    let size = u32::try_from(e.data.len())?;
    let namesize = u32::try_from(e.name.len() + 1)?;
    ensure!(!e.name.contains('\0'), "NUL in cpio name");
    let nlink = if e.mode & S_IFDIR != 0 { 2 } else { 1 };
    let fields = [
        ino, e.mode, 0, 0, nlink, 0, size, 0, 0, e.rdev.0, e.rdev.1, namesize, 0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(e.name.as_bytes());
    out.push(0);
    pad(out, 4);
    out.extend_from_slice(e.data);
    pad(out, 4);
    Ok(())
}

fn pad(out: &mut Vec<u8>, align: usize) {
    while !out.len().is_multiple_of(align) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_terminated() {
        let a = initramfs(b"\x7fELFfake").unwrap();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 512, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("dev/console"));
        assert!(text.contains("TRAILER!!!"));
        // The agent bytes follow the "init" name padded to 4 bytes.
        let pos = a.windows(8).position(|w| w == b"\x7fELFfake").unwrap();
        assert_eq!(pos % 4, 0);
    }

    /// Parses the archive back with the newc rules to check every header.
    #[test]
    fn headers_parse_back() {
        let a = initramfs(&[1, 2, 3]).unwrap();
        let mut off = 0;
        let mut names = Vec::new();
        loop {
            assert_eq!(&a[off..off + 6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&a[off + 6 + i * 8..off + 14 + i * 8]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (filesize, namesize) = (field(6), field(11));
            let name_start = off + 110;
            let name = std::str::from_utf8(&a[name_start..name_start + namesize - 1])
                .unwrap()
                .to_owned();
            let data_start = (name_start + namesize).next_multiple_of(4);
            off = (data_start + filesize).next_multiple_of(4);
            if name == "TRAILER!!!" {
                break;
            }
            names.push(name);
        }
        assert_eq!(
            names,
            ["dev", "proc", "sys", "run", "tmp", "dev/console", "init"]
        );
    }
}
