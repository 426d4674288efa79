//! What a container leaves on the host is bounded and private: a guest flooding its
//! serial console keeps a capped, rotated console log, and the store (the container's
//! spec with its environment, its disk, its console) is readable by its owner only.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_runtime::vm::console_log::{CONSOLE_CAP, CONSOLE_LOG};
use skiff_sys::procfs::status_field;
use skiff_tests::cli::Skiff;

/// The scratch directories of the VMs running now.
fn vm_dirs(s: &Skiff) -> Vec<PathBuf> {
    std::fs::read_dir(s.root.path().join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(CONSOLE_LOG).exists())
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

#[test]
fn a_guest_flooding_its_console_keeps_a_bounded_log_and_runs_on() {
    let Some(s) = Skiff::new(
        "a_guest_flooding_its_console_keeps_a_bounded_log_and_runs_on",
        "skiff-hf",
    ) else {
        return;
    };
    // 20 MiB into the serial port, then a word on stdout, then wait for the host.
    let script = "[ -e /dev/ttyS0 ] || mknod /dev/ttyS0 c 4 64; \
                  yes flood | head -c 20971520 > /dev/ttyS0; echo flooded; \
                  while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7";
    s.ok(&[
        "run", "-d", "--name", "flood", "busybox", "sh", "-c", script,
    ]);
    wait_until("the flood to end", Duration::from_secs(600), || {
        s.ok(&["logs", "flood"]).contains("flooded")
    });
    let dirs = vm_dirs(&s);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = &dirs[0];
    let log = dir.join(CONSOLE_LOG);
    let older = dir.join(format!("{CONSOLE_LOG}.1"));
    // Rotated (20 MiB went through) and both files within the cap.
    assert_eq!(len(&older), CONSOLE_CAP, "console.log.1 is full");
    assert!(len(&log) <= CONSOLE_CAP, "console.log: {}", len(&log));
    let console_files = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(CONSOLE_LOG))
        .count();
    assert_eq!(console_files, 2, "console.log and console.log.1 only");
    // The guest's tty writes each line as "flood\r\n".
    assert!(String::from_utf8_lossy(&std::fs::read(&older).unwrap()).contains("flood\r\n"));
    for p in [&log, &older] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }

    // The guest was not stalled by its console: the container goes on and exits.
    s.ok(&["exec", "flood", "touch", "/tmp/go"]);
    assert_eq!(s.ok(&["wait", "flood"]), "7\n");
    wait_until(
        "the VM's scratch directory to go",
        Duration::from_secs(30),
        || !dir.exists(),
    );
}

#[test]
fn the_store_is_readable_by_its_owner_only() {
    let Some(s) = Skiff::new("the_store_is_readable_by_its_owner_only", "skiff-hf") else {
        return;
    };
    let root = s.root.path();
    // An install from before: directories others could read.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = s
        .ok(&[
            "run",
            "-d",
            "-e",
            "DB_PASSWORD=secret",
            "busybox",
            "sleep",
            "1000",
        ])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let record = root.join("containers").join(&id);
    for d in [root.to_path_buf(), root.join("containers"), record.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let spec = record.join("spec.json");
    assert!(std::fs::read_to_string(&spec)
        .unwrap()
        .contains("DB_PASSWORD=secret"));
    let vm = vm_dirs(&s);
    assert_eq!(vm.len(), 1, "{vm:?}");
    for d in [root.join("run"), vm[0].clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let console = vm[0].join(CONSOLE_LOG);
    let files = [
        spec.clone(),
        record.join("state.json"),
        record.join("rw.img"),
        record.join("log.json"),
        record.join("supervisor.log"),
        console.clone(),
    ];
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // Another local user reads none of it.
    for f in [&spec, &record.join("rw.img"), &console] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(f)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "uid 65534 read {}",
            f.display()
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Opening the store narrows what an older install left open.
    for d in [
        root.to_path_buf(),
        root.join("containers"),
        root.join("run"),
    ] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    s.ok(&["ps", "-q"]);
    for d in [
        root.to_path_buf(),
        root.join("containers"),
        root.join("run"),
    ] {
        assert_eq!(mode(&d), 0o700, "{} after `skiff ps`", d.display());
    }
}

#[test]
fn no_host_process_of_a_vm_can_gain_privileges_and_qemu_is_filtered() {
    let Some(s) = Skiff::new(
        "no_host_process_of_a_vm_can_gain_privileges_and_qemu_is_filtered",
        "skiff-hf",
    ) else {
        return;
    };
    s.ok(&["run", "-d", "--name", "jailed", "busybox", "sleep", "600"]);
    let supervisor: u32 = s.inspect("jailed", "{{.State.Pid}}").parse().unwrap();
    let vm = skiff_sys::procfs::tree(supervisor);
    let helpers: Vec<(u32, String)> = vm[1..]
        .iter()
        .filter_map(|&p| Some((p, status_field(p, "Name")?)))
        .collect();
    assert!(
        helpers.iter().any(|(_, n)| n.starts_with("qemu-system")),
        "no QEMU under the supervisor: {helpers:?}"
    );
    // QEMU's block and vsock devices are skiff-vmm's models unless asked otherwise.
    if std::env::var("SKIFF_QEMU_DEVICES").as_deref() != Ok("qemu") {
        assert!(
            helpers.iter().any(|(_, n)| n == "skiff-vmm"),
            "no skiff-vmm device daemon under the supervisor: {helpers:?}"
        );
    }
    for (pid, name) in &helpers {
        assert_eq!(
            status_field(*pid, "NoNewPrivs").as_deref(),
            Some("1"),
            "{name} ({pid}) may gain privileges"
        );
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap_or_default();
        assert_eq!(
            core.split_whitespace().nth(4),
            Some("0"),
            "{name} ({pid}) may dump the guest's memory: {core}"
        );
        if name.starts_with("qemu-system") || name == "skiff-vmm" {
            // QEMU's -sandbox, the vhost-user daemons' own filter: seccomp mode 2.
            assert_eq!(
                status_field(*pid, "Seccomp").as_deref(),
                Some("2"),
                "{name}"
            );
        }
    }
    // `skiff inspect` shows the same.
    let jail: serde_json::Value =
        serde_json::from_str(&s.inspect("jailed", "{{json .Jail}}")).unwrap();
    let shown = jail["Processes"].as_array().unwrap();
    assert_eq!(shown.len(), helpers.len(), "{jail}");
    assert!(shown.iter().all(|p| p["NoNewPrivs"] == true), "{jail}");
    assert!(
        shown
            .iter()
            .any(|p| p["Name"].as_str().unwrap().starts_with("qemu-system")
                && p["Seccomp"] == "filter"),
        "{jail}"
    );
    assert!(s.ok(&["info"]).contains("Jail: no_new_privs"));
    // The sandbox leaves the guest working.
    assert_eq!(s.ok(&["exec", "jailed", "echo", "inside"]), "inside\n");
}
