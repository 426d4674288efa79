//! The microVM slice end to end: real guest kernel, real agent, QEMU (TCG here) or the
//! project's VMM, driven through `skiff vm run` and through the runtime library.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_proto::{ContainerConfig, ExitStatus, ProcessSpec};
use skiff_runtime::vm::hypervisor;
use skiff_runtime::{Disk, Event, GuestArtifacts, MicroVm, StartOutcome, VmConfig};
use skiff_tests::{
    busybox_layer, prerequisite, processes_mentioning, skiff_bin, vm_ready, whiteout_layer,
};

fn ready(test: &str) -> Option<PathBuf> {
    if !prerequisite(test, vm_ready()) {
        return None;
    }
    let layer = busybox_layer();
    prerequisite(test, layer.as_ref().map(drop).map_err(Clone::clone))
        .then(|| layer.ok())
        .flatten()
}

fn skiff(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(skiff_bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn vm_run(layers: &[&PathBuf], extra: &[&str], cmd: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut args: Vec<String> = vec!["vm".into(), "run".into()];
    for l in layers {
        args.push("--layer".into());
        args.push(l.display().to_string());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push("--".into());
    args.extend(cmd.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    skiff(&refs, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_codes_are_passed_through() {
    let Some(base) = ready("exit_codes_are_passed_through") else {
        return;
    };
    let out = vm_run(&[&base], &[], &["true"], None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = vm_run(&[&base], &[], &["sh", "-c", "exit 3"], None);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let out = vm_run(&[&base], &[], &["sh", "-c", "kill -9 $$"], None);
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        text(&out.stderr)
    );
    let out = vm_run(&[&base], &[], &["no-such-command"], None);
    assert_eq!(
        out.status.code(),
        Some(127),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("executable file not found"),
        "{}",
        text(&out.stderr)
    );
    let out = vm_run(&[&base], &[], &["/etc/passwd"], None);
    assert_eq!(
        out.status.code(),
        Some(126),
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn stdout_and_stderr_are_kept_apart() {
    let Some(base) = ready("stdout_and_stderr_are_kept_apart") else {
        return;
    };
    let out = vm_run(
        &[&base],
        &[],
        &["sh", "-c", "echo out; echo err >&2; echo out2"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "out\nout2\n");
    assert_eq!(text(&out.stderr), "err\n");
}

#[test]
fn stdin_is_piped_in() {
    let Some(base) = ready("stdin_is_piped_in") else {
        return;
    };
    let input: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = vm_run(
        &[&base],
        &["-i"],
        &["sh", "-c", "wc -c; echo done"],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["200000", "done"]
    );
    // Without -i stdin is /dev/null.
    let out = vm_run(&[&base], &[], &["cat"], Some(b"ignored"));
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn env_cwd_user_and_hostname_are_applied() {
    let Some(base) = ready("env_cwd_user_and_hostname_are_applied") else {
        return;
    };
    let out = vm_run(
        &[&base],
        &[
            "-e",
            "FOO=bar baz",
            "-w",
            "/home/user/new",
            "-u",
            "1000:1000",
            "--hostname",
            "boat",
        ],
        &[
            "sh",
            "-c",
            "echo \"$FOO\"; pwd; id -u; id -g; hostname; umask",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "bar baz\n/home/user/new\n1000\n1000\nboat\n0022\n"
    );
}

#[test]
fn writable_layer_survives_a_reboot() {
    let Some(base) = ready("writable_layer_survives_a_reboot") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rw = dir.path().join("rw.img");
    let rw_s = rw.display().to_string();
    let out = vm_run(
        &[&base],
        &["--rw", &rw_s, "--rw-size", "64M"],
        &["sh", "-c", "echo persisted > /root/note; rm /etc/lowerfile"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = vm_run(
        &[&base],
        &["--rw", &rw_s],
        &[
            "sh",
            "-c",
            "cat /root/note; test -e /etc/lowerfile || echo deleted",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "persisted\ndeleted\n");
    // The same layers without that writable disk: the image itself never changed.
    let out = vm_run(
        &[&base],
        &[],
        &["sh", "-c", "cat /root/note; cat /etc/lowerfile"],
        None,
    );
    assert_eq!(text(&out.stdout), "from the lower layer\n");
}

#[test]
fn whiteout_in_upper_layer_hides_lower_file() {
    let Some(base) = ready("whiteout_in_upper_layer_hides_lower_file") else {
        return;
    };
    let upper = whiteout_layer();
    if !prerequisite(
        "whiteout_in_upper_layer_hides_lower_file",
        upper.as_ref().map(drop).map_err(Clone::clone),
    ) {
        return;
    }
    let upper = upper.unwrap();
    let out = vm_run(
        &[&base, &upper],
        &[],
        &[
            "sh",
            "-c",
            "cat /etc/topfile /etc/lowerfile; test -e /etc/hideme && echo visible || echo hidden",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "from the upper layer\nfrom the lower layer\nhidden\n"
    );
}

#[test]
fn terminal_mode_gives_a_tty() {
    let Some(base) = ready("terminal_mode_gives_a_tty") else {
        return;
    };
    let out = vm_run(
        &[&base],
        &["-t"],
        &[
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; echo to-stderr >&2",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // With a terminal, stderr shares the pty and arrives on stdout (CRLF from the tty).
    assert_eq!(
        text(&out.stdout).replace("\r\n", "\n"),
        "is-a-tty\nto-stderr\n"
    );
}

#[test]
fn sigterm_reaches_the_process() {
    let Some(base) = ready("sigterm_reaches_the_process") else {
        return;
    };
    let mut child = Command::new(skiff_bin())
        .args(["vm", "run", "--layer"])
        .arg(&base)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: plain kill(2) to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(42));
}

/// A VM config with the busybox layer as its only disk.
fn library_config(
    test: &str,
    boot_timeout: Duration,
    scratch: Option<PathBuf>,
) -> Option<VmConfig> {
    let base = ready(test)?;
    let mut config = VmConfig::new(
        GuestArtifacts::locate(None, None).unwrap(),
        hypervisor::select(None).unwrap(),
    );
    config.disks = vec![Disk {
        path: base,
        readonly: true,
        serial: "layer0".into(),
    }];
    config.boot_timeout = boot_timeout;
    config.scratch_parent = scratch;
    Some(config)
}

fn boot_library_vm(
    test: &str,
    boot_timeout: Duration,
    scratch: Option<PathBuf>,
) -> Option<skiff_runtime::Result<(MicroVm, skiff_runtime::AgentConn)>> {
    Some(MicroVm::boot(&library_config(test, boot_timeout, scratch)?))
}

/// Boots a VM from the busybox layer and creates its container.
fn boot_container(test: &str, hostname: &str) -> Option<(MicroVm, skiff_runtime::AgentConn)> {
    let (vm, mut agent) = boot_library_vm(test, Duration::from_secs(60), None)?.unwrap();
    agent
        .create_container(&ContainerConfig {
            id: "t".into(),
            hostname: hostname.into(),
            layers: vec!["layer0".into()],
            ..ContainerConfig::default()
        })
        .unwrap();
    Some((vm, agent))
}

/// Collects events for `stream` until its exit.
fn collect(agent: &mut skiff_runtime::AgentConn, stream: u32) -> (String, String, ExitStatus) {
    let (mut out, mut err) = (String::new(), String::new());
    loop {
        match agent
            .next_event()
            .unwrap()
            .expect("connection closed before exit")
        {
            Event::Stdout { stream: s, bytes } if s == stream => out.push_str(&text(&bytes)),
            Event::Stderr { stream: s, bytes } if s == stream => err.push_str(&text(&bytes)),
            Event::Exited { stream: s, status } if s == stream => return (out, err, status),
            _ => {}
        }
    }
}

#[test]
fn exec_into_a_running_container_and_stop_it() {
    let Some((mut vm, mut agent)) =
        boot_container("exec_into_a_running_container_and_stop_it", "exec-test")
    else {
        return;
    };
    let main = ProcessSpec::new(vec![
        "sh".into(),
        "-c".into(),
        "echo main > /tmp/from-main; exec sleep 600".into(),
    ]);
    assert!(matches!(
        agent.start(1, true, &main).unwrap(),
        StartOutcome::Running { .. }
    ));
    // A second main process is refused.
    assert!(agent.start(2, true, &main).is_err());

    // A second connection, as another client would open it.
    let mut exec_conn = vm.connect().unwrap();
    let mut spec = ProcessSpec::new(vec![
        "sh".into(),
        "-c".into(),
        "sleep 0.2; cat /tmp/from-main; hostname; echo e >&2; exit 5".into(),
    ]);
    spec.env.push("X=1".into());
    assert!(matches!(
        exec_conn.start(7, false, &spec).unwrap(),
        StartOutcome::Running { .. }
    ));
    let (out, err, status) = collect(&mut exec_conn, 7);
    assert_eq!(
        (out.as_str(), err.as_str(), status),
        ("main\nexec-test\n", "e\n", ExitStatus::Exited(5))
    );

    // rlimits, supplementary groups, no_new_privs and umask from the OCI process spec.
    let mut limited = ProcessSpec::new(vec![
        "sh".into(),
        "-c".into(),
        "ulimit -n; ulimit -Hn; id -G; grep NoNewPrivs /proc/self/status; umask".into(),
    ]);
    limited.user = skiff_proto::User {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![10, 20],
        umask: Some(0o077),
    };
    limited.rlimits = vec![skiff_proto::Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 100,
        hard: 200,
    }];
    limited.no_new_privileges = true;
    exec_conn.start(10, false, &limited).unwrap();
    let (out, err, status) = collect(&mut exec_conn, 10);
    assert_eq!(status, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "100\n200\n1000 10 20\nNoNewPrivs:\t1\n0077\n");

    let missing = ProcessSpec::new(vec!["nope".into()]);
    assert_eq!(
        exec_conn.start(8, false, &missing).unwrap(),
        StartOutcome::Failed {
            status: ExitStatus::Exited(127)
        }
    );

    // A client that breaks the protocol is disconnected; the container is unaffected.
    {
        use std::io::Read;
        let mut raw = std::os::unix::net::UnixStream::connect(vm.vsock_uds()).unwrap();
        raw.write_all(format!("CONNECT {}\n", skiff_proto::AGENT_PORT).as_bytes())
            .unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        raw.write_all(&[0xff; 64]).unwrap();
        let mut sink = Vec::new();
        let _ = raw.read_to_end(&mut sink); // ends: the agent closed the connection
    }
    let again = ProcessSpec::new(vec!["true".into()]);
    assert!(matches!(
        exec_conn.start(9, false, &again).unwrap(),
        StartOutcome::Running { .. }
    ));
    assert_eq!(collect(&mut exec_conn, 9).2, ExitStatus::Exited(0));

    // Stop: SIGTERM reaches `sleep`, which dies of it; then the VM powers off.
    agent
        .sender()
        .stop(libc::SIGTERM, Duration::from_secs(10))
        .unwrap();
    let (_, _, status) = collect(&mut agent, 1);
    assert_eq!(status, ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(agent.next_event().unwrap(), Some(Event::PoweringOff));
    agent.sender().hang_up();
    assert!(
        vm.wait(Duration::from_secs(20)).unwrap().is_some(),
        "VM did not power off"
    );
}

/// Runs `script` as a new process of the running container; returns (stdout, status).
fn exec_sh(vm: &MicroVm, stream: u32, script: &str) -> (String, ExitStatus) {
    let mut conn = vm.connect().unwrap();
    let spec = ProcessSpec::new(vec!["sh".into(), "-c".into(), script.into()]);
    conn.start(stream, false, &spec).unwrap();
    let (out, _, status) = collect(&mut conn, stream);
    (out, status)
}

/// Shared directories through the library (the mechanism of `-v` and bundle roots):
/// virtio-fs on both backends, live in both directions while the container runs, and
/// a read-only share refuses writes.
#[test]
fn shared_directories_are_live_both_ways_and_ro_refuses_writes() {
    let test = "shared_directories_are_live_both_ways_and_ro_refuses_writes";
    let Some(mut config) = library_config(test, Duration::from_secs(60), None) else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let (rw, ro) = (host.path().join("rw"), host.path().join("ro"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(rw.join("from-host"), "host\n").unwrap();
    std::fs::write(ro.join("kept"), "kept\n").unwrap();
    config.shares = vec![
        skiff_runtime::Share {
            host_path: rw.clone(),
            tag: "rwshare".into(),
            readonly: false,
        },
        skiff_runtime::Share {
            host_path: ro.clone(),
            tag: "roshare".into(),
            readonly: true,
        },
    ];
    let (mut vm, mut agent) = MicroVm::boot(&config).unwrap();
    let shared = |tag: &str, target: &str, readonly| skiff_proto::SharedDir {
        tag: tag.into(),
        target: target.into(),
        readonly,
    };
    agent
        .create_container(&ContainerConfig {
            id: "t".into(),
            hostname: "shares".into(),
            layers: vec!["layer0".into()],
            shares: vec![
                shared("rwshare", "/data", false),
                shared("roshare", "/ro", true),
            ],
            ..ContainerConfig::default()
        })
        .unwrap();
    let main = ProcessSpec::new(vec!["sleep".into(), "600".into()]);
    agent.start(1, true, &main).unwrap();

    let (out, _) = exec_sh(
        &vm,
        2,
        "grep -E ' /(data|ro) ' /proc/mounts | cut -d' ' -f2,3",
    );
    assert_eq!(out, "/data virtiofs\n/ro virtiofs\n");
    // Guest -> host and host -> guest, while the container runs.
    let (out, status) = exec_sh(&vm, 3, "cat /data/from-host; echo ctr > /data/from-ctr");
    assert_eq!((out.as_str(), status), ("host\n", ExitStatus::Exited(0)));
    assert_eq!(
        std::fs::read_to_string(rw.join("from-ctr")).unwrap(),
        "ctr\n"
    );
    // (A file the guest read less than a second ago may show its old attributes for up
    // to that second: virtiofsd's cache=auto.)
    std::fs::write(rw.join("later"), "later\n").unwrap();
    let (out, _) = exec_sh(&vm, 4, "cat /data/later");
    assert_eq!(out, "later\n");
    // Read-only: readable, writes refused, nothing reaches the host.
    let (out, status) = exec_sh(&vm, 5, "cat /ro/kept; echo x > /ro/new || echo refused");
    assert_eq!(
        (out.as_str(), status),
        ("kept\nrefused\n", ExitStatus::Exited(0))
    );
    assert!(!ro.join("new").exists());

    agent
        .sender()
        .stop(libc::SIGKILL, Duration::from_secs(10))
        .unwrap();
    let _ = collect(&mut agent, 1);
    agent.sender().hang_up();
    assert!(
        vm.wait(Duration::from_secs(20)).unwrap().is_some(),
        "VM did not power off"
    );
    // The share daemons go with the VM.
    let needle = host.path().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "a share daemon outlived its VM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stop_escalates_to_sigkill_after_the_grace_period() {
    let Some((mut vm, mut agent)) =
        boot_container("stop_escalates_to_sigkill_after_the_grace_period", "")
    else {
        return;
    };
    let main = ProcessSpec::new(vec![
        "sh".into(),
        "-c".into(),
        "trap '' TERM; echo armed; while :; do sleep 0.05; done".into(),
    ]);
    agent.start(1, true, &main).unwrap();
    // Wait until the trap is installed.
    loop {
        if let Some(Event::Stdout { bytes, .. }) = agent.next_event().unwrap() {
            if text(&bytes).contains("armed") {
                break;
            }
        }
    }
    let t = Instant::now();
    agent
        .sender()
        .stop(libc::SIGTERM, Duration::from_millis(500))
        .unwrap();
    let (_, _, status) = collect(&mut agent, 1);
    assert_eq!(status, ExitStatus::Signaled(libc::SIGKILL));
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "killed before the grace period ended"
    );
    agent.sender().hang_up();
    assert!(vm.wait(Duration::from_secs(20)).unwrap().is_some());
}

#[test]
fn boot_timeout_cleans_up_everything() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(boot) = boot_library_vm(
        "boot_timeout_cleans_up_everything",
        Duration::from_millis(20),
        Some(scratch.path().to_path_buf()),
    ) else {
        return;
    };
    let err = boot
        .err()
        .expect("no Linux guest and agent come up within 20 ms, even on hardware KVM");
    let msg = err.to_string();
    assert!(msg.contains("did not come up within"), "{msg}");
    // No scratch directory, no QEMU, no vsock backend left behind.
    let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let procs = processes_mentioning(&scratch.path().display().to_string());
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

#[test]
fn missing_kernel_is_one_clear_line() {
    let out = skiff(
        &[
            "vm",
            "run",
            "--kernel",
            "/nonexistent/bzImage",
            "--layer",
            "/dev/null",
            "--",
            "true",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("guest kernel not found")
            && err.contains("/nonexistent/bzImage")
            && err.contains("setup"),
        "{err}"
    );
}

#[test]
fn bad_flags_are_refused_before_booting() {
    for args in [
        vec![
            "vm",
            "run",
            "--layer",
            "/dev/null",
            "--memory",
            "12Q",
            "--",
            "true",
        ],
        vec![
            "vm",
            "run",
            "--layer",
            "/dev/null",
            "--cpus",
            "0",
            "--",
            "true",
        ],
        vec![
            "vm",
            "run",
            "--layer",
            "/dev/null",
            "-w",
            "relative",
            "--",
            "true",
        ],
        vec![
            "vm",
            "run",
            "--layer",
            "/dev/null",
            "-u",
            "root",
            "--",
            "true",
        ],
        vec!["vm", "run", "--layer", "/nonexistent.img", "--", "true"],
    ] {
        let out = skiff(&args, None);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_guest_that_never_comes_up_reports_its_console() {
    const TEST: &str = "a_guest_that_never_comes_up_reports_its_console";
    let scratch = tempfile::tempdir().unwrap();
    let Some(mut config) = library_config(
        TEST,
        Duration::from_secs(60),
        Some(scratch.path().to_path_buf()),
    ) else {
        return;
    };
    // No agent: the kernel finds no init and panics (panic=-1 resets, the VMM exits).
    config.cmdline_extra = "rdinit=/no-such-init init=/no-such-init".into();
    let msg = MicroVm::boot(&config)
        .err()
        .expect("booted without an init")
        .to_string();
    assert!(msg.contains("before its agent came up"), "{msg}");
    assert!(
        msg.contains("No working init found") || msg.contains("Kernel panic"),
        "{msg}"
    );
    assert!(std::fs::read_dir(scratch.path()).unwrap().next().is_none());
    assert!(processes_mentioning(&scratch.path().display().to_string()).is_empty());
}

/// The vmm backend's share plumbing under this machine's KVM (PVM suffices): the
/// runtime starts virtiofsd and passes `--fs` to skiff-vmm, whose guest is the
/// bare-metal test guest (a stock Linux kernel needs hardware KVM): it reads a file
/// the host wrote and creates one the host then finds.
#[test]
fn vmm_backend_serves_shares_through_virtiofsd() {
    let test = "vmm_backend_serves_shares_through_virtiofsd";
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm: {e}"));
    if !prerequisite(test, kvm) {
        return;
    }
    let guest = std::env::var_os("SKIFF_TESTGUEST")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or_else(|| "SKIFF_TESTGUEST is not set (guest/testguest/build.sh)".to_owned());
    if !prerequisite(test, guest.as_ref().map(drop).map_err(Clone::clone)) {
        return;
    }
    let guest = guest.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("from-host.txt"), "hello vmm backend").unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // The test guest ignores the initramfs; any file will do.
    let initramfs = dir.path().join("initramfs");
    std::fs::write(&initramfs, b"unused").unwrap();
    let artifacts = GuestArtifacts {
        kernel: guest,
        initramfs,
    };
    let console = dir.path().join("console.log");
    let shares = [skiff_runtime::Share {
        host_path: share.clone(),
        tag: "skiffv0".into(),
        readonly: false,
    }];
    let selection = hypervisor::Selection {
        kind: skiff_runtime::HypervisorKind::Vmm,
        accel: hypervisor::Accel::Kvm,
        reason: "test".into(),
    };
    let spec = hypervisor::LaunchSpec {
        artifacts: &artifacts,
        memory_mib: 128,
        vcpus: 1,
        disks: &[],
        shares: &shares,
        nets: &[],
        balloon: false,
        cmdline_extra:
            "testguest.skipvsock testguest.fsfile=from-host.txt testguest.fswrite=from-guest.txt",
        vsock_uds: &work.join("vsock.sock"),
        console: &console,
        work_dir: &work,
        die_with_parent: true,
        snapshot: None,
    };
    let mut vm = hypervisor::launch(&selection, &spec).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = loop {
        if let Some(how) = vm.try_wait().unwrap() {
            break how;
        }
        assert!(Instant::now() < deadline, "the VM did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    vm.kill();
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(ended.contains("exit status: 0"), "{ended}\n{log}");
    for line in [
        "testguest: fs tag=skiffv0 request_queues=1",
        "testguest: fs read 17 bytes (size 17): hello vmm backend",
        "testguest: 1 virtio-fs devices ok",
    ] {
        assert!(log.contains(line), "missing `{line}` in console:\n{log}");
    }
    assert_eq!(
        std::fs::read_to_string(share.join("from-guest.txt")).unwrap(),
        "written by the test guest over virtio-fs"
    );
    let needle = share.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "virtiofsd outlived its VM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One command in a VM restored from `snap`, as `hostname`: (stdout, exit code).
fn run_restored(
    snap: &skiff_runtime::Snapshot,
    hostname: &str,
    script: &str,
) -> (String, Option<i32>) {
    let selection = hypervisor::select(Some(skiff_runtime::HypervisorKind::Qemu)).unwrap();
    let mut vm = snap
        .restore(&selection, None, Duration::from_secs(120))
        .unwrap();
    let mut p = ProcessSpec::new(vec!["sh".into(), "-c".into(), script.into()]);
    p.env = vec![format!("PATH={}", skiff_proto::DEFAULT_PATH)];
    let out = vm
        .run(hostname, &p, 1 << 16, Duration::from_secs(60))
        .unwrap();
    (text(&out.stdout), out.status.map(ExitStatus::code))
}

#[test]
fn vms_restored_from_one_snapshot_have_their_own_writes_names_and_randomness() {
    let test = "vms_restored_from_one_snapshot";
    if !skiff_tests::prerequisite(test, skiff_tests::snapshot_ready()) {
        return;
    }
    let Some(base) = ready(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = skiff_runtime::WarmSpec {
        artifacts: GuestArtifacts::locate(None, None).unwrap(),
        selection: hypervisor::select(Some(skiff_runtime::HypervisorKind::Qemu)).unwrap(),
        layers: vec![base],
        memory_mib: 128,
        vcpus: 1,
        writable_disk_bytes: None,
        scratch_parent: None,
        boot_timeout: Duration::from_secs(120),
    };
    let snap_dir = dir.path().join("snap");
    skiff_runtime::Snapshot::create(&spec, &snap_dir).unwrap();
    // As a daemon would after a restart: from the directory alone.
    let snap = skiff_runtime::Snapshot::open(&snap_dir).unwrap();
    let ram_before = std::fs::read(snap_dir.join("ram")).unwrap();

    // The first VM writes into its root filesystem; the second must not see it.
    let script = "if [ -e /etc/written ]; then echo seen; else echo fresh; fi; \
                  echo x > /etc/written; hostname; \
                  head -c16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s";
    let (a, code_a) = run_restored(&snap, "snap-a", script);
    // A restored guest's clock resumes where the snapshot's stopped, seconds ago by
    // now, unless the agent sets it.
    std::thread::sleep(Duration::from_secs(4));
    let (b, code_b) = run_restored(&snap, "snap-b", script);
    assert_eq!((code_a, code_b), (Some(0), Some(0)), "a: {a}\nb: {b}");
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    assert_eq!(a[..2], ["fresh", "snap-a"], "{a:?}");
    assert_eq!(b[..2], ["fresh", "snap-b"], "{b:?}");
    assert_eq!(a[2].len(), 32, "{a:?}");
    assert_ne!(
        a[2], b[2],
        "two restored VMs produced the same random bytes"
    );
    // The clock is the host's, not the snapshot's.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let guest: u64 = b[3].parse().unwrap();
    assert!(now.abs_diff(guest) <= 2, "guest clock {guest}, host {now}");
    // Restored VMs map the memory file privately: it is exactly as saved.
    assert!(
        std::fs::read(snap_dir.join("ram")).unwrap() == ram_before,
        "a restored VM changed the snapshot's memory file"
    );
}

#[test]
fn a_damaged_or_missing_snapshot_is_one_clear_error() {
    let test = "a_damaged_or_missing_snapshot";
    if !skiff_tests::prerequisite(test, skiff_tests::snapshot_ready()) {
        return;
    }
    let Some(base) = ready(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let missing = skiff_runtime::Snapshot::open(&dir.path().join("none"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no snapshot here"), "{missing}");

    let selection = hypervisor::select(Some(skiff_runtime::HypervisorKind::Qemu)).unwrap();
    let spec = skiff_runtime::WarmSpec {
        artifacts: GuestArtifacts::locate(None, None).unwrap(),
        selection: selection.clone(),
        layers: vec![base],
        memory_mib: 128,
        vcpus: 1,
        writable_disk_bytes: None,
        scratch_parent: Some(dir.path().to_path_buf()),
        boot_timeout: Duration::from_secs(120),
    };
    let snap_dir = dir.path().join("snap");
    skiff_runtime::Snapshot::create(&spec, &snap_dir).unwrap();
    // Same length, garbage inside: only QEMU can tell, and the restore says so.
    let state = snap_dir.join("state");
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::write(&state, vec![0x5a; usize::try_from(len).unwrap()]).unwrap();
    let snap = skiff_runtime::Snapshot::open(&snap_dir).unwrap();
    let err = match snap.restore(
        &selection,
        Some(dir.path().to_path_buf()),
        Duration::from_secs(60),
    ) {
        Ok(_) => panic!("a VM came up from a damaged snapshot"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("QEMU said"), "{err}");
    assert!(!err.contains('\n') || err.lines().count() < 30, "{err}");
    // Nothing of the failed restore is left running.
    let needle = dir.path().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(processes_mentioning(&needle).is_empty());
    // A truncated state file is caught before QEMU starts.
    std::fs::write(&state, b"short").unwrap();
    let err = skiff_runtime::Snapshot::open(&snap_dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("damaged"), "{err}");
}
