//! Podman 4.3 drives the runtime exactly as it drives runc (`podman --runtime PATH`,
//! through conmon): `run --rm`, exit codes, `-it` on a real terminal, `exec`, `stop`
//! with its grace period, on the busybox image loaded from a local archive into a
//! store of the test's own. Networking is not the point here (`--network none`). Every
//! test runs twice: with runc, which proves the harness, and with skiff-runtime.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
use std::time::{Duration, Instant};

use skiff_tests::clients::{
    run_with_timeout, runc, script_available, skiff_runtime, Input, Podman, Runtime, CLIENT_TIMEOUT,
};

/// One test body, run once per runtime: `NAME::runc` and `NAME::skiff_runtime`.
/// Attributes before a name apply to its skiff-runtime variant only.
macro_rules! with_each_runtime {
    ($($(#[$skiff_attr:meta])* $name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn runc() {
                let test = concat!(stringify!($name), "::runc");
                if let Some(rt) = super::runc(test) {
                    super::$name(test, rt);
                }
            }

            #[test]
            $(#[$skiff_attr])*
            fn skiff_runtime() {
                let test = concat!(stringify!($name), "::skiff_runtime");
                if let Some(rt) = super::skiff_runtime(test) {
                    super::$name(test, rt);
                }
            }
        }
    )*};
}

with_each_runtime!(
    run_rm_output_and_exit_codes,
    interactive_terminal,
    exec_output_status_and_terminal,
    stop_honours_the_grace_period,
    hostname_hosts_and_containerenv_are_bound,
    default_network_gives_the_usual_address,
);

const IMAGE: &str = Podman::IMAGE;

/// `podman run --rm`: output and exit status pass through and the container is gone.
fn run_rm_output_and_exit_codes(test: &str, rt: Runtime) {
    let Some(pm) = Podman::start(test, rt) else {
        return;
    };
    let out = pm.expect(
        &["run", "--rm", "--network", "none", IMAGE, "echo", "hello"],
        0,
    );
    assert_eq!(out.trim(), "hello");
    let out = pm.expect(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        3,
    );
    assert_eq!(out.trim(), "out");
    // Environment, working directory and user from the command line.
    let out = pm.expect(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-e",
            "GREETING=hi",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
            IMAGE,
            "sh",
            "-c",
            "echo $GREETING; pwd; id -u; id -g",
        ],
        0,
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["hi", "/tmp", "1000", "1000"]
    );
    // stdin reaches the process with -i, end of file included.
    let mut cmd = pm.podman(&[
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        IMAGE,
        "tr",
        "a-z",
        "A-Z",
    ]);
    let out = run_with_timeout(&mut cmd, Input::Bytes(b"shout\n"), CLIENT_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SHOUT");
    assert_eq!(pm.expect(&["ps", "--all", "--quiet"], 0).trim(), "");
}

/// Podman binds single files (/etc/hostname, /etc/hosts, /run/.containerenv) that it
/// writes itself; the container sees Podman's versions.
fn hostname_hosts_and_containerenv_are_bound(test: &str, rt: Runtime) {
    let Some(pm) = Podman::start(test, rt) else {
        return;
    };
    let out = pm.expect(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--hostname",
            "podhost",
            IMAGE,
            "sh",
            "-c",
            "echo name=$(cat /etc/hostname); echo uname=$(hostname); \
             grep -q localhost /etc/hosts && echo hosts-localhost; \
             test -f /run/.containerenv && echo containerenv",
        ],
        0,
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "name=podhost",
            "uname=podhost",
            "hosts-localhost",
            "containerenv"
        ],
        "{out}"
    );
}

/// `podman run -it` on a pty: the process sees a terminal, reads what is typed, and
/// its exit status comes back.
fn interactive_terminal(test: &str, rt: Runtime) {
    if !skiff_tests::prerequisite(test, script_available()) {
        return;
    }
    let Some(pm) = Podman::start(test, rt) else {
        return;
    };
    let (code, screen) = pm.on_terminal(
        &["run", "--rm", "-it", "--network", "none", IMAGE, "sh"],
        // The terminal echoes what is typed, so expect only what the shell computes.
        b"tty; [ -t 0 ] && echo stdin-is-a-$((6 * 7)); exit 5\n",
    );
    assert_eq!(code, Some(5), "terminal showed:\n{screen}");
    assert!(screen.contains("/dev/pts/"), "terminal showed:\n{screen}");
    assert!(
        screen.contains("stdin-is-a-42"),
        "terminal showed:\n{screen}"
    );
}

