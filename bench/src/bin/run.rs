//! `skiff run --rm busybox true` end to end, phase by phase, beside `runc run` of the
//! same busybox root filesystem (namespaces only), and host memory (PSS) per idle
//! detached container.
//!
//!   cargo build --release -p skiff-cli && cargo run --release -p skiff-bench --bin run [-- RUNS]
//!
//! The skiff binary is `$SKIFF_BIN` or the one beside this benchmark. Phases come from
//! the marks skiff writes when `SKIFF_TRACE_PHASES` is set: CLI (spawn to the command's
//! code), image resolution, preparation (record, writable disk, VM scratch and device
//! daemons, up to the VMM's spawn), VM boot (VMM spawn to the agent's hello), command
//! (rootfs assembly, start, `true`, its exit) and teardown (power-off, `--rm`, exit).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use skiff_bench::{ms, percentile, print_table, pss_kib};

const PHASES: [(&str, &str, &str); 6] = [
    ("CLI", "spawn", "cli_main"),
    ("image resolution", "cli_main", "image_ready"),
    ("preparation", "image_ready", "vmm_spawn"),
    ("VM boot", "vmm_spawn", "agent_ready"),
    ("command", "agent_ready", "exited"),
    ("teardown", "exited", "end"),
];

fn skiff_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("skiff")))
        .unwrap_or_else(|| PathBuf::from("skiff"))
}

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn skiff(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(skiff_bin());
    c.arg("--root").arg(root).args(args);
    c
}

/// One `skiff run --rm busybox true`: total wall time and each phase.
fn skiff_run(root: &Path, trace: &Path) -> Result<(Duration, Vec<Duration>)> {
    let _ = std::fs::remove_file(trace);
    let spawn = epoch_ns();
    let t0 = Instant::now();
    let out = skiff(root, &["run", "--rm", "busybox", "true"])
        .env("SKIFF_TRACE_PHASES", trace)
        .stdin(Stdio::null())
        .output()?;
    let total = t0.elapsed();
    let end = spawn + total.as_nanos();
    if !out.status.success() {
        bail!("skiff run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = std::fs::read_to_string(trace).context("read the phase marks")?;
    let mark = |name: &str| -> Result<u128> {
        match name {
            "spawn" => Ok(spawn),
            "end" => Ok(end),
            _ => text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .with_context(|| format!("no {name} mark")),
        }
    };
    let mut phases = Vec::new();
    for (_, from, to) in PHASES {
        let d = mark(to)?.saturating_sub(mark(from)?);
        phases.push(Duration::from_nanos(u64::try_from(d).unwrap_or(u64::MAX)));
    }
    Ok((total, phases))
}

/// A runc bundle with the same files as skiff's busybox starter image.
fn runc_bundle(dir: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    for d in ["etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("copy /bin/busybox")?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    let st = Command::new("runc")
        .arg("spec")
        .current_dir(dir)
        .status()
        .context("runc spec (apt-get install runc)")?;
    if !st.success() {
        bail!("runc spec failed");
    }
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

fn runc_run(bundle: &Path, i: usize) -> Result<Duration> {
    let t0 = Instant::now();
    let out = Command::new("runc")
        .args(["--root", &bundle.join("state").display().to_string()])
        .args(["run", "-b"])
        .arg(bundle)
        .arg(format!("bench{i}"))
        .stdin(Stdio::null())
        .output()?;
    let d = t0.elapsed();
    if !out.status.success() {
        bail!("runc run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(d)
}

/// (pid, comm) of `root` and all its descendants.
fn process_tree(root: u32) -> Vec<(u32, String)> {
    let mut all: Vec<(u32, u32, String)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let comm = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(c, _)| c.to_owned())
            .unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        all.push((pid, ppid, comm));
    }
    let mut tree: Vec<(u32, String)> = all
        .iter()
        .filter(|(p, _, _)| *p == root)
        .map(|(p, _, c)| (*p, c.clone()))
        .collect();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i].0;
        tree.extend(
            all.iter()
                .filter(|(_, pp, _)| *pp == parent)
                .map(|(p, _, c)| (*p, c.clone())),
        );
        i += 1;
    }
    tree
}

fn idle_pss(root: &Path, n: usize) -> Result<Vec<Vec<String>>> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let out = skiff(root, &["run", "-d", "busybox", "sleep", "100000"]).output()?;
        if !out.status.success() {
            bail!("run -d: {}", String::from_utf8_lossy(&out.stderr));
        }
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut by_kind: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut total = 0;
    for id in &ids {
        let out = skiff(root, &["inspect", "-f", "{{.State.Pid}}", id]).output()?;
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("supervisor pid")?;
        for (p, comm) in process_tree(pid) {
            let kib = pss_kib(p);
            *by_kind.entry(comm).or_default() += kib;
            total += kib;
        }
    }
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    let _ = skiff(root, &args).output();
    let per = |kib: u64| format!("{:.1}", kib as f64 / n as f64 / 1024.0);
    let mut rows: Vec<Vec<String>> = by_kind.into_iter().map(|(k, v)| vec![k, per(v)]).collect();
    rows.push(vec!["total per container".into(), per(total)]);
    Ok(rows)
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let work = tempfile_dir()?;
    let root = work.join("root");
    let trace = work.join("trace");
    // Warm-up: builds the busybox starter image and the page cache.
    let (_, _) = skiff_run(&root, &trace)?;

    let mut totals = Vec::new();
    let mut phases: Vec<Vec<Duration>> = vec![Vec::new(); PHASES.len()];
    let bundle = work.join("bundle");
    runc_bundle(&bundle)?;
    let mut runc = Vec::new();
    for i in 0..runs {
        let (t, p) = skiff_run(&root, &trace)?;
        totals.push(t);
        for (acc, d) in phases.iter_mut().zip(p) {
            acc.push(d);
        }
        runc.push(runc_run(&bundle, i)?);
    }
    println!(
        "skiff run --rm busybox true, {runs} runs ({})",
        skiff_bin().display()
    );
    let mut rows: Vec<Vec<String>> = PHASES
        .iter()
        .zip(&phases)
        .map(|((name, _, _), s)| {
            vec![
                (*name).to_owned(),
                ms(percentile(s, 50.0)),
                ms(percentile(s, 95.0)),
            ]
        })
        .collect();
    rows.push(vec![
        "total".into(),
        ms(percentile(&totals, 50.0)),
        ms(percentile(&totals, 95.0)),
    ]);
    print_table(&["phase", "p50 ms", "p95 ms"], &rows);
    println!();
    let ratio = |p: f64| {
        percentile(&totals, p).as_secs_f64() / percentile(&runc, p).as_secs_f64().max(1e-9)
    };
    print_table(
        &[
            "runtime",
            "p50 ms",
            "p95 ms",
            "skiff / this (p50)",
            "skiff / this (p95)",
        ],
        &[
            vec![
                "skiff (microVM)".into(),
                ms(percentile(&totals, 50.0)),
                ms(percentile(&totals, 95.0)),
                "1.0".into(),
                "1.0".into(),
            ],
            vec![
                "runc run (namespaces)".into(),
                ms(percentile(&runc, 50.0)),
                ms(percentile(&runc, 95.0)),
                format!("{:.1}", ratio(50.0)),
                format!("{:.1}", ratio(95.0)),
            ],
        ],
    );
    println!();
    let n = 3;
    println!("host PSS per idle detached container (busybox sleep, {n} containers)");
    print_table(&["process", "PSS MiB per container"], &idle_pss(&root, n)?);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("skiff-bench-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
