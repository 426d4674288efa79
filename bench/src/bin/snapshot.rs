//! skiff-vmm snapshot and restore with the test guest, against a cold start of the
//! same guest. Prints a table.
//!
//! The guest fills M MiB of RAM, does one step of its job and waits at a gate (it polls
//! a disk block). "Cold start" is spawn of `skiff-vmm run` until the guest says it is
//! at the gate; "snapshot" is the `snapshot DIR exit` request over the API socket
//! (the VMM's own pause and save times are in its reply); "restore to running" is
//! spawn of `skiff-vmm restore` until the restored guest, whose disk copy has the gate
//! open, says it carries on. The guest is at the same point in both, so the ratio is
//! what a snapshot saves over booting and redoing the work.
//!
//! `snapshot qemu [RUNS]` measures the QEMU backend's snapshot restore instead (see
//! `snapshot/qemu.rs`).
//!
//! Needs `skiff-vmm` (env `SKIFF_VMM`, else next to this binary: build it with
//! `cargo build --release -p skiff-vmm`) and the test guest (env `SKIFF_TESTGUEST`,
//! else `guest/testguest/build.sh`). Optional: `SKIFF_BENCH_RUNS` (default 5),
//! `SKIFF_BENCH_SNAPMIB` (comma-separated MiB of guest RAM to fill, default `1,16`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_bench::{ms, percentile, print_table};

#[path = "snapshot/qemu.rs"]
mod qemu;

/// Longest any single phase may take on a busy machine.
const PATIENCE: Duration = Duration::from_secs(600);
const GATE_OFFSET: u64 = 16 * 4096;
const MEMORY_MIB: u64 = 128;

fn vmm_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SKIFF_VMM") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    match exe.parent().map(|d| d.join("skiff-vmm")) {
        Some(p) if p.is_file() => Ok(p),
        _ => bail!("skiff-vmm not found: set SKIFF_VMM or `cargo build --release -p skiff-vmm`"),
    }
}

