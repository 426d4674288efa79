//! Containers as users know them, end to end through the `skiff` binary: run, create,
//! start, stop, kill, restart, rm, ps, logs, exec, wait, inspect, top, stats, commit,
//! rename, prune. Every test uses its own `--root`, so nothing touches /var/lib/skiff,
//! and gets the busybox image the way a fresh machine does (the offline starter image
//! built from Debian's busybox-static).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::cli::{text, Skiff};

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_applies_the_image_config_and_flags_like_docker() {
    let Some(s) = Skiff::new(
        "run_applies_the_image_config_and_flags_like_docker",
        "skiff-ct",
    ) else {
        return;
    };
    // The README's first command, on a store with no images.
    assert_eq!(
        s.ok(&["run", "--rm", "busybox", "echo", "hello"]),
        "hello\n"
    );
    assert!(s.ids().is_empty(), "--rm leaves no container");

    let env_file = s.root.path().join("env");
    std::fs::write(&env_file, "# comment\nB=from-file\nA=overridden\n").unwrap();
    let out = s.ok(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "--env-file",
        env_file.to_str().unwrap(),
        "-w",
        "/tmp",
        "-u",
        "1000:100",
        "--hostname",
        "box",
        "busybox",
        "sh",
        "-c",
        "echo $A $B $(pwd) $(id -u):$(id -g) $(hostname) $HOSTNAME",
    ]);
    assert_eq!(out, "1 from-file /tmp 1000:100 box box\n");
    let out = s.run(&["run", "--rm", "busybox", "sh", "-c", "echo e >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stderr), "e\n");

    // A reader that goes away gives the process SIGPIPE, as a shell pipeline would.
    let mut yes = s
        .command(&["run", "--rm", "busybox", "yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 4];
    yes.stdout.take().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"y\ny\n");
    assert_eq!(yes.wait().unwrap().code(), Some(128 + libc::SIGPIPE));
    // -t gives the process a terminal.
    let out = s.ok(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && echo is-a-tty",
    ]);
    assert_eq!(out, "is-a-tty\r\n");
    // User names come from the container's own /etc/passwd, as Docker's do.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-u",
            "nobody",
            "busybox",
            "sh",
            "-c",
            "echo $(id -u):$(id -g)"
        ]),
        "65534:65534\n"
    );
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-u",
            "1234",
            "busybox",
            "sh",
            "-c",
            "echo $(id -u):$(id -g)"
        ]),
        "1234:0\n"
    );
    s.expect(
        &["run", "--rm", "-u", "no-such-user", "busybox", "true"],
        126,
    );
    // Entrypoint replaced; the image's Cmd (sh) is then dropped.
    assert_eq!(
        s.ok(&["run", "--rm", "--entrypoint", "echo", "busybox", "a", "b"]),
        "a b\n"
    );
    // Docker's exit codes for commands that cannot run.
    s.expect(&["run", "--rm", "busybox", "no-such-command"], 127);
    s.expect(&["run", "--rm", "busybox", "/etc/passwd"], 126);
    // stdin, memory and CPUs of the microVM, read-only root, labels.
    let out = s.run_with_input(
        &["run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo ."],
        Some(b"piped\n"),
    );
    assert_eq!(text(&out.stdout), "piped\n.\n", "{}", text(&out.stderr));
    let out = s.ok(&[
        "run",
        "--name",
        "sized",
        "--memory",
        "384M",
        "--cpus",
        "2",
        "--read-only",
        "--label",
        "team=a",
        "busybox",
        "sh",
        "-c",
        "nproc; grep MemTotal /proc/meminfo; touch /x || echo read-only",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2", "{out}");
    let kb: u64 = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kb > 300 * 1024 && kb <= 384 * 1024, "{out}");
    assert_eq!(lines[2], "read-only");
    assert_eq!(
        s.inspect(
            "sized",
            "{{.Config.Labels.team}} {{.State.Status}} {{.State.ExitCode}}"
        ),
        "a exited 0"
    );
    s.ok(&["rm", "sized"]);
}

