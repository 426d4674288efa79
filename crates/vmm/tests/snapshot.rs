//! Snapshot and restore with the test guest under this machine's KVM.
//!
//! The guest runs a deterministic job (RAM updated in place, disk blocks
//! read-modified-written) and, after step 3, waits at a gate (it polls a disk block
//! the host has not opened yet): whatever the machine's speed, the snapshot is taken
//! mid-job. Two VMs restored from that snapshot at the same time, each on its own copy
//! of the disk with the gate opened, carry on and must end with exactly the result of
//! a run that was never interrupted; any state lost or shared (memory, vCPU, virtio
//! queues, disk) changes it. Every wait is driven by the guest's own output or the
//! VMM's exit, with generous deadlines, and every failure prints the VMM's console and
//! stderr.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{prerequisites, vmm_binary};

const STEPS: u64 = 24;
const GATE: u64 = 3;
/// Deadline for anything a busy machine may make slow (never reached when things work).
const PATIENCE: Duration = Duration::from_secs(900);
const GATE_OFFSET: u64 = 16 * 4096;

fn job(gate: bool) -> String {
    let mut job = format!("testguest.snapwork={STEPS} testguest.snapmib=1");
    if gate {
        job.push_str(&format!(" testguest.snapgate={GATE}"));
    }
    job
}

/// A running `skiff-vmm` with its console and stderr in files (killed on drop).
struct Vmm {
    name: String,
    child: Option<Child>,
    console: PathBuf,
    stderr: PathBuf,
}

