//! Real OCI callers for the runtime tests: a private containerd (driven with `ctr`) and
//! a private Podman, each confined to one scratch directory, plus the busybox image
//! archive both import. Nothing here touches the machine's own containerd or Podman
//! state: every daemon, socket, store and runtime root lives under the scratch
//! directory, and dropping the guard kills every process that mentions it (daemons,
//! shims, conmon, runtime supervisors, their children), unmounts whatever is mounted
//! below it and removes it, also when the test failed.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{fixtures_dir, prerequisite, processes_mentioning, skiff_bin, skiff_runtime_bin};

/// How long any single client command may take before the test calls it hung. Generous:
/// a microVM boots in 1-3 s under TCG, more while other builds load the machine.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The OCI runtime a test hands to the client.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub name: &'static str,
    pub path: PathBuf,
}

/// runc, the reference: proves the harness itself.
pub fn runc(test: &str) -> Option<Runtime> {
    let path = which("runc");
    let ok = path
        .clone()
        .ok_or_else(|| "runc not installed (apt-get install runc)".to_owned());
    prerequisite(test, ok.map(|_| ())).then(|| Runtime {
        name: "runc",
        path: path.unwrap_or_default(),
    })
}

/// skiff-runtime, with everything it needs to boot a microVM.
pub fn skiff_runtime(test: &str) -> Option<Runtime> {
    let path = skiff_runtime_bin();
    let ok = if path.is_file() {
        crate::vm_ready()
    } else {
        Err(format!(
            "{} is not built (run `cargo build -p skiff-cli --bins`, or set SKIFF_RUNTIME_BIN)",
            path.display()
        ))
    };
    prerequisite(test, ok).then_some(Runtime {
        name: "skiff-runtime",
        path,
    })
}

/// The first executable called `name` on `$PATH` (or in the sbin directories, which a
/// non-login root shell may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tools(names: &[&str], package: &str) -> Result<(), String> {
    match names.iter().find(|n| which(n).is_none()) {
        None => Ok(()),
        Some(n) => Err(format!("{n} not installed (apt-get install {package})")),
    }
}

/// A docker-archive of the offline busybox starter image (`skiff image build-busybox`,
/// then `skiff save`), built once per test binary; no network needed.
pub fn busybox_archive() -> Result<PathBuf, String> {
    static ARCHIVE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let out = fixtures_dir().join("busybox-image.tar");
            if out.is_file() {
                return Ok(out);
            }
            if !skiff_bin().is_file() {
                return Err(format!(
                    "{} is not built (run `cargo build -p skiff-cli`)",
                    skiff_bin().display()
                ));
            }
            let store = tempfile::tempdir_in(fixtures_dir()).map_err(|e| e.to_string())?;
            let tmp = store.path().join("busybox.tar");
            for args in [
                vec!["image", "build-busybox"],
                vec!["save", "-o", tmp.to_str().unwrap_or_default(), "busybox"],
            ] {
                let out = Command::new(skiff_bin())
                    .arg("--root")
                    .arg(store.path().join("store"))
                    .args(&args)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "skiff {args:?}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
            Ok(out)
        })
        .clone()
}