#[test]
fn bad_input_is_one_line_exit_125_and_changes_nothing() {
    let Some(s) = Skiff::new(
        "bad_input_is_one_line_exit_125_and_changes_nothing",
        "skiff-ct",
    ) else {
        return;
    };
    s.ok(&["create", "--name", "taken", "busybox", "true"]);
    let before = s.ids();
    s.refused(&["run", "no-such-image-here:1", "true"]);
    s.refused(&["run", "--memory", "12Q", "busybox", "true"]);
    s.refused(&["run", "--cpus", "-1", "busybox", "true"]);
    s.refused(&["run", "-w", "relative", "busybox", "true"]);
    s.refused(&["run", "-u", "bad user", "busybox", "true"]);
    s.refused(&["run", "--name", "taken", "busybox", "true"]);
    s.refused(&["run", "--name", "bad name", "busybox", "true"]);
    s.refused(&["exec", "taken", "true"]);
    s.refused(&["logs", "no-such-container"]);
    s.refused(&["kill", "taken"]);
    s.refused(&["rename", "taken", "also bad"]);
    s.refused(&["commit", "-c", "RUN rm -rf /", "taken"]);
    assert_eq!(s.ids(), before, "refused commands left state behind");
    assert_eq!(s.inspect("taken", "{{.State.Status}}"), "created");
}

#[test]
fn detached_containers_live_beyond_the_cli() {
    let Some(s) = Skiff::new("detached_containers_live_beyond_the_cli", "skiff-ct") else {
        return;
    };
    let script = "trap 'echo got TERM; sleep 1; echo bye; exit 7' TERM; \
                  i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";
    let id = s.ok(&["run", "-d", "--name", "web", "busybox", "sh", "-c", script]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(s.ok(&["ps", "-q"]).trim(), &id[..12]);
    assert!(s.ok(&["ps"]).contains("Up "), "{}", s.ok(&["ps"]));
    assert_eq!(
        s.ok(&["ps", "--format", "{{.Names}}:{{.State}}"]),
        "web:running\n"
    );
    // Unique prefix lookup.
    assert_eq!(s.inspect(&id[..5], "{{.Name}}"), "/web");

    // exec: environment, workdir, user, stdin, exit status.
    let out = s.ok(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/etc",
        "-u",
        "5:6",
        "web",
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u):$(id -g)",
    ]);
    assert_eq!(out, "1 /etc 5:6\n");
    let out = s.run_with_input(&["exec", "-i", "web", "cat"], Some(b"to exec\n"));
    assert_eq!(text(&out.stdout), "to exec\n");
    s.expect(&["exec", "web", "sh", "-c", "exit 4"], 4);
    s.expect(&["exec", "web", "no-such-command"], 127);
    assert!(s.ok(&["top", "web"]).contains("sleep"));
    // cp both ways.
    let host = s.root.path().join("cp");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from the host\n").unwrap();
    s.ok(&[
        "cp",
        host.join("in.txt").to_str().unwrap(),
        "web:/tmp/copied.txt",
    ]);
    assert_eq!(
        s.ok(&["exec", "web", "cat", "/tmp/copied.txt"]),
        "from the host\n"
    );
    s.ok(&[
        "cp",
        "web:/tmp/copied.txt",
        host.join("back.txt").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("back.txt")).unwrap(),
        "from the host\n"
    );
    s.ok(&["cp", "web:/etc", host.to_str().unwrap()]);
    assert!(host.join("etc/passwd").is_file());
    assert!(s.ok(&["stats", "--no-stream"]).contains("web"));

    // rm without -f refuses a running container and changes nothing.
    s.refused(&["rm", "web"]);
    assert_eq!(s.inspect("web", "{{.State.Status}}"), "running");

    // logs -f follows until the container stops; stop waits for the TERM handler.
    wait_until("log lines", Duration::from_secs(20), || {
        s.ok(&["logs", "web"]).contains("tick 2")
    });
    assert_eq!(s.ok(&["logs", "--tail", "1", "web"]).lines().count(), 1);
    let ts = s.ok(&["logs", "-t", "--tail", "1", "web"]);
    assert!(ts.starts_with("20") && ts.contains("Z tick"), "{ts}");
    let mut follow: Child = s
        .command(&["logs", "-f", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(s.ok(&["stop", "-t", "10", "web"]), "web\n");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "stop returned before the handler finished: {took:?}"
    );
    assert_eq!(
        s.inspect("web", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 7"
    );
    assert_eq!(s.ok(&["wait", "web"]), "7\n");
    let mut followed = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(follow.wait().unwrap().success());
    assert!(
        followed.contains("tick 0") && followed.ends_with("got TERM\nbye\n"),
        "{followed}"
    );
    assert!(s.ok(&["ps", "-a"]).contains("Exited (7)"));

    // A process that ignores TERM is killed when the grace period ends.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    wait_until("the trap", Duration::from_secs(20), || {
        s.ok(&["logs", "stubborn"]).contains("ready")
    });
    s.ok(&["stop", "-t", "1", "stubborn"]);
    assert_eq!(s.inspect("stubborn", "{{.State.ExitCode}}"), "137");

    // restart, kill -s, rename, rm -f, prune.
    s.ok(&["restart", "web"]);
    assert_eq!(s.inspect("web", "{{.State.Status}}"), "running");
    s.ok(&["kill", "-s", "USR1", "web"]); // default action: terminate
    assert_eq!(s.ok(&["wait", "web"]), format!("{}\n", 128 + libc::SIGUSR1));
    s.ok(&["rename", "web", "site"]);
    assert_eq!(s.inspect("site", "{{.Id}}"), id);
    s.ok(&["start", "site"]);
    s.ok(&["rm", "-f", "site"]);
    s.ok(&["container", "prune", "-f"]);
    assert!(s.ids().is_empty());
}