/// Starts a detached container and waits until its command printed `ready`.
fn start_detached(pm: &Podman, name: &str, script: &str) {
    pm.expect(
        &[
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            script,
        ],
        0,
    );
    let start = Instant::now();
    while !pm.expect(&["logs", name], 0).contains("ready") {
        assert!(
            start.elapsed() < CLIENT_TIMEOUT,
            "{name} never printed ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `podman exec`: output, exit status, a terminal with -it, and the container runs on.
fn exec_output_status_and_terminal(test: &str, rt: Runtime) {
    if !skiff_tests::prerequisite(test, script_available()) {
        return;
    }
    let Some(pm) = Podman::start(test, rt) else {
        return;
    };
    start_detached(
        &pm,
        "execs",
        "echo ready > /tmp/ready; cat /tmp/ready; exec sleep 1000",
    );
    let out = pm.expect(
        &[
            "exec",
            "execs",
            "sh",
            "-c",
            "echo from exec; cat /tmp/ready; exit 8",
        ],
        8,
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["from", "exec", "ready"]
    );
    let out = pm.expect(
        &[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "execs",
            "sh",
            "-c",
            "echo $X; pwd",
        ],
        0,
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1", "/tmp"]);
    let (code, screen) = pm.on_terminal(&["exec", "-it", "execs", "sh", "-c", "tty; exit 4"], b"");
    assert_eq!(code, Some(4), "terminal showed:\n{screen}");
    assert!(screen.contains("/dev/pts/"), "terminal showed:\n{screen}");
    let state = pm.expect(&["inspect", "--format", "{{.State.Status}}", "execs"], 0);
    assert_eq!(state.trim(), "running");
    pm.expect(&["rm", "--force", "--time", "0", "execs"], 0);
}

/// `podman stop -t N`: SIGTERM first, and SIGKILL only once the grace period is over.
fn stop_honours_the_grace_period(test: &str, rt: Runtime) {
    let Some(pm) = Podman::start(test, rt) else {
        return;
    };
    // A process that handles SIGTERM ends with its own status, well within the grace.
    start_detached(
        &pm,
        "polite",
        "trap 'echo got TERM; exit 9' TERM; echo ready; while :; do sleep 0.2; done",
    );
    pm.expect(&["stop", "--time", "60", "polite"], 0);
    let code = pm.expect(&["inspect", "--format", "{{.State.ExitCode}}", "polite"], 0);
    assert_eq!(code.trim(), "9");
    assert!(pm.expect(&["logs", "polite"], 0).contains("got TERM"));
    // One that ignores SIGTERM is killed, and not before the grace period ran out.
    start_detached(
        &pm,
        "stubborn",
        "trap '' TERM; echo ready; while :; do sleep 0.2; done",
    );
    let grace = 3;
    let t0 = Instant::now();
    pm.expect(&["stop", "--time", &grace.to_string(), "stubborn"], 0);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(grace),
        "stopped after {took:?}, grace was {grace} s"
    );
    let code = pm.expect(
        &["inspect", "--format", "{{.State.ExitCode}}", "stubborn"],
        0,
    );
    assert_eq!(code.trim(), "137");
    pm.expect(&["rm", "polite", "stubborn"], 0);
}

/// Podman's default network (CNI's bridge plugin on Debian's podman 4.3): the container
/// has the address Podman gave it and reaches a server on the bridge's gateway through
/// it. Podman runs in a network namespace of the test's own, so the bridge, its NAT
/// rules and all traffic stay there.
fn default_network_gives_the_usual_address(test: &str, rt: Runtime) {
    let Some(mut pm) = Podman::start(test, rt) else {
        return;
    };
    let ns = format!("skt-podman-{}-{}", pm.runtime.name, std::process::id());
    if !skiff_tests::prerequisite(test, pm.in_private_netns(&ns)) {
        return;
    }
    pm.expect(
        &[
            "run",
            "--detach",
            "--name",
            "web",
            IMAGE,
            "sh",
            "-c",
            "echo ready; while :; do sleep 1; done",
        ],
        0,
    );
    let ip = pm.expect(
        &[
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}}",
            "web",
        ],
        0,
    );
    let ip = ip.trim();
    let gateway = pm.expect(
        &["inspect", "--format", "{{.NetworkSettings.Gateway}}", "web"],
        0,
    );
    let gateway = gateway.trim();
    assert!(ip.starts_with("10.88."), "podman gave {ip:?}");
    let addrs = pm.expect(&["exec", "web", "ip", "-o", "-4", "addr", "show"], 0);
    assert!(addrs.contains(&format!("inet {ip}/16")), "{addrs}");
    let routes = pm.expect(&["exec", "web", "ip", "route", "show"], 0);
    assert!(
        routes.contains(&format!("default via {gateway}")),
        "{routes}"
    );

    // A server on the gateway address, in the test's namespace.
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "reached the host side\n").unwrap();
    let mut server = pm
        .in_netns("busybox")
        .args(["httpd", "-f", "-p", &format!("{gateway}:8080"), "-h"])
        .arg(www.path())
        .spawn()
        .unwrap();
    let url = format!("http://{gateway}:8080/index.html");
    let mut got = String::new();
    for _ in 0..20 {
        let out = pm.output(&["exec", "web", "wget", "-q", "-O", "-", &url]);
        got = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(got.trim(), "reached the host side");
    pm.expect(&["rm", "--force", "--time", "0", "web"], 0);
}
