//! Snapshot and restore with the test guest under this machine's KVM: a guest in the
//! middle of a long deterministic job (RAM updated in place, disk blocks
//! read-modified-written) is snapshotted over the API socket; two VMs restored from
//! the same snapshot at the same time, each on its own copy of the disk, carry on and
//! end with exactly the result of a run that was never interrupted. Any state lost or
//! shared (memory, vCPU, virtio queues, disk) changes that result.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{prerequisites, vmm_binary, wait_with_deadline};

const STEPS: &str = "40";
const JOB: &str = "testguest.snapwork=40 testguest.snapmib=1";
/// A job that cannot finish before the test snapshots (and so ends) it.
const ENDLESS_JOB: &str = "testguest.snapwork=1000000 testguest.snapmib=1";

fn result_line(console: &Path) -> Option<String> {
    let text = std::fs::read_to_string(console).ok()?;
    text.lines()
        .find(|l| l.starts_with("testguest: snapwork result="))
        .map(str::to_owned)
}

fn blank_disk(path: &Path) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("create disk");
}

fn api(socket: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(socket).expect("connect API socket");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    s.write_all(request.as_bytes()).expect("send request");
    // One reply line per request; the connection stays open for more.
    let mut reply = String::new();
    let _ = BufReader::new(s).read_line(&mut reply);
    reply
}

fn restore(dir: &Path, snap: &Path, disk: &Path, console: &Path) -> std::process::Child {
    Command::new(vmm_binary())
        .arg("restore")
        .arg("--snapshot")
        .arg(snap)
        .arg("--disk")
        .arg(disk)
        .arg("--console")
        .arg(console)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff-vmm restore")
}

#[test]
fn restored_guests_carry_on_and_finish_correctly() {
    let Some(guest) = prerequisites() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let guest = guest.to_string_lossy().into_owned();

    // The uninterrupted run gives the expected result.
    let reference = dir.join("reference.img");
    blank_disk(&reference);
    let ref_console = dir.join("reference.log");
    let out = wait_with_deadline(
        Command::new(vmm_binary())
            .args(["run", "--kernel", &guest, "--cmdline", JOB, "--disk"])
            .arg(&reference)
            .arg("--console")
            .arg(&ref_console)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "reference run: {out:?}");
    let expected = result_line(&ref_console).expect("reference result");

    // The same job, snapshotted once it is a few steps in; the snapshot ends the VM.
    let disk = dir.join("disk.img");
    blank_disk(&disk);
    let console = dir.join("original.log");
    let socket = dir.join("api.sock");
    let original = Command::new(vmm_binary())
        .args(["run", "--kernel", &guest, "--cmdline", JOB, "--disk"])
        .arg(&disk)
        .arg("--console")
        .arg(&console)
        .arg("--api-socket")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&console).is_ok_and(|c| c.contains("step 3/")) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "guest made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let snap = dir.join("snap");
    let reply = api(&socket, &format!("snapshot {} exit\n", snap.display()));
    assert!(reply.starts_with("ok {"), "snapshot reply: {reply:?}");
    let out = wait_with_deadline(original, Duration::from_secs(60));
    assert!(out.status.success(), "original after snapshot: {out:?}");
    let original_log = std::fs::read_to_string(&console).unwrap();
    assert!(
        !original_log.contains("snapwork result"),
        "the original finished before the snapshot; nothing was tested"
    );
    assert!(!original_log.contains(&format!("step {STEPS}/")));

    // Two restores at once, each on its own copy of the disk as it was at the snapshot.
    let mut children: Vec<(PathBuf, std::process::Child)> = Vec::new();
    for name in ["a", "b"] {
        let copy = dir.join(format!("{name}.img"));
        std::fs::copy(&disk, &copy).unwrap();
        let log = dir.join(format!("{name}.log"));
        children.push((log.clone(), restore(dir, &snap, &copy, &log)));
    }
    for (log, child) in children {
        let out = wait_with_deadline(child, Duration::from_secs(300));
        assert!(out.status.success(), "restore: {out:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !text.contains("snapwork ready"),
            "the restored guest started over instead of carrying on:\n{text}"
        );
        assert_eq!(
            result_line(&log).as_deref(),
            Some(expected.as_str()),
            "{text}"
        );
    }
}

#[test]
fn corrupt_or_mismatched_snapshots_are_refused() {
    let Some(guest) = prerequisites() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let guest = guest.to_string_lossy().into_owned();
    let disk = dir.join("disk.img");
    blank_disk(&disk);
    let console = dir.join("c.log");
    let socket = dir.join("api.sock");
    let vm = Command::new(vmm_binary())
        .args([
            "run",
            "--kernel",
            &guest,
            "--cmdline",
            ENDLESS_JOB,
            "--disk",
        ])
        .arg(&disk)
        .arg("--console")
        .arg(&console)
        .arg("--api-socket")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&console).is_ok_and(|c| c.contains("snapwork ready")) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "guest never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(api(&socket, "bogus\n").split(' ').next(), Some("error"));
    let snap = dir.join("snap");
    let reply = api(&socket, &format!("snapshot {} exit\n", snap.display()));
    assert!(reply.starts_with("ok {"), "{reply:?}");
    wait_with_deadline(vm, Duration::from_secs(60));

    let refused = |snap: &Path, extra: &[&str]| {
        let out = wait_with_deadline(
            Command::new(vmm_binary())
                .arg("restore")
                .arg("--snapshot")
                .arg(snap)
                .args(extra)
                .arg("--console")
                .arg("off")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(60),
        );
        assert!(!out.status.success(), "restore of a bad snapshot succeeded");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    // A memory size the caller does not expect.
    refused(&snap, &["--memory-mib", "64"]);
    // Flipped bytes in the state file fail its checksum; a truncated one, its length.
    for (name, damage) in [("flipped", 0usize), ("truncated", 1)] {
        let bad = dir.join(name);
        std::fs::create_dir(&bad).unwrap();
        std::fs::copy(snap.join("memory"), bad.join("memory")).unwrap();
        let mut state = std::fs::read(snap.join("state")).unwrap();
        if damage == 0 {
            let mid = state.len() / 2;
            state[mid] ^= 0xff;
        } else {
            state.truncate(state.len() / 3);
        }
        std::fs::write(bad.join("state"), state).unwrap();
        refused(&bad, &[]);
    }
    // A memory file of the wrong size.
    let short = dir.join("short");
    std::fs::create_dir(&short).unwrap();
    std::fs::copy(snap.join("state"), short.join("state")).unwrap();
    std::fs::File::create(short.join("memory"))
        .and_then(|f| f.set_len(4096))
        .unwrap();
    refused(&short, &[]);
}