#[test]
fn writes_are_private_and_commit_makes_a_runnable_image() {
    let Some(s) = Skiff::new(
        "writes_are_private_and_commit_makes_a_runnable_image",
        "skiff-ct",
    ) else {
        return;
    };
    s.ok(&[
        "run",
        "--name",
        "a",
        "busybox",
        "sh",
        "-c",
        "echo from-a > /etc/added; rm /etc/passwd",
    ]);
    // Another container from the same image sees neither change.
    let out = s.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "cat /etc/added 2>/dev/null || echo none; test -f /etc/passwd && echo passwd",
    ]);
    assert_eq!(out, "none\npasswd\n");
    // The writes survive a restart of the same container.
    s.ok(&["create", "--name", "b", "busybox", "cat", "/etc/added"]);
    s.expect(&["start", "-a", "b"], 1);

    let image = s.ok(&[
        "commit",
        "-m",
        "test",
        "-c",
        "CMD [\"cat\", \"/etc/added\"]",
        "a",
        "mine:1",
    ]);
    assert!(image.starts_with("sha256:"), "{image}");
    assert_eq!(s.ok(&["run", "--rm", "mine:1"]), "from-a\n");
    s.expect(&["run", "--rm", "mine:1", "ls", "/etc/passwd"], 1);
    assert!(s.ok(&["images"]).contains("mine"));
}

#[test]
fn volumes_share_a_host_directory_both_ways() {
    let Some(s) = Skiff::new("volumes_share_a_host_directory_both_ways", "skiff-ct") else {
        return;
    };
    let host = s.root.path().join("vol");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("from-host.txt"), "host\n").unwrap();
    let bind = format!("{}:/data", host.display());
    let out = s.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "cat /data/from-host.txt; echo ctr > /data/from-ctr.txt",
    ]);
    assert_eq!(out, "host\n");
    assert_eq!(
        std::fs::read_to_string(host.join("from-ctr.txt")).unwrap(),
        "ctr\n"
    );
    // Live both ways while the container runs, and :ro refuses writes.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "v",
        "-v",
        &bind,
        "-v",
        &format!("{}:/ro:ro", host.display()),
        "busybox",
        "sleep",
        "1000",
    ]);
    std::fs::write(host.join("later.txt"), "later\n").unwrap();
    assert_eq!(s.ok(&["exec", "v", "cat", "/data/later.txt"]), "later\n");
    s.ok(&["exec", "v", "sh", "-c", "echo again > /data/again.txt"]);
    assert_eq!(
        std::fs::read_to_string(host.join("again.txt")).unwrap(),
        "again\n"
    );
    assert_ne!(
        s.run(&["exec", "v", "touch", "/ro/x"]).status.code(),
        Some(0)
    );
    assert!(!host.join("x").exists());
    // A share daemon that dies under a running container stops it with the reason,
    // instead of leaving the guest hung on the share.
    let daemons: Vec<u32> = skiff_tests::processes_mentioning(&host.display().to_string())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "virtiofsd")
        })
        .collect();
    assert!(!daemons.is_empty(), "no virtiofsd serves the container");
    // SAFETY: kill(2) of a virtiofsd this test's container runs.
    unsafe { libc::kill(daemons[0] as i32, libc::SIGKILL) };
    wait_until("the container to stop", Duration::from_secs(60), || {
        s.inspect("v", "{{.State.Status}}") == "exited"
    });
    let error = s.inspect("v", "{{.State.Error}}");
    assert!(
        error.contains("virtiofsd") && error.contains("exited"),
        "{error}"
    );
    s.ok(&["rm", "-f", "v"]);
    s.refused(&["run", "-v", "relative:/data", "busybox", "true"]);
    s.refused(&[
        "run",
        "-v",
        &format!("{}:/", host.display()),
        "busybox",
        "true",
    ]);
}