impl Vmm {
    fn spawn(dir: &Path, name: &str, args: &[&str]) -> Self {
        let console = dir.join(format!("{name}.console"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(vmm_binary())
            .args(args)
            .arg("--console")
            .arg(&console)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("spawn skiff-vmm");
        Self {
            name: name.to_string(),
            child: Some(child),
            console,
            stderr,
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Console and stderr, for failure messages.
    fn diagnostics(&self) -> String {
        format!(
            "--- {} console ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.console(),
            self.name,
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("VMM already reaped")
    }

    /// Waits until `ready()`; fails at once if the VMM exits first.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        loop {
            if ready(self) {
                return;
            }
            if let Some(status) = self.child().try_wait().expect("poll skiff-vmm") {
                if ready(self) {
                    return;
                }
                panic!(
                    "{}: exited ({status}) before {what}\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "{}: no {what} after {PATIENCE:?}\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_console(&mut self, needle: &str) {
        self.wait_until(&format!("`{needle}` on the console"), |v| {
            v.console().contains(needle)
        });
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child().try_wait().expect("poll skiff-vmm") {
                self.child = None;
                return status;
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "{}: still running after {PATIENCE:?}\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn expect_success(&mut self) {
        let status = self.wait_exit();
        assert!(
            status.success(),
            "{}: {status}\n{}",
            self.name,
            self.diagnostics()
        );
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One connection to a VMM's API socket: a request line, a reply line.
struct Api {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Api {
    fn connect(vmm: &mut Vmm, socket: &Path) -> Self {
        vmm.wait_until("the API socket", |_| socket.exists());
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}\n{}", socket.display(), vmm.diagnostics()));
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        Self {
            writer: stream.try_clone().expect("clone API stream"),
            reader: BufReader::new(stream),
        }
    }

    /// Sends `request`; the reply without its newline. An empty reply (the VMM closed
    /// the connection without answering) fails the test with the VMM's output.
    fn call(&mut self, vmm: &Vmm, request: &str) -> String {
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .unwrap_or_else(|e| panic!("send `{request}`: {e}\n{}", vmm.diagnostics()));
        let mut reply = String::new();
        let read = self.reader.read_line(&mut reply);
        assert!(
            matches!(read, Ok(n) if n > 0) && reply.ends_with('\n'),
            "no reply to `{request}` ({read:?}, {reply:?})\n{}",
            vmm.diagnostics()
        );
        reply.trim_end().to_string()
    }
}

fn disk(path: &Path) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("create disk");
}

/// A copy of `disk` with the guest's gate opened.
fn disk_with_gate_open(disk: &Path, copy: &Path) {
    std::fs::copy(disk, copy).expect("copy disk");
    std::fs::OpenOptions::new()
        .write(true)
        .open(copy)
        .and_then(|f| f.write_all_at(b"SNAPGO!!", GATE_OFFSET))
        .expect("open the gate");
}

fn result_line(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| l.starts_with("testguest: snapwork result="))
        .map(str::to_owned)
}

/// Runs the job with the gate, waits until the guest sits at it, and snapshots it to
/// `snap` with `snapshot DIR exit`. Returns the (gate still closed) disk.
fn snapshot_at_gate(dir: &Path, guest: &str, snap: &Path, check_api: bool) -> PathBuf {
    let disk_path = dir.join("original.img");
    disk(&disk_path);
    let socket = dir.join("original.sock");
    let job = job(true);
    let mut original = Vmm::spawn(
        dir,
        "original",
        &[
            "run",
            "--kernel",
            guest,
            "--cpus",
            "2",
            "--cmdline",
            &job,
            "--disk",
            disk_path.to_str().expect("UTF-8 path"),
            "--api-socket",
            socket.to_str().expect("UTF-8 path"),
        ],
    );
    original.wait_for_console(&format!("snapwork waiting at step {GATE}"));
    let mut api = Api::connect(&mut original, &socket);
    if check_api {
        assert_eq!(api.call(&original, "status"), "ok running");
        assert_eq!(api.call(&original, "pause"), "ok paused");
        assert_eq!(api.call(&original, "status"), "ok paused");
        assert_eq!(api.call(&original, "resume"), "ok running");
        // Bad requests and failed snapshots are replies; the connection and VM stay.
        let reply = api.call(&original, "reboot now");
        assert!(reply.starts_with("error unknown request"), "{reply}");
        let reply = api.call(&original, "snapshot /proc/skiff-no-such-dir");
        assert!(reply.starts_with("error "), "{reply}");
        assert_eq!(api.call(&original, "status"), "ok running");
    }
    let reply = api.call(&original, &format!("snapshot {} exit", snap.display()));
    assert!(
        reply.starts_with("ok {") && reply.contains("\"memory_bytes\":134217728"),
        "snapshot reply: {reply}\n{}",
        original.diagnostics()
    );
    original.expect_success();
    let console = original.console();
    assert!(
        !console.contains(&format!("step {}/", GATE + 1)),
        "the original went past the gate:\n{console}"
    );
    disk_path
}

#[test]
fn restored_guests_carry_on_and_finish_correctly() {
    let Some(guest) = prerequisites() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let guest = guest.to_string_lossy().into_owned();

    // The uninterrupted run (no gate) gives the expected result.
    let reference_disk = dir.join("reference.img");
    disk(&reference_disk);
    let job_plain = job(false);
    let mut reference = Vmm::spawn(
        dir,
        "reference",
        &[
            "run",
            "--kernel",
            &guest,
            "--cpus",
            "2",
            "--cmdline",
            &job_plain,
            "--disk",
            reference_disk.to_str().unwrap(),
        ],
    );
    reference.expect_success();
    let expected = result_line(&reference.console())
        .unwrap_or_else(|| panic!("no result\n{}", reference.diagnostics()));

    let snap = dir.join("snap");
    let disk_at_snapshot = snapshot_at_gate(dir, &guest, &snap, true);

    // Two restores at once, each on its own copy of the disk; `a` starts paused and
    // is resumed over its API socket.
    let mut restores = Vec::new();
    for name in ["a", "b"] {
        let copy = dir.join(format!("{name}.img"));
        disk_with_gate_open(&disk_at_snapshot, &copy);
        let socket = dir.join(format!("{name}.sock"));
        let mut args = vec![
            "restore".to_string(),
            "--snapshot".into(),
            snap.display().to_string(),
            "--disk".into(),
            copy.display().to_string(),
        ];
        if name == "a" {
            args.extend([
                "--paused".into(),
                "--api-socket".into(),
                socket.display().to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        restores.push((Vmm::spawn(dir, name, &args), socket));
    }
    {
        let (a, socket) = &mut restores[0];
        let mut api = Api::connect(a, socket);
        assert_eq!(api.call(a, "status"), "ok paused");
        assert!(
            !a.console().contains("gate open"),
            "a paused restore ran:\n{}",
            a.diagnostics()
        );
        assert_eq!(api.call(a, "resume"), "ok running");
    }
    for (vmm, _) in &mut restores {
        vmm.expect_success();
        let console = vmm.console();
        assert!(
            !console.contains("snapwork ready") && console.contains("snapwork gate open"),
            "the restored guest did not carry on from the gate:\n{}",
            vmm.diagnostics()
        );
        assert!(console.contains(&format!("step {STEPS}/{STEPS}")));
        assert_eq!(
            result_line(&console).as_deref(),
            Some(expected.as_str()),
            "{}",
            vmm.diagnostics()
        );
    }
}

/// Restores `snap` expecting a clean refusal whose one-line reason contains `why`.
fn refused(dir: &Path, name: &str, snap: &Path, extra: &[&str], why: &str) {
    let mut args = vec!["restore", "--snapshot", snap.to_str().expect("UTF-8 path")];
    args.extend_from_slice(extra);
    let mut vmm = Vmm::spawn(dir, name, &args);
    let status = vmm.wait_exit();
    let stderr = std::fs::read_to_string(&vmm.stderr).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(125),
        "{name}: restore of a bad snapshot: {status}\n{}",
        vmm.diagnostics()
    );
    assert!(
        stderr.starts_with("skiff-vmm: ")
            && stderr.lines().count() == 1
            && stderr.contains(why)
            && !stderr.contains("panicked"),
        "{name}: want one line about `{why}`, got:\n{stderr}"
    );
}

fn damaged_copy(dir: &Path, snap: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let bad = dir.join(name);
    std::fs::create_dir(&bad).expect("create snapshot copy");
    std::fs::copy(snap.join("memory"), bad.join("memory")).expect("copy memory file");
    let mut state = std::fs::read(snap.join("state")).expect("read state file");
    damage(&mut state);
    std::fs::write(bad.join("state"), state).expect("write damaged state file");
    bad
}

#[test]
fn corrupt_or_mismatched_snapshots_are_refused() {
    let Some(guest) = prerequisites() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let guest = guest.to_string_lossy().into_owned();
    let snap = dir.join("snap");
    let disk_path = snapshot_at_gate(dir, &guest, &snap, false);
    let disk_arg = ["--disk", disk_path.to_str().unwrap()];

    refused(dir, "memory-mib", &snap, &["--memory-mib", "64"], "128 MiB");
    let flipped = damaged_copy(dir, &snap, "flipped", |s| {
        let mid = s.len() / 2;
        s[mid] ^= 0xff;
    });
    refused(dir, "flipped", &flipped, &disk_arg, "checksum");
    let truncated = damaged_copy(dir, &snap, "truncated", |s| s.truncate(s.len() / 3));
    refused(dir, "truncated", &truncated, &disk_arg, "truncated");
    let magic = damaged_copy(dir, &snap, "magic", |s| s[0] = b'X');
    refused(dir, "magic", &magic, &disk_arg, "bad magic");
    let version = damaged_copy(dir, &snap, "version", |s| s[8] = 99);
    refused(dir, "version", &version, &disk_arg, "version 99");
    let empty = damaged_copy(dir, &snap, "empty", Vec::clear);
    refused(dir, "empty", &empty, &disk_arg, "truncated");

    let short = dir.join("short");
    std::fs::create_dir(&short).unwrap();
    std::fs::copy(snap.join("state"), short.join("state")).unwrap();
    std::fs::File::create(short.join("memory"))
        .and_then(|f| f.set_len(4096))
        .unwrap();
    refused(dir, "short-memory", &short, &disk_arg, "guest memory file");

    let small_disk = dir.join("small.img");
    std::fs::File::create(&small_disk)
        .and_then(|f| f.set_len(4096))
        .unwrap();
    refused(
        dir,
        "small-disk",
        &snap,
        &["--disk", small_disk.to_str().unwrap()],
        "sectors",
    );
    refused(
        dir,
        "missing",
        &dir.join("no-such-snapshot"),
        &disk_arg,
        "No such file",
    );
}
