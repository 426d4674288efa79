//! skiffd's `POST /v1/invoke` of busybox `true`: latency on a cold boot (pool miss) and
//! from a warm pool, where a warm invocation's time goes (in-process, through the
//! runtime's WarmVm), on a snapshot restore, sandbox starts booted and restored,
//! invocations per second at concurrency 1, 4 and 16 with pools refilled by booting
//! and by restoring, and host memory (PSS) per warm VM. `runc run` of the same busybox `true` is measured in the
//! same run as the reference.
//!
//!   cargo build --release -p skiff-cli -p skiff-daemon
//!   cargo run --release -p skiff-bench --bin daemon [-- RUNS]
//!
//! skiffd is `$SKIFFD_BIN` or the one beside this benchmark (it supervises its own
//! sandboxes: `skiffd supervise`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use skiff_bench::{latency_row as row, ms, percentile, print_table, pss_kib};

const TENANT: &str = "bench";

fn sibling(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    root: PathBuf,
}

impl Daemon {
    fn start(root: &Path, config: &str) -> Result<Self> {
        let cfg = root.join("skiffd.toml");
        std::fs::write(&cfg, config)?;
        let socket = root.join("api.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(sibling("SKIFFD_BIN", "skiffd"))
            .arg("--root")
            .arg(root)
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&cfg)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .spawn()
            .context("start skiffd")?;
        let d = Self {
            child,
            socket,
            root: root.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(&d.socket).is_err() {
            if Instant::now() > deadline {
                bail!("skiffd did not come up");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Result<(u16, Value)> {
        let mut s = UnixStream::connect(&self.socket)?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: skiffd\r\nConnection: close\r\nX-Skiff-Tenant: {TENANT}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no HTTP response")?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("status")?;
        let body = &raw[split + 4..];
        Ok((status, serde_json::from_slice(body).unwrap_or(Value::Null)))
    }

    fn metric(&self, name: &str) -> u64 {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return 0;
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn wait_ready(&self, n: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.metric("skiffd_pool_ready") < n {
            if Instant::now() > deadline {
                bail!("the pool did not reach {n} warm VMs");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// One invocation of `true`: wall time and whether the pool served it.
    fn invoke_true(&self) -> Result<(Duration, bool)> {
        let (d, pool) = self.invoke(false)?;
        Ok((d, pool == "hit"))
    }

    /// One invocation of `true` (on a pool miss restored from the snapshot when
    /// `snapshot`): wall time and how it was served (`hit`, `miss`, `snapshot`).
    fn invoke(&self, snapshot: bool) -> Result<(Duration, String)> {
        let t0 = Instant::now();
        let (s, v) = self.call(
            "POST",
            "/v1/invoke",
            &format!(r#"{{"image":"busybox","cmd":["true"],"snapshot":{snapshot}}}"#),
        )?;
        let d = t0.elapsed();
        if s != 200 || v["exit_code"] != 0 {
            bail!("invoke: {s} {v}");
        }
        Ok((d, v["pool"].as_str().unwrap_or_default().to_owned()))
    }

    /// Creates and starts a sandbox running `sleep` (booted, or restored from the
    /// snapshot): the time until it runs. It is deleted afterwards.
    fn sandbox_start(&self, snapshot: bool) -> Result<Duration> {
        let t0 = Instant::now();
        let (s, v) = self.call(
            "POST",
            "/v1/sandboxes",
            &format!(
                r#"{{"image":"busybox","cmd":["sleep","600"],"start":true,"snapshot":{snapshot}}}"#
            ),
        )?;
        let d = t0.elapsed();
        if s != 201 || v["state"] != "running" {
            bail!("create a sandbox: {s} {v}");
        }
        let id = v["id"].as_str().unwrap_or_default();
        let (s, v) = self.call(
            "POST",
            &format!("/v1/sandboxes/{id}/stop"),
            r#"{"timeout_s":1}"#,
        )?;
        if s != 200 {
            bail!("stop the sandbox: {s} {v}");
        }
        let (s, v) = self.call("DELETE", &format!("/v1/sandboxes/{id}"), "")?;
        if s != 200 {
            bail!("delete the sandbox: {s} {v}");
        }
        Ok(d)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the daemon this benchmark started (SIGTERM: it drains pools).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = &self.root;
    }
}

/// The daemon's config: generous quotas, and a pool of `pool` VMs (refilled by
/// restoring the snapshot when `snapshot`).
fn config(pool: u32, snapshot: bool) -> String {
    let mut c = String::from(
        "[default_quota]\nmax_sandboxes = 64\nmax_memory_mib = 65536\nmax_vcpus = 64\nrequests_per_second = 100000.0\nburst = 100000\n",
    );
    if pool > 0 {
        c.push_str(&format!(
            "[[pools]]\ntenant = \"{TENANT}\"\nimage = \"busybox\"\nsize = {pool}\nsnapshot = {snapshot}\n"
        ));
    }
    c
}

fn runc_true(dir: &Path, runs: usize) -> Result<Vec<Duration>> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    for d in ["etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("copy /bin/busybox")?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true"))?;
    if !Command::new("runc")
        .arg("spec")
        .current_dir(dir)
        .status()
        .context("runc spec (apt-get install runc)")?
        .success()
    {
        bail!("runc spec failed");
    }
    let path = dir.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    let mut out = Vec::new();
    for i in 0..runs {
        let t0 = Instant::now();
        let o = Command::new("runc")
            .args(["--root", &dir.join("state").display().to_string()])
            .args(["run", "-b"])
            .arg(dir)
            .arg(format!("bench{i}"))
            .stdin(Stdio::null())
            .output()?;
        out.push(t0.elapsed());
        if !o.status.success() {
            bail!("runc run: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
    Ok(out)
}

/// `conc` clients invoking `true` back to back, (2 x conc, at least 8) invocations.
fn throughput(d: &Daemon, refill: &str, conc: usize) -> Vec<String> {
    let total = (conc * 2).max(8);
    let hits0 = d.metric("skiffd_pool_hits_total");
    let lat = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(Mutex::new(0usize));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..conc {
            let (lat, next) = (lat.clone(), next.clone());
            s.spawn(move || loop {
                {
                    let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                    if *n >= total {
                        return;
                    }
                    *n += 1;
                }
                match d.invoke_true() {
                    Ok((t, _)) => lat.lock().unwrap_or_else(|e| e.into_inner()).push(t),
                    Err(e) => eprintln!("invoke: {e}"),
                }
            });
        }
    });
    let wall = t0.elapsed();
    let lat = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let hits = d.metric("skiffd_pool_hits_total") - hits0;
    vec![
        refill.to_owned(),
        conc.to_string(),
        lat.len().to_string(),
        format!("{:.2}", lat.len() as f64 / wall.as_secs_f64()),
        format!("{hits}/{}", lat.len()),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 99.0)),
    ]
}

/// PSS (KiB) of every descendant of `pid` (not `pid` itself).
fn descendants_pss_kib(pid: u32) -> (u64, usize) {
    let tree = skiff_sys::procfs::tree(pid);
    let kib: u64 = tree[1..].iter().map(|p| pss_kib(*p)).sum();
    (kib, tree.len() - 1)
}

/// What a pool does with a warm VM before an invocation takes it.
#[derive(Clone, Copy)]
struct Prep {
    name: &'static str,
    /// Writable layer: `None` is a tmpfs (as skiffd's pools), else a fresh ext4 disk.
    disk: Option<u64>,
    /// CreateContainer while pooled (else at invoke time).
    create: bool,
    /// A warm-up `true` while pooled.
    warm_up: bool,
}

const PREPS: [Prep; 4] = [
    Prep {
        name: "create at invoke, ext4 disk",
        disk: Some(256 << 20),
        create: false,
        warm_up: false,
    },
    Prep {
        name: "create at invoke, tmpfs",
        disk: None,
        create: false,
        warm_up: false,
    },
    Prep {
        name: "created while pooled",
        disk: None,
        create: true,
        warm_up: false,
    },
    Prep {
        name: "created + warm-up `true` while pooled",
        disk: None,
        create: true,
        warm_up: true,
    },
];

fn p50_p99(s: &[Duration]) -> String {
    if s.is_empty() {
        return "-".into();
    }
    format!("{} / {}", ms(percentile(s, 50.0)), ms(percentile(s, 99.0)))
}

/// Warm invocations straight through the runtime, for each way of preparing the VM:
/// the pool's work (boot, container creation, warm-up) and the request's (the
/// container's creation when not done ahead, the process) timed apart.
fn warm_phases(root: &Path, runs: usize) -> Result<Vec<Vec<String>>> {
    let store = skiff_image::Store::open(root)?;
    let image = store.image("busybox")?;
    let mut p = skiff_proto::ProcessSpec::new(vec!["true".into()]);
    p.env = vec![format!("PATH={}", skiff_proto::DEFAULT_PATH)];
    let mut rows = Vec::new();
    for prep in PREPS {
        let spec = skiff_runtime::WarmSpec {
            artifacts: skiff_runtime::GuestArtifacts::locate(None, None)?,
            selection: skiff_runtime::vm::hypervisor::select(None)?,
            layers: store.layer_disks(&image)?,
            memory_mib: 256,
            vcpus: 1,
            writable_disk_bytes: prep.disk,
            scratch_parent: None,
            boot_timeout: Duration::from_secs(120),
        };
        let (mut boot, mut create, mut warm, mut process, mut total, mut teardown) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            let t0 = Instant::now();
            let mut vm = skiff_runtime::WarmVm::boot(&spec)?;
            boot.push(t0.elapsed());
            if prep.create {
                create.push(vm.create("bench")?);
            }
            if prep.warm_up {
                let t = Instant::now();
                let st = vm.warm_up(&p, Duration::from_secs(60))?;
                warm.push(t.elapsed());
                if st.code() != 0 {
                    bail!("the warm-up `true` failed: {st:?}");
                }
            }
            let t1 = Instant::now();
            let out = vm.run("bench", &p, 1 << 20, Duration::from_secs(60))?;
            total.push(t1.elapsed());
            if !prep.create {
                create.push(out.create_time);
            }
            process.push(out.process_time);
            let t2 = Instant::now();
            drop(vm);
            teardown.push(t2.elapsed());
            if out.status.map(|s| s.code()) != Some(0) {
                bail!("true failed in the warm VM: {:?}", out.status);
            }
        }
        rows.push(vec![
            prep.name.to_owned(),
            runs.to_string(),
            p50_p99(&boot),
            format!(
                "{}{}",
                p50_p99(&create),
                if prep.create { " (pool)" } else { "" }
            ),
            p50_p99(&warm),
            p50_p99(&process),
            p50_p99(&total),
            p50_p99(&teardown),
        ]);
    }
    Ok(rows)
}

fn print_phases(root: &Path, runs: usize) -> Result<()> {
    println!("## Where a warm invocation's time goes (runtime WarmVm, no daemon)\n");
    println!("Boot, and (pool) steps run while the VM waits in the pool; the request path");
    println!("is the run total. Teardown happens after the answer. p50 / p99 ms.\n");
    print_table(
        &[
            "warm VM prepared",
            "n",
            "boot",
            "CreateContainer",
            "warm-up (pool)",
            "start `true` to exit",
            "request path total",
            "teardown",
        ],
        &warm_phases(root, runs.min(10))?,
    );

    Ok(())
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    // `--phases`: only the runtime-level breakdown (quick to iterate on).
    let phases_only = std::env::args().any(|a| a == "--phases");
    let dir = tempfile::Builder::new()
        .prefix("skiff-bench-daemon-")
        .tempdir()?;
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root)?;

    // Cold: no pool, every invocation boots a VM.
    let cold_runs = runs.min(10);
    let (mut cold, mut restored) = (Vec::new(), Vec::new());
    let (mut sandbox_boot, mut sandbox_restore) = (Vec::new(), Vec::new());
    let snapshot_skip: Option<String>;
    {
        let d = Daemon::start(&root, &config(0, false))?;
        let (s, v) = d.call("POST", "/v1/images/pull", r#"{"reference":"busybox"}"#)?;
        if s != 200 {
            bail!("pull busybox: {v}");
        }
        if phases_only {
            drop(d);
            return print_phases(&root, runs);
        }
        for _ in 0..cold_runs {
            cold.push(d.invoke_true()?.0);
        }
        // The first snapshot invocation makes the snapshot; the rest restore it. Only
        // the QEMU backend has these snapshots (skiff-vmm, where hardware KVM lets it
        // boot Linux, answers 400 snapshot_unsupported): then their rows are left out.
        snapshot_skip = match d.invoke(true) {
            Ok(_) => None,
            Err(e) if e.to_string().contains("snapshot_unsupported") => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        for _ in 0..if snapshot_skip.is_none() { runs } else { 0 } {
            let (t, how) = d.invoke(true)?;
            if how != "snapshot" {
                bail!("a snapshot invocation was served by {how:?}");
            }
            restored.push(t);
        }
        for _ in 0..cold_runs.min(5) {
            sandbox_boot.push(d.sandbox_start(false)?);
            if snapshot_skip.is_none() {
                sandbox_restore.push(d.sandbox_start(true)?);
            }
        }
    }
    // Warm: a pool of one, refilled between requests (each request finds a warm VM).
    let mut warm = Vec::new();
    {
        let d = Daemon::start(&root, &config(1, false))?;
        for _ in 0..runs {
            d.wait_ready(1)?;
            let (t, hit) = d.invoke_true()?;
            if !hit {
                bail!("a warm invocation missed the pool");
            }
            warm.push(t);
        }
    }
    let runc = runc_true(&dir.path().join("runc"), runs)?;
    println!("## POST /v1/invoke of busybox `true` ({runs} runs; QEMU TCG here)\n");
    if let Some(why) = &snapshot_skip {
        println!("(snapshot rows left out: {why})\n");
    }
    let mut rows = vec![row("cold (pool miss: boot + run + destroy)", &cold)];
    if !restored.is_empty() {
        rows.push(row(
            "snapshot (pool miss: restore + reseed + run + destroy)",
            &restored,
        ));
    }
    rows.push(row("warm (pool hit)", &warm));
    rows.push(row("runc run true (reference)", &runc));
    let ratio = percentile(&warm, 50.0).as_secs_f64() / percentile(&runc, 50.0).as_secs_f64();
    rows.push(vec![
        "warm p50 / runc p50".into(),
        String::new(),
        format!("{ratio:.2}x"),
        String::new(),
    ]);
    if !restored.is_empty() {
        let ratio =
            percentile(&cold, 50.0).as_secs_f64() / percentile(&restored, 50.0).as_secs_f64();
        rows.push(vec![
            "cold p50 / snapshot p50".into(),
            String::new(),
            format!("{ratio:.2}x"),
            String::new(),
        ]);
    }
    print_table(&["", "n", "p50 ms", "p99 ms"], &rows);

    println!("\n## POST /v1/sandboxes of busybox `sleep`, started: until it runs\n");
    let mut rows = vec![row("booted (the supervisor boots the VM)", &sandbox_boot)];
    if !sandbox_restore.is_empty() {
        let ratio = percentile(&sandbox_boot, 50.0).as_secs_f64()
            / percentile(&sandbox_restore, 50.0).as_secs_f64();
        rows.push(row(
            "\"snapshot\": true (the supervisor restores the VM)",
            &sandbox_restore,
        ));
        rows.push(vec![
            "booted p50 / restored p50".into(),
            String::new(),
            format!("{ratio:.2}x"),
            String::new(),
        ]);
    }
    print_table(&["", "n", "p50 ms", "p99 ms"], &rows);

    println!();
    print_phases(&root, runs)?;

    // Throughput and memory: a pool of 4, refilled by booting or by restoring.
    println!("\n## Invocations per second (pool of 4 warm VMs, refilled in the background)\n");
    let mut rows = Vec::new();
    let mut memory = Vec::new();
    for (refill, snapshot) in [("boot", false), ("snapshot restore", true)] {
        if snapshot && snapshot_skip.is_some() {
            continue;
        }
        let d = Daemon::start(&root, &config(4, snapshot))?;
        d.wait_ready(4)?;
        let pss = descendants_pss_kib(d.child.id());
        memory.push(vec![
            format!(
                "PSS per warm VM, refilled by {refill} (QEMU + device daemons, {} processes / 4)",
                pss.1
            ),
            format!("{:.1}", pss.0 as f64 / 4.0 / 1024.0),
        ]);
        if !snapshot {
            memory.push(vec![
                "skiffd itself".into(),
                format!("{:.1}", pss_kib(d.child.id()) as f64 / 1024.0),
            ]);
        }
        for conc in [1usize, 4, 16] {
            d.wait_ready(4)?;
            rows.push(throughput(&d, refill, conc));
        }
    }
    print_table(
        &[
            "refill",
            "concurrency",
            "invocations",
            "per second",
            "pool hits",
            "p50 ms",
            "p99 ms",
        ],
        &rows,
    );
    println!("\n## Host memory per warm VM (pool of 4 at agent ready)\n");
    print_table(&["", "MiB"], &memory);
    Ok(())
}