/// Shares are virtio-fs (virtiofsd) by default and virtio-9p under
/// `SKIFF_QEMU_DEVICES=qemu`; either way owners and modes set in the container land on
/// the host, and no share daemon outlives its container.
#[test]
fn volumes_are_virtio_fs_keep_owners_and_9p_remains_available() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(s) = Skiff::new(
        "volumes_are_virtio_fs_keep_owners_and_9p_remains_available",
        "skiff-ct",
    ) else {
        return;
    };
    let host = s.root.path().join("vol");
    std::fs::create_dir_all(&host).unwrap();
    let bind = format!("{}:/data", host.display());
    let script = "grep ' /data ' /proc/mounts | cut -d' ' -f3; cat /data/from-host; \
                  echo x > /data/owned; chown 1234:5678 /data/owned; chmod 640 /data/owned";
    let qemu = skiff_runtime::vm::hypervisor::select(None).unwrap().kind
        == skiff_runtime::HypervisorKind::Qemu;
    let mut cases = vec![(None, "virtiofs")];
    if qemu {
        cases.push((Some("qemu"), "9p"));
    }
    for (devices, fstype) in cases {
        std::fs::write(host.join("from-host"), format!("{fstype} from host\n")).unwrap();
        let mut cmd = s.command(&["run", "--rm", "-v", &bind, "busybox", "sh", "-c", script]);
        if let Some(d) = devices {
            cmd.env("SKIFF_QEMU_DEVICES", d);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{fstype}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), format!("{fstype}\n{fstype} from host\n"));
        let meta = std::fs::metadata(host.join("owned")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
            (1234, 5678, 0o640),
            "{fstype}"
        );
        std::fs::remove_file(host.join("owned")).unwrap();
        let needle = host.to_string_lossy().into_owned();
        wait_until("the share daemon to exit", Duration::from_secs(10), || {
            skiff_tests::processes_mentioning(&needle).is_empty()
        });
    }
}

#[test]
fn four_containers_start_concurrently_and_a_dead_supervisor_is_noticed() {
    let Some(s) = Skiff::new(
        "four_containers_start_concurrently_and_a_dead_supervisor_is_noticed",
        "skiff-ct",
    ) else {
        return;
    };
    // Build the image once so the four runs race on containers, not on the image.
    s.ok(&["create", "--name", "warm", "busybox", "true"]);
    let children: Vec<Child> = (0..4)
        .map(|i| {
            s.command(&[
                "run",
                "--rm",
                "--name",
                &format!("c{i}"),
                "busybox",
                "sh",
                "-c",
                "echo $HOSTNAME; echo x > /tmp/f",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut hosts = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        hosts.push(text(&out.stdout).trim().to_owned());
    }
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 4, "{hosts:?}");
    assert_eq!(s.ids().len(), 1);

    // A foreground `run` is stopped from another shell like a detached one.
    let fg = s
        .command(&["run", "--name", "fg", "busybox", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the foreground container", Duration::from_secs(60), || {
        text(&s.run(&["inspect", "-f", "{{.State.Status}}", "fg"]).stdout).trim() == "running"
    });
    assert!(s.ok(&["ps"]).contains("fg"));
    s.ok(&["stop", "-t", "5", "fg"]);
    assert_eq!(
        fg.wait_with_output().unwrap().status.code(),
        Some(128 + libc::SIGTERM)
    );
    s.ok(&["rm", "fg"]);

    // A supervisor killed behind skiff's back shows as exited with the reason.
    s.ok(&["run", "-d", "--name", "victim", "busybox", "sleep", "1000"]);
    let pid: i32 = s.inspect("victim", "{{.State.Pid}}").parse().unwrap();
    // SAFETY: plain kill(2) of the supervisor this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until(
        "the dead supervisor to be noticed",
        Duration::from_secs(10),
        || s.inspect("victim", "{{.State.Status}}") == "exited",
    );
    assert!(s.inspect("victim", "{{.State.Error}}").contains("died"));
    assert!(s.ok(&["ps", "-a"]).contains("Exited (137)"));
    s.ok(&["rm", "victim"]);
}
