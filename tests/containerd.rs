//! containerd 1.6 drives the runtime exactly as it drives runc: `ctr` against a
//! containerd of the test's own, the runc v2 shim with its `BinaryName` option
//! (`ctr run --runc-binary`) pointed at the runtime, on the busybox image imported from
//! a local archive. Every test runs twice: with runc, which proves the harness, and
//! with skiff-runtime, which is what the test is for.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
use std::time::{Duration, Instant};

use skiff_tests::clients::{
    on_terminal, runc, script_available, skiff_runtime, Containerd, Runtime, CLIENT_TIMEOUT,
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
    run_passes_output_and_exit_codes,
    exec_output_and_status,
    kill_and_wait,
    terminal,
);

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `ctr run --rm` in the foreground: output and exit status pass through, and nothing
/// is left behind.
fn run_passes_output_and_exit_codes(test: &str, rt: Runtime) {
    let Some(ctd) = Containerd::start(test, rt) else {
        return;
    };
    let out = ctd.expect(
        &args(&ctd.run_args(&["--rm"], "hello", &["echo", "hello from the container"])),
        0,
    );
    assert_eq!(out.trim(), "hello from the container");
    let out = ctd.expect(
        &args(&ctd.run_args(&["--rm"], "three", &["sh", "-c", "echo to stdout; exit 3"])),
        3,
    );
    assert_eq!(out.trim(), "to stdout");
    // The image's environment and working directory reach the process.
    let out = ctd.expect(
        &args(&ctd.run_args(
            &["--rm", "--env", "GREETING=hi"],
            "env",
            &["sh", "-c", "echo $GREETING $PATH; pwd"],
        )),
        0,
    );
    assert!(out.starts_with("hi /"), "{out}");
    assert_eq!(out.lines().last(), Some("/"), "{out}");
    // The process runs on the runtime's kernel: the host's for runc, the microVM's guest
    // kernel for skiff-runtime.
    let kernel = ctd.expect(
        &args(&ctd.run_args(&["--rm"], "uname", &["uname", "-r"])),
        0,
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(
        kernel.trim() == host.trim(),
        ctd.runtime.name == "runc",
        "kernel {kernel}"
    );
    // --rm removed the containers and their tasks.
    assert_eq!(ctd.expect(&["task", "ls", "--quiet"], 0).trim(), "");
    assert_eq!(ctd.expect(&["container", "ls", "--quiet"], 0).trim(), "");
}

/// Starts a detached task and waits until its command has got as far as creating
/// `/tmp/ready` (checked with `ctr task exec`, so the exec path is used throughout).
fn start_detached(ctd: &Containerd, id: &str, script: &str) {
    ctd.expect(
        &args(&ctd.run_args(&["--detach"], id, &["sh", "-c", script])),
        0,
    );
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let exec_id = format!("ready{n}");
        let out = ctd.output(&[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            id,
            "test",
            "-e",
            "/tmp/ready",
        ]);
        if out.status.success() {
            return;
        }
        assert!(
            start.elapsed() < CLIENT_TIMEOUT,
            "{id} never became ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ctr task exec`: output and exit status of an extra process, `ctr task ps`, then
/// SIGKILL of the task and its exit status 137.
fn exec_output_and_status(_test: &str, rt: Runtime) {
    let Some(ctd) = Containerd::start(_test, rt) else {
        return;
    };
    start_detached(&ctd, "execs", "touch /tmp/ready; exec sleep 1000");
    assert_eq!(ctd.task_status("execs").as_deref(), Some("RUNNING"));
    let out = ctd.expect(
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "execs",
            "sh",
            "-c",
            "echo from exec; cat /tmp/ready; exit 5",
        ],
        5,
    );
    assert_eq!(out.trim(), "from exec");
    // A second exec sees the first one's writes: same container, same filesystem.
    ctd.expect(
        &[
            "task",
            "exec",
            "--exec-id",
            "e2",
            "execs",
            "sh",
            "-c",
            "echo x > /tmp/shared",
        ],
        0,
    );
    let out = ctd.expect(
        &[
            "task",
            "exec",
            "--exec-id",
            "e3",
            "execs",
            "cat",
            "/tmp/shared",
        ],
        0,
    );
    assert_eq!(out.trim(), "x");
    // `ctr task ps` asks the runtime for the container's processes (`ps --format json`);
    // the shim names the pids it knows as execs, so a running exec shows its ID.
    ctd.expect(
        &[
            "task",
            "exec",
            "--detach",
            "--exec-id",
            "bg",
            "execs",
            "sleep",
            "300",
        ],
        0,
    );
    let ps = ctd.expect(&["task", "ps", "execs"], 0);
    assert!(ps.lines().count() >= 3, "processes missing:\n{ps}");
    assert!(
        ps.contains("ExecID:bg"),
        "the running exec is not listed:\n{ps}"
    );
    ctd.expect(&["task", "kill", "--signal", "SIGKILL", "execs"], 0);
    ctd.wait_stopped("execs");
    assert_eq!(ctd.delete_task("execs"), 137);
    ctd.expect(&["container", "rm", "execs"], 0);
    assert_eq!(ctd.task_status("execs"), None);
}

/// `ctr task kill` delivers SIGTERM to the container's process, whose handler picks
/// the exit status; the task is then STOPPED until deleted.
fn kill_and_wait(_test: &str, rt: Runtime) {
    let Some(ctd) = Containerd::start(_test, rt) else {
        return;
    };
    start_detached(
        &ctd,
        "killme",
        "trap 'exit 7' TERM; touch /tmp/ready; while :; do sleep 0.2; done",
    );
    ctd.expect(&["task", "kill", "killme"], 0);
    ctd.wait_stopped("killme");
    // Stopped tasks stay listed (and their status readable) until deleted.
    assert_eq!(ctd.task_status("killme").as_deref(), Some("STOPPED"));
    assert_eq!(ctd.delete_task("killme"), 7);
    assert_eq!(ctd.task_status("killme"), None);
    ctd.expect(&["container", "rm", "killme"], 0);
    assert_eq!(ctd.expect(&["container", "ls", "--quiet"], 0).trim(), "");
}

/// `ctr run -t`: the shim hands the runtime a console socket and relays the pty master
/// it gets back; the process sees a terminal named in its own /dev/pts.
fn terminal(test: &str, rt: Runtime) {
    if !skiff_tests::prerequisite(test, script_available()) {
        return;
    }
    let Some(ctd) = Containerd::start(test, rt) else {
        return;
    };
    let run = ctd.run_args(&["--rm", "--tty"], "tty", &["sh"]);
    let (code, screen) = on_terminal(
        &ctd.ctr(&args(&run)),
        // The terminal echoes what is typed, so expect only what the shell computes.
        b"tty; [ -t 0 ] && echo stdin-is-a-$((6 * 7)); exit 3\n",
    );
    assert_eq!(code, Some(3), "terminal showed:\n{screen}");
    assert!(screen.contains("/dev/pts/"), "terminal showed:\n{screen}");
    assert!(
        screen.contains("stdin-is-a-42"),
        "terminal showed:\n{screen}"
    );
}