fn testguest() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SKIFF_TESTGUEST") {
        return Ok(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/testguest/build.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .context("run guest/testguest/build.sh")?;
    if !out.status.success() {
        bail!("guest/testguest/build.sh failed");
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// A VMM whose console (stdout) lines arrive with the time they were read.
struct Vmm {
    child: Child,
    lines: Receiver<(Instant, String)>,
    stderr: PathBuf,
}

impl Vmm {
    fn spawn(vmm: &Path, args: &[String], stderr: PathBuf) -> Result<(Self, Instant)> {
        let start = Instant::now();
        let mut child = Command::new(vmm)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .context("spawn skiff-vmm")?;
        let stdout = child.stdout.take().context("stdout pipe")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok((
            Self {
                child,
                lines,
                stderr,
            },
            start,
        ))
    }

    /// When the console first printed a line containing `needle`.
    fn wait_line(&mut self, needle: &str) -> Result<Instant> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(needle) => return Ok(at),
                Ok(_) => {}
                Err(_) => bail!(
                    "no `{needle}` on the console; stderr: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }

    fn finish(mut self) -> Result<()> {
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "skiff-vmm: {status}: {}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn api_call(socket: &Path, request: &str) -> Result<String> {
    let mut stream = UnixStream::connect(socket).context("connect API socket")?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    if !reply.starts_with("ok ") {
        bail!("`{request}`: {reply:?}");
    }
    Ok(reply.trim_end().to_string())
}

fn json_u64(reply: &str, key: &str) -> Result<u64> {
    let body = reply.strip_prefix("ok ").context("reply")?;
    let v: serde_json::Value = serde_json::from_str(body)?;
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("no {key} in {body}"))
}

#[derive(Default)]
struct Samples {
    cold: Vec<Duration>,
    snapshot: Vec<Duration>,
    pause: Vec<Duration>,
    save: Vec<Duration>,
    restore: Vec<Duration>,
    memory_bytes: u64,
    memory_allocated: u64,
    state_bytes: u64,
}

fn one_run(vmm: &Path, guest: &Path, dir: &Path, mib: u64, s: &mut Samples) -> Result<()> {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)?.set_len(1 << 20)?;
    let socket = dir.join("api.sock");
    let snap = dir.join("snap");
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_dir_all(&snap);
    let job = format!("testguest.snapwork=2 testguest.snapmib={mib} testguest.snapgate=1");
    let args: Vec<String> = [
        "run",
        "--kernel",
        &guest.display().to_string(),
        "--memory-mib",
        &MEMORY_MIB.to_string(),
        "--cmdline",
        &job,
        "--disk",
        &disk.display().to_string(),
        "--api-socket",
        &socket.display().to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (mut original, start) = Vmm::spawn(vmm, &args, dir.join("original.stderr"))?;
    let ready = original.wait_line("snapwork waiting at step 1")?;
    s.cold.push(ready - start);

    let before = Instant::now();
    let reply = api_call(&socket, &format!("snapshot {} exit", snap.display()))?;
    s.snapshot.push(before.elapsed());
    s.pause
        .push(Duration::from_micros(json_u64(&reply, "pause_us")?));
    s.save
        .push(Duration::from_micros(json_u64(&reply, "save_us")?));
    s.memory_bytes = json_u64(&reply, "memory_bytes")?;
    s.memory_allocated = json_u64(&reply, "memory_allocated_bytes")?;
    s.state_bytes = json_u64(&reply, "state_bytes")?;
    original.finish()?;

    let copy = dir.join("restore.img");
    std::fs::copy(&disk, &copy)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)?
        .write_all_at(b"SNAPGO!!", GATE_OFFSET)?;
    let args: Vec<String> = [
        "restore",
        "--snapshot",
        &snap.display().to_string(),
        "--disk",
        &copy.display().to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (mut restored, start) = Vmm::spawn(vmm, &args, dir.join("restore.stderr"))?;
    let running = restored.wait_line("snapwork gate open")?;
    s.restore.push(running - start);
    // The rest of the job (a pass over the filled RAM) is not measured.
    drop(restored);
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("qemu") {
        let runs = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(5);
        return qemu::main(runs);
    }
    let vmm = vmm_binary()?;
    let guest = testguest()?;
    let runs: usize = std::env::var("SKIFF_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let sizes: Vec<u64> = std::env::var("SKIFF_BENCH_SNAPMIB")
        .unwrap_or_else(|_| "1,16".into())
        .split(',')
        .map(|v| v.trim().parse().context("SKIFF_BENCH_SNAPMIB"))
        .collect::<Result<_>>()?;
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for &mib in &sizes {
        let mut s = Samples::default();
        for _ in 0..runs {
            one_run(&vmm, &guest, tmp.path(), mib, &mut s)
                .with_context(|| format!("{mib} MiB filled"))?;
        }
        let cold = percentile(&s.cold, 50.0);
        let restore = percentile(&s.restore, 50.0);
        rows.push(vec![
            format!("{mib} MiB"),
            ms(cold),
            format!(
                "{} ({} + {})",
                ms(percentile(&s.snapshot, 50.0)),
                ms(percentile(&s.pause, 50.0)),
                ms(percentile(&s.save, 50.0))
            ),
            ms(restore),
            format!("{:.1}x", cold.as_secs_f64() / restore.as_secs_f64()),
            format!(
                "{} / {:.1}",
                s.memory_bytes >> 20,
                s.memory_allocated as f64 / f64::from(1 << 20)
            ),
            format!("{:.1}", s.state_bytes as f64 / 1024.0),
        ]);
    }
    println!(
        "skiff-vmm snapshot/restore, test guest with {MEMORY_MIB} MiB RAM, 1 vCPU, 1 disk \
         (this machine: KVM = PVM, 2 cores; p50 of {runs} runs)"
    );
    print_table(
        &[
            "guest RAM filled",
            "cold start to ready (ms)",
            "snapshot (ms: pause + save)",
            "restore to running (ms)",
            "cold / restore",
            "memory file MiB (size / on disk)",
            "state file KiB",
        ],
        &rows,
    );
    Ok(())
}
