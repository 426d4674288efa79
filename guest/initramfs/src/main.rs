//! `skiff-mkinitramfs AGENT OUT`: writes the guest initramfs, a gzip-compressed cpio
//! (newc) archive holding the agent as `/init`, the directories it mounts on, and the
//! `/dev/console` node the kernel opens for PID 1's stdio. Written directly, so it
//! needs neither root (for mknod) nor a cpio tool, and is byte-for-byte reproducible.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

mod cpio;

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [agent, out] = args.as_slice() else {
        bail!("usage: skiff-mkinitramfs AGENT_BINARY OUTPUT.cpio");
    };
    let agent_bytes =
        std::fs::read(agent).with_context(|| format!("read agent {}", agent.display()))?;
    let archive = cpio::initramfs(&agent_bytes)?;
    let tmp = out.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(&archive)?;
    f.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("rename to {}", out.display()))?;
    println!("{} ({} bytes)", out.display(), archive.len());
    Ok(())
}
