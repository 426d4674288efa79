//! The control API of `skiff-vmm run --api-socket` with the test guest: pause stops the
//! guest's progress (its console stops growing), resume lets it carry on and finish,
//! and bad requests are error replies on a connection that stays usable.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{prerequisites, vmm_binary};

/// Deadline for anything a busy machine may make slow (never reached when things work).
const PATIENCE: Duration = Duration::from_secs(900);

#[test]
fn pause_stops_the_guest_and_resume_lets_it_finish() {
    let Some(guest) = prerequisites() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let console = dir.join("console");
    let stderr = dir.join("stderr");
    let socket = dir.join("api.sock");
    let mut vmm = Command::new(vmm_binary())
        .args(["run", "--kernel"])
        .arg(&guest)
        .args([
            "--cmdline",
            "testguest.snapwork=12 testguest.snapmib=1",
            "--disk",
        ])
        .arg(&disk)
        .arg("--console")
        .arg(&console)
        .arg("--api-socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let diagnostics = || {
        format!(
            "--- console ---\n{}\n--- stderr ---\n{}",
            std::fs::read_to_string(&console).unwrap_or_default(),
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    };
    let start = Instant::now();
    while !std::fs::read_to_string(&console).is_ok_and(|c| c.contains("step 1/12")) {
        if let Some(status) = vmm.try_wait().unwrap() {
            panic!("skiff-vmm exited ({status}) early\n{}", diagnostics());
        }
        assert!(start.elapsed() < PATIENCE, "no progress\n{}", diagnostics());
        std::thread::sleep(Duration::from_millis(50));
    }

    let stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut call = |request: &str| {
        writer.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        assert!(
            reply.ends_with('\n'),
            "no reply to `{request}`: {reply:?}\n{}",
            diagnostics()
        );
        reply.trim_end().to_string()
    };
    assert_eq!(call("status"), "ok running");
    assert_eq!(call("pause"), "ok paused");
    assert_eq!(call("status"), "ok paused");
    // Paused vCPUs write nothing: the console is the same a while later. (A broken
    // pause can slip through a short wait; a working one never fails it.)
    let paused_at = std::fs::read_to_string(&console).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(std::fs::read_to_string(&console).unwrap(), paused_at);
    assert!(call("bogus").starts_with("error unknown request"));
    assert!(call("pause now").starts_with("error "));
    assert_eq!(call("pause"), "ok paused", "pausing twice is fine");
    assert_eq!(call("resume"), "ok running");
    assert_eq!(call("resume"), "ok running", "resuming twice is fine");

    let start = Instant::now();
    let status = loop {
        if let Some(status) = vmm.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "never finished\n{}",
            diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}\n{}", diagnostics());
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains("step 12/12") && text.contains("PASS (snapwork)"),
        "{}",
        diagnostics()
    );
}
