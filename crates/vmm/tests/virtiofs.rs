//! skiff-vmm's vhost-user front end with a real `virtiofsd` on a temporary directory:
//! the test guest reads a file the host wrote and creates one the host then reads,
//! after checking that a queue outside guest RAM is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEADLINE: Duration = Duration::from_secs(60);
const HOST_TEXT: &str = "hello from the host side, through virtiofsd";
const GUEST_TEXT: &str = "written by the test guest over virtio-fs";

/// `$SKIFF_VIRTIOFSD`, else skiff's tool cache (scripts/setup.sh builds it there), else
/// PATH.
fn virtiofsd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_VIRTIOFSD") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let cached = home.join(".cache/skiff/tools/bin/virtiofsd");
    if cached.is_file() {
        return Some(cached);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("virtiofsd"))
            .find(|p| p.is_file())
    })
}

/// A virtiofsd serving `dir` on `socket`, killed when dropped.
struct Daemon(Child);

impl Daemon {
    fn start(bin: &Path, dir: &Path, socket: &Path, log: &Path) -> Self {
        let log = std::fs::File::create(log).expect("create virtiofsd log");
        let child = Command::new(bin)
            .arg("--socket-path")
            .arg(socket)
            .arg("--shared-dir")
            .arg(dir)
            .args(["--sandbox", "none", "--cache", "never"])
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn virtiofsd");
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < DEADLINE, "virtiofsd made no socket");
            std::thread::sleep(Duration::from_millis(5));
        }
        Self(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_vmm(args: &[&str]) -> std::process::Output {
    let child = Command::new(vmm_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff-vmm");
    wait_with_deadline(child, DEADLINE)
}

#[test]
fn guest_reads_and_writes_host_files_through_virtiofsd() {
    let Some(guest) = prerequisites() else { return };
    let Some(daemon_bin) = virtiofsd() else {
        skip("virtiofsd not found (scripts/setup.sh builds it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("from-host.txt"), HOST_TEXT).unwrap();
    let socket = dir.path().join("fs.sock");
    let log = dir.path().join("virtiofsd.log");
    let _daemon = Daemon::start(&daemon_bin, &share, &socket, &log);
    let console = dir.path().join("console.log");
    let fs_spec = format!("tag=hostdir,socket={}", socket.display());
    let out = run_vmm(&[
        "run",
        "--kernel",
        guest.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 testguest.fsbadq testguest.fsfile=from-host.txt testguest.fswrite=new.txt",
        "--fs",
        &fs_spec,
        "--console",
        console.to_str().unwrap(),
    ]);
    let log_text = std::fs::read_to_string(&console).unwrap_or_default();
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "console:\n{log_text}\nstderr:\n{}\nvirtiofsd:\n{daemon_log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read_line = format!(
        "testguest: fs read {} bytes (size {}): {HOST_TEXT}",
        HOST_TEXT.len(),
        HOST_TEXT.len()
    );
    for line in [
        "testguest: fs bad queue refused",
        "testguest: fs tag=hostdir request_queues=1",
        read_line.as_str(),
        "testguest: fs wrote 40 bytes",
        "testguest: 1 virtio-fs devices ok",
    ] {
        assert!(
            log_text.contains(line),
            "missing `{line}` in console:\n{log_text}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(share.join("new.txt")).unwrap(),
        GUEST_TEXT
    );
}

#[test]
fn missing_or_bad_fs_backend_is_one_line_and_125() {
    let Some(guest) = prerequisites() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("tag=x,socket={}", dir.path().join("none.sock").display());
    for spec in [
        nowhere.as_str(),
        "tag=x",
        "socket=/tmp/x.sock",
        "tag=x,socket=",
    ] {
        let out = run_vmm(&["run", "--kernel", guest.to_str().unwrap(), "--fs", spec]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{spec}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("skiff-vmm: "))
            .collect();
        assert_eq!(lines.len(), 1, "{spec}: {stderr}");
    }
}
