//! Shared directories (`skiff run -v`): virtio-fs (virtiofsd, the default) against
//! virtio-9p (QEMU's server, `SKIFF_QEMU_DEVICES=qemu`) on the QEMU backend, measured
//! inside the container with the guest clock (/proc/uptime, 10 ms resolution):
//! sequential write of a new file (dd, 1 MiB blocks, fsync), sequential read of a
//! file the host wrote (cold in the guest's cache), and a metadata workload that
//! creates 1000 empty files and then stats them all (`ls -l`).
//!
//!   cargo build --release -p skiff-cli && cargo run --release -p skiff-bench --bin sharedfs [-- RUNS [MIB]]
//!
//! The skiff binary is `$SKIFF_BIN` or the one beside this benchmark.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use skiff_bench::print_table;

const FILES: u32 = 1000;

fn skiff_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("skiff")))
        .unwrap_or_else(|| PathBuf::from("skiff"))
}

/// Guest-side seconds for each workload.
#[derive(Debug, Clone, Copy)]
struct Sample {
    write: f64,
    read: f64,
    create: f64,
    stat: f64,
}

fn script(mib: u32) -> String {
    format!(
        "t() {{ cut -d' ' -f1 /proc/uptime; }}; \
         a=$(t); dd if=/dev/zero of=/data/written bs=1M count={mib} conv=fsync 2>/dev/null; b=$(t); \
         dd if=/data/from-host of=/dev/null bs=1M 2>/dev/null; c=$(t); \
         mkdir /data/m; i=0; while [ $i -lt {FILES} ]; do : > /data/m/f$i; i=$((i+1)); done; d=$(t); \
         ls -l /data/m > /dev/null; e=$(t); \
         echo $a $b $c $d $e"
    )
}

fn run_once(root: &Path, share: &Path, devices: &str, mib: u32) -> Result<Sample> {
    // A fresh directory each run: nothing cached from the previous VM or file names.
    let _ = std::fs::remove_dir_all(share);
    std::fs::create_dir_all(share)?;
    std::fs::write(share.join("from-host"), vec![0x5au8; (mib as usize) << 20])?;
    let bind = format!("{}:/data", share.display());
    let out = Command::new(skiff_bin())
        .arg("--root")
        .arg(root)
        .args([
            "run",
            "--rm",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            &script(mib),
        ])
        .env("SKIFF_QEMU_DEVICES", devices)
        .env("SKIFF_HYPERVISOR", "qemu")
        .stdin(Stdio::null())
        .output()
        .context("run skiff")?;
    if !out.status.success() {
        bail!(
            "skiff run ({devices}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let t: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected output {text:?}"))?;
    let [a, b, c, d, e] = t[..] else {
        bail!("unexpected output {text:?}");
    };
    let files = std::fs::read_dir(share.join("m"))?.count();
    if files != FILES as usize
        || std::fs::metadata(share.join("written"))?.len() != u64::from(mib) << 20
    {
        bail!("the guest's files did not all reach the host ({files} files)");
    }
    Ok(Sample {
        write: b - a,
        read: c - b,
        create: d - c,
        stat: e - d,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let mib: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let root = tempfile::Builder::new()
        .prefix("skiff-sharedfs")
        .tempdir_in("/tmp")?;
    let share = root.path().join("share");
    let mut rows = Vec::new();
    for (name, devices) in [
        ("virtio-fs (virtiofsd)", "skiff"),
        ("virtio-9p (QEMU)", "qemu"),
    ] {
        let mut samples = Vec::new();
        for _ in 0..runs {
            samples.push(run_once(root.path(), &share, devices, mib)?);
        }
        let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let rate = |secs: f64| format!("{:.0}", f64::from(mib) / secs.max(0.01));
        let per_file = |secs: f64| format!("{:.0}", secs * 1e6 / f64::from(FILES));
        rows.push(vec![
            name.to_owned(),
            rate(m(|s| s.write)),
            rate(m(|s| s.read)),
            per_file(m(|s| s.create)),
            per_file(m(|s| s.stat)),
        ]);
    }
    println!("{runs} runs each (median), {mib} MiB files, {FILES} small files, QEMU backend");
    print_table(
        &[
            "mechanism",
            "seq write MB/s",
            "seq read MB/s",
            "create us/file",
            "stat us/file",
        ],
        &rows,
    );
    Ok(())
}
