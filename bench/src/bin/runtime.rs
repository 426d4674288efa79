//! skiff-runtime beside runc and crun, measured in the same run on the same bundle:
//! the runc command line (`create`, `start`, wait for the pid-file process, `delete`)
//! phase by phase, and `ctr run --rm` through containerd's runc v2 shim with each
//! runtime as its binary.
//!
//!   cargo build --release -p skiff-cli --bins
//!   cargo run --release -p skiff-bench --bin runtime [-- RUNS]
//!
//! skiff-runtime is `$SKIFF_RUNTIME_BIN` or the one beside this benchmark (skiff, for
//! the image `ctr` imports, likewise `$SKIFF_BIN` or beside it); runc and
//! crun come from `$PATH` (Debian packages). The benchmark runs in a mount namespace of
//! its own in which the host's cgroup2 hierarchy (`/sys/fs/cgroup/unified`) is
//! unmounted: crun 1.8 refuses this host's hybrid cgroup layout, and every runtime
//! (and containerd) then sees the same plain cgroup v1 machine. Like containerd, the
//! benchmark is a child subreaper, so the process a runtime names in `--pid-file`
//! becomes its child and is waited for with waitpid.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_bench::{ms, percentile, print_table};
use skiff_tests::clients::{which, Containerd, Runtime, Scratch};
use skiff_tests::skiff_runtime_bin;