/// What a command reads.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Null,
    /// These bytes, then end of file.
    Bytes(&'a [u8]),
    /// These bytes, and the pipe held open until the command exits (closing it early
    /// would hang up a terminal).
    BytesHeldOpen(&'a [u8]),
}

/// Runs `cmd` with `input` on stdin, collecting its output, and kills it (failing the
/// test with what it printed so far) if it outlives `timeout`.
pub fn run_with_timeout(cmd: &mut Command, input: Input, timeout: Duration) -> Output {
    try_run_with_timeout(cmd, input, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_with_timeout`] that reports instead of panicking (for Drop guards).
pub fn try_run_with_timeout(
    cmd: &mut Command,
    input: Input,
    timeout: Duration,
) -> Result<Output, String> {
    let mut child = cmd
        .stdin(match input {
            Input::Null => Stdio::null(),
            Input::Bytes(_) | Input::BytesHeldOpen(_) => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut stdin = child.stdin.take();
    if let (Some(mut w), Input::Bytes(bytes) | Input::BytesHeldOpen(bytes)) =
        (stdin.as_ref(), input)
    {
        let _ = w.write_all(bytes);
    }
    if let Input::Bytes(_) = input {
        stdin = None;
    }
    // Readers hand their bytes over a channel, so a grandchild that keeps a pipe open
    // (a daemon the command started) cannot block the test forever.
    let reader = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| b"<pipe still held open by a child process>".to_vec())
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{cmd:?}: {e}"))? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
            return Err(format!(
                "{cmd:?} still running after {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&collect(out)),
                String::from_utf8_lossy(&collect(err))
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    Ok(Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    })
}

/// A scratch directory that takes everything under it down when dropped.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("scratch dir: {e}"));
        Self { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let root = dir.path().to_string_lossy().into_owned();
        kill_tree(&processes_mentioning(&root));
        unmount_below(dir.path());
        // Shims and conmon leave their children behind after the kill only briefly.
        std::thread::sleep(Duration::from_millis(100));
        kill_tree(&processes_mentioning(&root));
        unmount_below(dir.path());
        drop(dir);
    }
}

/// SIGKILLs `pids` and every descendant of them.
pub fn kill_tree(pids: &[u32]) {
    let mut victims: Vec<u32> = pids.to_vec();
    let me = std::process::id();
    let mut i = 0;
    while i < victims.len() {
        let parent = victims[i];
        for child in children_of(parent) {
            if !victims.contains(&child) {
                victims.push(child);
            }
        }
        i += 1;
    }
    for pid in victims.into_iter().filter(|p| *p != me) {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...; comm may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p) else {
            continue;
        };
        // SAFETY: c is a valid NUL-terminated path; umount2 only reads it.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last `n` lines of a log file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A containerd of the test's own: its config, root, state, sockets and log in one
/// scratch directory, no system service involved.
pub struct Containerd {
    daemon: Option<Child>,
    pub namespace: String,
    pub address: PathBuf,
    pub runtime: Runtime,
    pub log: PathBuf,
    // Last: dropped after the daemon is stopped.
    scratch: Scratch,
}

impl Containerd {
    /// Starts containerd, imports the busybox archive, or says why not.
    pub fn start(test: &str, runtime: Runtime) -> Option<Self> {
        let archive = busybox_archive();
        if !prerequisite(
            test,
            tools(
                &["containerd", "ctr", "containerd-shim-runc-v2"],
                "containerd",
            ),
        ) || !prerequisite(test, archive.clone().map(|_| ()))
        {
            return None;
        }
        let scratch = Scratch::new("skiff-ctd");
        let d = scratch.path().to_path_buf();
        let address = d.join("containerd.sock");
        // Plugins this machine cannot or need not run are off, so startup is quick and
        // quiet; CRI would also want CNI configuration.
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{ttrpc}"
[debug]
  address = "{debug}"
  level = "debug"
[metrics]
  address = ""
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            address = address.display(),
            ttrpc = d.join("ttrpc.sock").display(),
            debug = d.join("debug.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = d.join("containerd.log");
        let logfile = std::fs::File::create(&log).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap_or_else(|e| panic!("containerd: {e}"));
        let me = Self {
            daemon: Some(daemon),
            namespace: "skiff-test".into(),
            address,
            runtime,
            log,
            scratch,
        };
        let start = Instant::now();
        while !me
            .ctr(&["version"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not answer within 30 s:\n{}",
                tail(&me.log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let archive = archive.unwrap_or_default();
        me.expect(
            &["images", "import", archive.to_str().unwrap_or_default()],
            0,
        );
        Some(me)
    }

    pub const IMAGE: &'static str = "docker.io/library/busybox:latest";

    /// Where the runc shim keeps the runtime's state (`--root` of every runtime call).
    pub fn runtime_root(&self) -> PathBuf {
        self.scratch.path().join("runtime-root")
    }

    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        c
    }

    /// `ctr run` with the runc v2 shim pointed at the runtime under test.
    pub fn run_args(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        v.extend(opts.iter().map(|s| (*s).to_owned()));
        v.extend([
            "--runtime".into(),
            "io.containerd.runc.v2".into(),
            "--runc-binary".into(),
            self.runtime.path.to_string_lossy().into_owned(),
            "--runc-root".into(),
            self.runtime_root().to_string_lossy().into_owned(),
            Self::IMAGE.into(),
            id.into(),
        ]);
        v.extend(cmd.iter().map(|s| (*s).to_owned()));
        v
    }

    pub fn output(&self, args: &[&str]) -> Output {
        run_with_timeout(&mut self.ctr(args), Input::Null, CLIENT_TIMEOUT)
    }

    /// Runs `ctr ARGS`, insists on exit status `code`, returns stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.output(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "ctr {args:?} with {}\nstdout: {}\nstderr: {}\ncontainerd log (tail):\n{}",
            self.runtime.name,
            text(&out.stdout),
            text(&out.stderr),
            tail(&self.log, 40)
        );
        text(&out.stdout)
    }

    /// The STATUS column of `ctr task ls` for `id`, if the task exists.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.expect(&["task", "ls"], 0);
        out.lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).copied().unwrap_or("").to_owned())
        })
    }

    /// Polls until the task `id` is STOPPED.
    pub fn wait_stopped(&self, id: &str) {
        let start = Instant::now();
        loop {
            let status = self.task_status(id);
            if status.as_deref() == Some("STOPPED") {
                return;
            }
            assert!(
                start.elapsed() < CLIENT_TIMEOUT,
                "task {id} still {status:?} after {CLIENT_TIMEOUT:?}\ncontainerd log (tail):\n{}",
                tail(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Deletes the stopped task `id` and returns its exit status, which `ctr task
    /// delete` reports only when it is not zero.
    pub fn delete_task(&self, id: &str) -> i32 {
        let out = self.output(&["task", "delete", id]);
        let stderr = text(&out.stderr);
        assert!(
            out.status.success(),
            "ctr task delete {id} with {}: {stderr}\ncontainerd log (tail):\n{}",
            self.runtime.name,
            tail(&self.log, 40)
        );
        stderr
            .split("exit code ")
            .nth(1)
            .and_then(|s| {
                s.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "containerd log ({}), last lines:\n{}",
                self.log.display(),
                tail(&self.log, 80)
            );
        }
        if let Some(mut d) = self.daemon.take() {
            // SIGTERM lets containerd close its database; the scratch guard then takes
            // down shims and anything the runtime left.
            if let Ok(pid) = i32::try_from(d.id()) {
                // SAFETY: kill(2) with a pid and a signal number has no memory effects.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let start = Instant::now();
            while d.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// Podman with its own storage, run root, tmpdir and containers.conf, cgroupfs and
/// file events (no systemd here), pointed at the runtime under test.
pub struct Podman {
    pub runtime: Runtime,
    scratch: Scratch,
    /// A network namespace of the test's own every podman command runs in (so CNI's
    /// bridge and NAT rules live there, not on the host); removed on drop.
    netns: Option<String>,
}

impl Podman {
    pub const IMAGE: &'static str = "docker.io/library/busybox:latest";

    pub fn start(test: &str, runtime: Runtime) -> Option<Self> {
        let archive = busybox_archive();
        if !prerequisite(test, tools(&["podman", "conmon"], "podman"))
            || !prerequisite(test, archive.clone().map(|_| ()))
        {
            return None;
        }
        let scratch = Scratch::new("skiff-podman");
        // conmon hands the runtime only the variables listed here, so pass on the ones
        // that say where skiff's guest and tools live. Podman's default rlimits exceed
        // this sandbox's hard limits, hence the ulimits.
        let mut env = vec![format!(
            "PATH={}",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        )];
        env.extend(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("SKIFF_") || k == "HOME" || k == "RUST_LOG")
                .map(|(k, v)| format!("{k}={v}")),
        );
        let quoted = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\nconmon_env_vars = [{}]\n",
            quoted(&env)
        );
        std::fs::write(scratch.path().join("containers.conf"), conf).unwrap();
        let me = Self {
            runtime,
            scratch,
            netns: None,
        };
        me.expect(
            &[
                "load",
                "-i",
                archive.unwrap_or_default().to_str().unwrap_or_default(),
            ],
            0,
        );
        Some(me)
    }

    /// Runs every later podman command (and so its CNI plugins) in a fresh network
    /// namespace `name`, deleted when `self` is dropped.
    pub fn in_private_netns(&mut self, name: &str) -> Result<(), String> {
        tools(&["ip", "nsenter"], "iproute2 util-linux")?;
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| format!("ip netns add: {e}"))?;
        if !out.status.success() {
            return Err(format!("ip netns add {name}: {}", text(&out.stderr)));
        }
        self.netns = Some(name.to_owned());
        let _ = Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .status();
        Ok(())
    }

    /// A command in the private network namespace, if there is one.
    pub fn in_netns(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    pub fn podman(&self, args: &[&str]) -> Command {
        let d = self.scratch.path();
        let mut c = self.in_netns("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "overlay"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .arg("--runtime")
            .arg(&self.runtime.path)
            .args(args);
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        run_with_timeout(&mut self.podman(args), Input::Null, CLIENT_TIMEOUT)
    }

    /// Runs `podman ARGS`, insists on exit status `code`, returns stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.output(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "podman {args:?} with {}\nstdout: {}\nstderr: {}",
            self.runtime.name,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `podman ARGS` on a terminal of its own (see [`on_terminal`]).
    pub fn on_terminal(&self, args: &[&str], input: &[u8]) -> (Option<i32>, String) {
        on_terminal(&self.podman(args), input)
    }
}

/// Runs `cmd` on a terminal of its own: util-linux `script` gives it a pty, feeds it
/// `input` and exits with its status. Returns (status, what the terminal showed).
pub fn on_terminal(cmd: &Command, input: &[u8]) -> (Option<i32>, String) {
    let mut line: Vec<String> = vec![shell_quote(&cmd.get_program().to_string_lossy())];
    line.extend(cmd.get_args().map(|a| shell_quote(&a.to_string_lossy())));
    let mut script = Command::new("script");
    script
        .args(["--quiet", "--return", "--command"])
        .arg(line.join(" "))
        .arg("/dev/null");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let out = run_with_timeout(&mut script, Input::BytesHeldOpen(input), CLIENT_TIMEOUT);
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// Is util-linux `script` there to give a client a terminal?
pub fn script_available() -> Result<(), String> {
    tools(&["script"], "util-linux")
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Let Podman take its containers down through the runtime first; the scratch
        // guard then kills whatever is left.
        let _ = try_run_with_timeout(
            &mut self.podman(&["rm", "--all", "--force", "--time", "0"]),
            Input::Null,
            Duration::from_secs(60),
        );
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
