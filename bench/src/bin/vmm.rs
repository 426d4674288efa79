//! skiff-vmm with the bare-metal test guest: start-up latency, memory, density and
//! virtio-blk throughput as the guest sees it. Prints a table.
//!
//! Needs `skiff-vmm` (env `SKIFF_VMM`, else next to this binary: build it with
//! `cargo build --release -p skiff-vmm`) and the test guest (env `SKIFF_TESTGUEST`,
//! else `guest/testguest/build.sh`). Optional: `SKIFF_BENCH_RUNS` (default 50).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn vmm_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SKIFF_VMM") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let sibling = exe.parent().map(|d| d.join("skiff-vmm"));
    match sibling {
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

/// One VMM run: (stderr, wall time, max RSS in KiB, exit code).
struct Run {
    stderr: String,
    spawn_ns: u64,
    wall: Duration,
    max_rss_kib: i64,
    code: i32,
}

fn run_vmm(vmm: &Path, args: &[String]) -> Result<Run> {
    let spawn_ns = monotonic_ns();
    let start = Instant::now();
    let child = Command::new(vmm)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn skiff-vmm")?;
    let pid = i32::try_from(child.id()).unwrap_or(-1);
    let mut stderr_pipe = child.stderr.context("stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and usage are valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if rc != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let stderr = reader.join().unwrap_or_default();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok(Run {
        stderr,
        spawn_ns,
        wall,
        max_rss_kib: usage.ru_maxrss,
        code,
    })
}

fn field_ns(stderr: &str, prefix: &str) -> Option<u64> {
    stderr
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| {
            let i = l.find("monotonic ")? + "monotonic ".len();
            l[i..].split_whitespace().next()?.parse().ok()
        })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn base_args(guest: &Path) -> Vec<String> {
    [
        "run",
        "--kernel",
        &guest.display().to_string(),
        "--console",
        "off",
        "--report-boot-time",
        "--memory-mib",
        "128",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn main() -> Result<()> {
    let vmm = vmm_binary()?;
    let guest = testguest()?;
    let runs: usize = std::env::var("SKIFF_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // 1. Start-up: spawn to first guest instruction (boot timer), spawn to exit, RSS.
    let mut first_insn = Vec::new();
    let mut total = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let r = run_vmm(&vmm, &base_args(&guest))?;
        if r.code != 0 {
            bail!("test guest run failed ({}): {}", r.code, r.stderr);
        }
        let hit = field_ns(&r.stderr, "skiff-vmm: boot-timer").context("no boot-timer line")?;
        first_insn.push(hit.saturating_sub(r.spawn_ns) as f64 / 1e6);
        total.push(r.wall.as_secs_f64() * 1e3);
        rss.push(r.max_rss_kib as f64 / 1024.0);
    }
    for v in [&mut first_insn, &mut total, &mut rss] {
        v.sort_by(f64::total_cmp);
    }
    rows.push((
        "exec to first guest instruction".into(),
        format!(
            "p50 {:.2} ms, p95 {:.2} ms ({runs} runs)",
            percentile(&first_insn, 0.5),
            percentile(&first_insn, 0.95)
        ),
        "Firecracker 6-60 ms (typ. 12); target p50 <= 10 ms".into(),
    ));
    rows.push((
        "exec to VMM exit (boot + reset)".into(),
        format!(
            "p50 {:.2} ms, p95 {:.2} ms",
            percentile(&total, 0.5),
            percentile(&total, 0.95)
        ),
        "Firecracker here: 28 ms p50".into(),
    ));
    rows.push((
        "VMM max RSS (128 MiB guest)".into(),
        format!("p50 {:.2} MiB", percentile(&rss, 0.5)),
        "Firecracker <= 5 MiB overhead; here 4.1 MB".into(),
    ));

    // 2. Density: microVMs booted and torn down per second, 2 and 4 at a time.
    for parallel in [2usize, 4] {
        let per_worker = 25;
        let start = Instant::now();
        let workers: Vec<_> = (0..parallel)
            .map(|_| {
                let vmm = vmm.clone();
                let args = base_args(&guest);
                std::thread::spawn(move || -> Result<()> {
                    for _ in 0..per_worker {
                        let r = run_vmm(&vmm, &args)?;
                        if r.code != 0 {
                            bail!("run failed: {}", r.stderr);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        let rate = (parallel * per_worker) as f64 / start.elapsed().as_secs_f64();
        rows.push((
            format!("microVMs per second, {parallel} in parallel"),
            format!("{rate:.1} /s ({} VMs, 2 cores)", parallel * per_worker),
            "Firecracker 5 per core per s; target >= 10".into(),
        ));
    }

    // 3. virtio-blk seen by the guest: 4 KiB random reads and 1 MiB sequential reads.
    let dir = std::env::temp_dir().join(format!("skiff-bench-vmm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("disk.img");
    let size = 256usize << 20;
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&disk, &data)?;
    drop(data);
    let (reads, seq_mib) = (20_000u64, 512u64);
    let mut args = base_args(&guest);
    args.extend([
        "--disk".to_string(),
        format!("{},ro", disk.display()),
        "--cmdline".to_string(),
        format!("testguest.bench={reads} testguest.seqmib={seq_mib}"),
    ]);
    let r = run_vmm(&vmm, &args)?;
    let _ = std::fs::remove_dir_all(&dir);
    if r.code != 0 {
        bail!("block benchmark run failed ({}): {}", r.code, r.stderr);
    }
    let m =
        |v: u8| field_ns(&r.stderr, &format!("skiff-vmm: marker {v} ")).context("missing marker");
    let (m1, m2, m3) = (m(1)?, m(2)?, m(3)?);
    let iops = reads as f64 / ((m2 - m1) as f64 / 1e9);
    let mbps = (seq_mib as f64 * 1.048_576) / ((m3 - m2) as f64 / 1e9);
    rows.push((
        "virtio-blk 4 KiB random read (QD1, guest-polled)".into(),
        format!("{iops:.0} IOPS ({reads} reads, page-cached 256 MiB image)"),
        "-".into(),
    ));
    rows.push((
        "virtio-blk 1 MiB sequential read (QD1)".into(),
        format!("{mbps:.0} MB/s ({seq_mib} MiB)"),
        "-".into(),
    ));

    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(10);
    println!("skiff-vmm with the test guest (this machine: KVM = PVM, 2 cores)");
    println!("{:<w0$} | {:<w1$} | reference", "metric", "measured");
    println!(
        "{}-+-{}-+-{}",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(40)
    );
    for (a, b, c) in rows {
        println!("{a:<w0$} | {b:<w1$} | {c}");
    }
    Ok(())
}