/// Leaves the host's mount namespace and unmounts the cgroup2 half of the hybrid
/// layout there (see the module comment). Must run before any thread starts.
fn private_cgroup_v1_view() -> Result<()> {
    // SAFETY: unshare and mount take no pointers we own beyond the NUL-terminated
    // literals below; the process is still single-threaded.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    if rc != 0 {
        bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
    }
    // SAFETY: as above; "/" is a valid path, the other pointers may be null for a
    // propagation change.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!("make / private: {}", std::io::Error::last_os_error());
    }
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        // SAFETY: a valid NUL-terminated path; umount2 only reads it.
        let rc = unsafe { libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            bail!(
                "umount /sys/fs/cgroup/unified: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// A bundle whose rootfs is Debian's static busybox and whose process is `true`,
/// from `runc spec` (so every runtime gets the config runc itself proposes).
fn make_bundle(bundle: &Path) -> Result<()> {
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(bundle.join("rootfs").join(d))?;
    }
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("/bin/busybox (busybox-static)")?;
    for applet in ["sh", "true", "echo", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .output()
        .context("runc spec")?;
    if !out.status.success() {
        bail!("runc spec: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

/// Runs `cmd` with no input and its output in a file, not a pipe: `create` hands its
/// stdio to the container process, which would hold a pipe open until it exits.
fn quiet(cmd: &mut Command) -> Result<()> {
    let log = tempfile::NamedTempFile::new()?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen()?)
        .status()
        .with_context(|| format!("{cmd:?}"))?;
    if !status.success() {
        bail!(
            "{:?} {:?}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            std::fs::read_to_string(log.path())
                .unwrap_or_default()
                .trim()
        );
    }
    Ok(())
}

/// Waits for `pid` (our child, since we are a subreaper) and returns its exit status.
fn wait_pid(pid: i32, timeout: Duration) -> Result<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Ok(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        if rc < 0 {
            bail!(
                "waitpid({pid}): {} (the pid-file process is not a descendant of its caller)",
                std::io::Error::last_os_error()
            );
        }
        if start.elapsed() > timeout {
            bail!("pid {pid} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// create, start, wait, delete: the time of each.
fn lifecycle(rt: &Path, root: &Path, bundle: &Path, id: &str) -> Result<[Duration; 4]> {
    let pid_file = root.join(format!("{id}.pid"));
    let cli = |args: &[&str]| {
        let mut c = Command::new(rt);
        c.arg("--root").arg(root).args(args);
        c
    };
    let t0 = Instant::now();
    quiet(
        cli(&["create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id),
    )?;
    let t1 = Instant::now();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .context("pid file")?
        .trim()
        .parse()
        .context("pid file")?;
    quiet(&mut cli(&["start", id]))?;
    let t2 = Instant::now();
    let status = wait_pid(pid, Duration::from_secs(120))?;
    let t3 = Instant::now();
    quiet(&mut cli(&["delete", id]))?;
    let t4 = Instant::now();
    if status != 0 {
        bail!("`true` exited with {status}");
    }
    Ok([t1 - t0, t2 - t1, t3 - t2, t4 - t3])
}

/// `ctr run --rm IMAGE ID true` with `rt` as the shim's runc binary.
fn ctr_run(ctd: &mut Containerd, rt: &Runtime, id: &str) -> Result<Duration> {
    ctd.runtime = rt.clone();
    let args = ctd.run_args(&["--rm"], id, &["true"]);
    let t0 = Instant::now();
    quiet(
        ctd.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdin(Stdio::null()),
    )?;
    Ok(t0.elapsed())
}

/// Samples of one runtime, or why it dropped out.
#[derive(Default)]
struct Series {
    phases: [Vec<Duration>; 4],
    total: Vec<Duration>,
    ctr: Vec<Duration>,
    cli_error: Option<String>,
    ctr_error: Option<String>,
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    if let Err(e) = private_cgroup_v1_view() {
        eprintln!("warning: {e:#}; crun may refuse the host's cgroup layout");
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let mut runtimes: Vec<Runtime> = Vec::new();
    for name in ["runc", "crun"] {
        match which(name) {
            Some(path) => runtimes.push(Runtime { name, path }),
            None => eprintln!("warning: {name} not installed (apt-get install {name})"),
        }
    }
    let skiff = skiff_runtime_bin();
    if skiff.is_file() {
        runtimes.push(Runtime {
            name: "skiff-runtime",
            path: skiff,
        });
    } else {
        eprintln!("warning: {} is not built", skiff.display());
    }
    // Dropped last: takes down whatever a runtime left running or mounted below it.
    let work = Scratch::new("skiff-bench-rt");
    let bundle = work.path().join("bundle");
    make_bundle(&bundle)?;
    let Some(first) = runtimes.first().cloned() else {
        bail!("no runtime to measure");
    };
    let mut ctd = Containerd::start("bench runtime", first)
        .context("containerd, ctr and skiff are needed for the `ctr run` rows")?;

    let mut series: Vec<Series> = runtimes.iter().map(|_| Series::default()).collect();
    // Run 0 warms caches and is not counted; runtimes take turns so load hits all alike.
    for i in 0..=runs {
        for (rt, s) in runtimes.iter().zip(series.iter_mut()) {
            let root = work.path().join(format!("root-{}", rt.name));
            let id = format!("bench-{}-{i}", rt.name);
            if s.cli_error.is_none() {
                match lifecycle(&rt.path, &root, &bundle, &id) {
                    Ok(p) if i > 0 => {
                        for (acc, d) in s.phases.iter_mut().zip(p) {
                            acc.push(d);
                        }
                        s.total.push(p.iter().sum());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = Command::new(&rt.path)
                            .arg("--root")
                            .arg(&root)
                            .args(["delete", "--force", &id])
                            .output();
                        s.cli_error = Some(format!("{e:#}"));
                    }
                }
            }
            if s.ctr_error.is_none() {
                match ctr_run(&mut ctd, rt, &format!("ctr-{id}")) {
                    Ok(d) if i > 0 => s.ctr.push(d),
                    Ok(_) => {}
                    Err(e) => s.ctr_error = Some(format!("{e:#}")),
                }
            }
        }
    }
    drop(ctd);

    let p = |v: &[Duration], q: f64| percentile(v, q);
    let index_of = |name: &str| runtimes.iter().position(|r| r.name == name);
    let (runc_at, crun_at) = (index_of("runc"), index_of("crun"));
    let base = |idx: Option<usize>| idx.and_then(|i| series.get(i)).map(|s| p(&s.total, 50.0));
    let ratio = |a: Duration, b: Option<Duration>| match b {
        Some(b) if !b.is_zero() && !a.is_zero() => {
            format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64())
        }
        _ => "-".into(),
    };
    println!(
        "runtime CLI on one busybox bundle (`true`): create + start + wait + delete, {runs} runs"
    );
    let mut rows = Vec::new();
    for (rt, s) in runtimes.iter().zip(&series) {
        if let Some(e) = &s.cli_error {
            rows.push(vec![rt.name.into(), format!("failed: {e}")]);
            continue;
        }
        let mut row = vec![rt.name.to_owned()];
        row.extend(s.phases.iter().map(|v| ms(p(v, 50.0))));
        row.push(ms(p(&s.total, 50.0)));
        row.push(ms(p(&s.total, 95.0)));
        row.push(ratio(p(&s.total, 50.0), base(runc_at)));
        row.push(ratio(p(&s.total, 50.0), base(crun_at)));
        rows.push(row);
    }
    print_table(
        &[
            "runtime",
            "create p50",
            "start p50",
            "wait p50",
            "delete p50",
            "total p50 ms",
            "total p95 ms",
            "/ runc (p50)",
            "/ crun (p50)",
        ],
        &rows,
    );
    println!();
    println!("ctr run --rm busybox true (containerd 1.6, runc v2 shim), {runs} runs");
    let ctr_base = |idx: Option<usize>| idx.and_then(|i| series.get(i)).map(|s| p(&s.ctr, 50.0));
    let mut rows = Vec::new();
    for (rt, s) in runtimes.iter().zip(&series) {
        if let Some(e) = &s.ctr_error {
            rows.push(vec![rt.name.into(), format!("failed: {e}")]);
            continue;
        }
        rows.push(vec![
            rt.name.to_owned(),
            ms(p(&s.ctr, 50.0)),
            ms(p(&s.ctr, 95.0)),
            ratio(p(&s.ctr, 50.0), ctr_base(runc_at)),
            ratio(p(&s.ctr, 50.0), ctr_base(crun_at)),
        ]);
    }
    print_table(
        &[
            "runtime",
            "p50 ms",
            "p95 ms",
            "/ runc (p50)",
            "/ crun (p50)",
        ],
        &rows,
    );
    Ok(())
}
