//! skiff-runtime's own lifecycle conformance suite: every state transition of the
//! runtime spec and the errors callers match, driven through the binary the way
//! containerd and conmon drive it. The test process is a child subreaper (as the shim
//! and conmon are), so it can wait on the pid in --pid-file and see its exit status.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_tests::clients::{skiff_runtime, Scratch};
use skiff_tests::skiff_runtime_bin;

/// A runtime root, a bundle with a busybox rootfs, and cleanup of both.
struct Fixture {
    scratch: Scratch,
    ids: Vec<String>,
    /// `SKIFF_PLUGINS_CONFIG` for every call, or none.
    plugins: Option<PathBuf>,
}

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with an integer argument.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    });
}

fn busybox_rootfs(root: &Path) {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in [
        "sh", "echo", "cat", "sleep", "hostname", "true", "ls", "id", "touch", "tr", "sort", "wc",
        "grep", "stat", "kill",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/from-host"), "written on the host\n").unwrap();
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        skiff_runtime(test)?;
        if !Path::new("/bin/busybox").is_file() {
            assert!(
                !skiff_tests::require_all(),
                "{test}: install busybox-static"
            );
            eprintln!("SKIP {test}: /bin/busybox missing (busybox-static)");
            return None;
        }
        become_subreaper();
        let scratch = Scratch::new("skiff-rt-");
        Some(Self {
            scratch,
            ids: Vec::new(),
            plugins: None,
        })
    }

    fn root(&self) -> PathBuf {
        self.scratch.path().join("state")
    }

    /// A bundle named `name` whose config is `config` merged over a default.
    fn bundle(&self, name: &str, patch: Value) -> PathBuf {
        let dir = self.scratch.path().join(name);
        busybox_rootfs(&dir.join("rootfs"));
        let mut config = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hostname": "rt-test",
            "process": {
                "args": ["sleep", "1000"],
                "cwd": "/",
                "env": ["PATH=/bin"],
                "user": {"uid": 0, "gid": 0},
            },
            "mounts": default_mounts(),
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}]},
        });
        merge(&mut config, patch);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        dir
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(skiff_runtime_bin());
        c.arg("--root").arg(self.root()).args(args);
        c.stdin(Stdio::null());
        match &self.plugins {
            Some(p) => c.env("SKIFF_PLUGINS_CONFIG", p),
            None => c.env_remove("SKIFF_PLUGINS_CONFIG"),
        };
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        eprintln!(
            "skiff-runtime {args:?} -> {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Fails with exit 1 and an error mentioning `needle`.
    fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    /// create with stdout/stderr to files; returns the pid from --pid-file.
    fn create(&mut self, id: &str, bundle: &Path, extra: &[&str]) -> u32 {
        let pid_file = self.scratch.path().join(format!("{id}.pid"));
        let out = std::fs::File::create(self.scratch.path().join(format!("{id}.out"))).unwrap();
        let err = std::fs::File::create(self.scratch.path().join(format!("{id}.err"))).unwrap();
        let mut args = vec![
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(id);
        self.ids.push(id.to_owned());
        let status = self.cmd(&args).stdout(out).stderr(err).status().unwrap();
        let err = std::fs::read_to_string(self.scratch.path().join(format!("{id}.err")));
        assert_eq!(status.code(), Some(0), "create: {err:?}");
        std::fs::read_to_string(pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn output_of(&self, id: &str, which: &str) -> String {
        std::fs::read_to_string(self.scratch.path().join(format!("{id}.{which}")))
            .unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.cmd(&["delete", "--force", id]).output();
        }
    }
}

/// The mounts `runc spec` writes (containerd's and Podman's lists are the same kinds).
fn default_mounts() -> Value {
    json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ])
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// Waits for our (adopted) child `pid` and returns its shell-style exit status.
fn wait_pid(pid: u32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a pid that is our child (we are its subreaper).
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r == pid as i32 {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            return 128 + libc::WTERMSIG(status);
        }
        assert!(
            r == 0,
            "waitpid({pid}): {}",
            std::io::Error::last_os_error()
        );
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_input_fails_cleanly_without_a_vm() {
    let Some(mut f) = Fixture::new("bad_input_fails_cleanly_without_a_vm") else {
        return;
    };
    let v = f.ok(&["--version"]);
    assert!(
        v.starts_with("skiff-runtime version ") && v.contains("\nspec: 1."),
        "{v}"
    );
    let features: Value = serde_json::from_str(&f.ok(&["features"])).unwrap();
    assert!(features["ociVersionMax"]
        .as_str()
        .unwrap()
        .starts_with("1."));

    for (name, patch) in [
        ("badversion", json!({"ociVersion": "0.1"})),
        ("noargs", json!({"process": {"args": []}})),
        ("relcwd", json!({"process": {"cwd": "relative"}})),
        (
            "badbind",
            json!({"mounts": [{"destination": "/x", "type": "bind", "source": "/does/not/exist"}]}),
        ),
    ] {
        let b = f.bundle(name, patch);
        f.fails(&["create", "--bundle", b.to_str().unwrap(), name], "");
        f.fails(&["state", name], "does not exist");
    }
    let b = f.bundle("garbage", json!({}));
    std::fs::write(b.join("config.json"), "{not json").unwrap();
    f.fails(
        &["create", "--bundle", b.to_str().unwrap(), "garbage"],
        "config.json",
    );
    let b = f.bundle("norootfs", json!({"root": {"path": "missing"}}));
    f.fails(
        &["create", "--bundle", b.to_str().unwrap(), "norootfs"],
        "rootfs",
    );
    // Nothing is left of the failed creates.
    assert_eq!(f.ok(&["list", "-q"]).trim(), "");

    for cmd in [
        &["state", "nope"][..],
        &["start", "nope"],
        &["kill", "nope", "9"],
        &["delete", "nope"],
        &["ps", "--format", "json", "nope"],
    ] {
        f.fails(cmd, "container nope does not exist");
    }
    f.ok(&["delete", "--force", "nope"]);
    f.fails(&["state", "../escape"], "invalid container id");

    // JSON error lines in --log, as containerd reads them.
    let log = f.scratch.path().join("log.json");
    let out = f.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "start",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let last = std::fs::read_to_string(&log).unwrap();
    let line: Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
    assert!(line["time"].is_string());

    // `spec` writes a template that parses, and refuses to overwrite it.
    let dir = f.scratch.path().join("spec");
    std::fs::create_dir_all(&dir).unwrap();
    f.ok(&["spec", "--bundle", dir.to_str().unwrap()]);
    let t: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(t["ociVersion"].as_str().unwrap().starts_with("1."));
    f.fails(&["spec", "--bundle", dir.to_str().unwrap()], "exists");
    f.ids.clear();
}

#[test]
fn every_state_transition_and_its_errors() {
    let Some(mut f) = Fixture::new("every_state_transition_and_its_errors") else {
        return;
    };
    let b = f.bundle("b", json!({}));
    let pid = f.create("life", &b, &[]);
    let st = f.state("life");
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["id"], "life");
    assert_eq!(st["bundle"], b.canonicalize().unwrap().to_str().unwrap());
    assert!(st["ociVersion"].as_str().unwrap().starts_with("1."));
    assert!(st["created"].is_string());
    f.fails(
        &["create", "--bundle", b.to_str().unwrap(), "life"],
        "exists",
    );
    assert_eq!(f.state("life")["status"], "created");
    let ps: Vec<u32> = serde_json::from_str(&f.ok(&["ps", "--format", "json", "life"])).unwrap();
    assert_eq!(ps, [pid]);
    let stats: Value = serde_json::from_str(&f.ok(&["events", "--stats", "life"])).unwrap();
    assert_eq!(stats["type"], "stats");
    assert!(stats["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert!(
        stats["data"]["pids"]["current"].as_u64().unwrap() >= 2,
        "{stats}"
    );

    f.ok(&["start", "life"]);
    assert_eq!(f.state("life")["status"], "running");
    f.fails(&["resume", "life"], "not paused");
    f.ok(&["pause", "life"]);
    assert_eq!(f.state("life")["status"], "paused");
    f.fails(&["pause", "life"], "not running");
    f.fails(&["delete", "life"], "not stopped");
    f.ok(&["resume", "life"]);
    assert_eq!(f.state("life")["status"], "running");
    f.fails(&["start", "life"], "already running");
    f.fails(&["delete", "life"], "not stopped");
    assert_eq!(f.state("life")["status"], "running");
    let list = f.ok(&["list"]);
    assert!(list.contains("life") && list.contains("running"), "{list}");

    // A signal to the container by name; the pid-file process exits with 128+signal.
    // (TERM would not do: the process is PID 1 of its namespace, without a handler.)
    f.ok(&["kill", "life", "KILL"]);
    assert_eq!(wait_pid(pid), 128 + libc::SIGKILL);
    assert_eq!(f.state("life")["status"], "stopped");
    f.fails(&["kill", "life", "9"], "container not running");
    f.fails(&["events", "--stats", "life"], "container not running");
    f.fails(&["start", "life"], "stopped");
    f.ok(&["delete", "life"]);
    f.fails(&["state", "life"], "does not exist");
    f.ok(&["delete", "--force", "life"]);
    f.ok(&["delete", "--force", "life"]);

    // A VM that dies before start ends the container instead of leaving it "created".
    let pid = f.create("vmdies", &b, &[]);
    let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    for k in kids.split_whitespace() {
        // SAFETY: kill(2) on the supervisor's own children (the VM's processes).
        unsafe { libc::kill(k.parse().unwrap(), libc::SIGKILL) };
    }
    assert_eq!(wait_pid(pid), 137);
    assert_eq!(f.state("vmdies")["status"], "stopped");
    f.ok(&["delete", "vmdies"]);

    // delete --force of a created and of a running container. The supervisor dies by
    // SIGKILL and cannot clean up: delete removes the VM's scratch directory.
    let pid = f.create("forced", &b, &[]);
    let record: Value =
        serde_json::from_slice(&std::fs::read(f.root().join("forced").join("state.json")).unwrap())
            .unwrap();
    let vm_dir = PathBuf::from(record["vm_dir"].as_str().unwrap());
    assert!(vm_dir.is_dir(), "{}", vm_dir.display());
    f.ok(&["delete", "--force", "forced"]);
    assert_eq!(wait_pid(pid), 128 + libc::SIGKILL);
    assert!(!vm_dir.exists(), "delete left {}", vm_dir.display());
    f.fails(&["state", "forced"], "does not exist");
}

#[test]
fn stdio_exit_status_rootfs_binds_and_hooks() {
    let Some(mut f) = Fixture::new("stdio_exit_status_rootfs_binds_and_hooks") else {
        return;
    };
    let hooks_out = f.scratch.path().join("hooks");
    std::fs::create_dir_all(&hooks_out).unwrap();
    let shared = f.scratch.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("in"), "from the host bind\n").unwrap();
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}", hooks_out.display())], "timeout": 10});
    let b = f.bundle(
        "b",
        json!({
            "process": {"args": ["sh", "-c",
                "echo out; echo err >&2; hostname; cat /etc/from-host; cat /data/in; \
                 echo guest > /made-in-guest; echo bound > /data/out; exit 7"]},
            "mounts": [{"destination": "/data", "type": "bind", "source": shared.to_str().unwrap(), "options": ["rbind", "rw"]}],
            "hooks": {"createRuntime": [hook("createRuntime")], "poststart": [hook("poststart")], "poststop": [hook("poststop")]},
            "linux": {"resources": {"memory": {"limit": 268435456}}},
        }),
    );
    let pid = f.create("io", &b, &[]);
    let created: Value =
        serde_json::from_str(&std::fs::read_to_string(hooks_out.join("createRuntime")).unwrap())
            .unwrap();
    assert_eq!(created["id"], "io");
    assert!(!hooks_out.join("poststart").exists());
    f.ok(&["start", "io"]);
    assert_eq!(wait_pid(pid), 7);
    let started: Value =
        serde_json::from_str(&std::fs::read_to_string(hooks_out.join("poststart")).unwrap())
            .unwrap();
    assert_eq!(started["id"], "io");
    assert_eq!(
        f.output_of("io", "out"),
        "out\nrt-test\nwritten on the host\nfrom the host bind\n"
    );
    assert_eq!(f.output_of("io", "err"), "err\n");
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/made-in-guest")).unwrap(),
        "guest\n"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("out")).unwrap(),
        "bound\n"
    );
    assert_eq!(f.state("io")["status"], "stopped");
    f.ok(&["delete", "io"]);
    let stopped: Value =
        serde_json::from_str(&std::fs::read_to_string(hooks_out.join("poststop")).unwrap())
            .unwrap();
    assert_eq!(stopped["id"], "io");

    // A read-only root refuses writes; a failing createRuntime hook fails create.
    let ro = f.bundle(
        "ro",
        json!({"root": {"readonly": true}, "process": {"args": ["sh", "-c", "touch /x"]}}),
    );
    let pid = f.create("ro", &ro, &[]);
    f.ok(&["start", "ro"]);
    assert_ne!(wait_pid(pid), 0);
    assert!(!ro.join("rootfs/x").exists());
    f.ok(&["delete", "ro"]);
    let bad = f.bundle(
        "badhook",
        json!({"hooks": {"createRuntime": [{"path": "/bin/false"}]}}),
    );
    f.fails(
        &["create", "--bundle", bad.to_str().unwrap(), "badhook"],
        "createRuntime hook",
    );
    f.fails(&["state", "badhook"], "does not exist");
    assert_no_cgroup("badhook");
}

/// A create that failed left no cgroup behind (v1's cpu hierarchy or v2's).
fn assert_no_cgroup(id: &str) {
    for root in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup"] {
        let dir = Path::new(root).join("skiff-runtime").join(id);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// Receives the pty master the runtime sends over the console socket.
fn receive_fd(listener: &UnixListener) -> OwnedFd {
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u8; 64];
    // SAFETY: msghdr is plain data; the pointers outlive recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len() as _;
    // SAFETY: conn is a connected socket and msg is initialised.
    let n = unsafe { libc::recvmsg(std::os::fd::AsRawFd::as_raw_fd(&conn), &mut msg, 0) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel filled the control buffer; the first header carries the fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null(), "no fd was sent");
        assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
        let fd: RawFd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
        OwnedFd::from_raw_fd(fd)
    }
}

fn read_until(master: &mut std::fs::File, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {:?}",
            String::from_utf8_lossy(&seen)
        );
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn console_socket_exec_and_kill() {
    let Some(mut f) = Fixture::new("console_socket_exec_and_kill") else {
        return;
    };
    let sock = f.scratch.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let b = f.bundle("b", json!({"process": {"terminal": true, "args": ["sh"]}}));
    let receiver = std::thread::spawn(move || receive_fd(&listener));
    let pid = f.create("tty", &b, &["--console-socket", sock.to_str().unwrap()]);
    let mut master = std::fs::File::from(receiver.join().unwrap());
    f.ok(&["start", "tty"]);
    master.write_all(b"echo tty-$((40+2))\n").unwrap();
    read_until(&mut master, "tty-42");
    // The terminal is the container's own: ttyname finds it in the container's devpts.
    master.write_all(b"tty\n").unwrap();
    read_until(&mut master, "/dev/pts/");

    // exec with a process file, detached: its proxy's pid exits with the status.
    let proc_file = f.scratch.path().join("process.json");
    std::fs::write(&proc_file, json!({"args": ["sh", "-c", "exit 3"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}).to_string()).unwrap();
    let exec_pid = f.scratch.path().join("exec.pid");
    f.ok(&[
        "exec",
        "--process",
        proc_file.to_str().unwrap(),
        "--detach",
        "--pid-file",
        exec_pid.to_str().unwrap(),
        "tty",
    ]);
    let epid: u32 = std::fs::read_to_string(&exec_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(epid, pid);
    assert_eq!(wait_pid(epid), 3);
    // The inline form relays output and exits with the status.
    let out = f.run(&["exec", "tty", "sh", "-c", "echo exec-out; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-out\n");

    f.ok(&["kill", "tty", "KILL"]);
    assert_eq!(wait_pid(pid), 128 + libc::SIGKILL);
    f.fails(&["exec", "tty", "true"], "stopped");
    f.ok(&["delete", "tty"]);
}

#[test]
fn plugins_admit_adjust_and_audit() {
    const TEST: &str = "plugins_admit_adjust_and_audit";
    let Some(mut f) = Fixture::new(TEST) else {
        return;
    };
    let dir = skiff_tests::plugin_components();
    if !skiff_tests::prerequisite(TEST, dir.as_ref().map(|_| ()).map_err(Clone::clone)) {
        return;
    }
    let dir = dir.unwrap();
    let config = f.scratch.path().join("plugins.toml");
    // A hook program that appends its stage and the state it is given to a log.
    let hooks_dir = f.scratch.path().join("hooks");
    std::fs::create_dir_all(&hooks_dir).unwrap();
    let script = hooks_dir.join("record");
    std::fs::write(
        &script,
        "#!/bin/sh\n{ printf '%s ' \"$1\"; cat; echo; } >> \"$2\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = f.scratch.path().join("hooks.log");
    let hook = |stage: &str| {
        format!(
            "{{ path = \"{}\", args = [\"record\", \"{stage}\", \"{}\"], stage = \"{stage}\" }}",
            script.display(),
            log.display()
        )
    };
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\nname = \"inject\"\npath = \"{d}/env-injector.wasm\"\nsettings = {{ env = {{ INJECTED = \"by-plugin\" }} }}\n\n\
             [[plugin]]\nname = \"audit\"\npath = \"{d}/audit-logger.wasm\"\nsettings = {{ labels = [] }}\n\n\
             [[plugin]]\nname = \"hooker\"\npath = \"{d}/scripted.wasm\"\n\
             grants = {{ host_hooks = [\"{h}\"] }}\n\
             settings = {{ adjust = {{ hooks = [{c}, {g}, {s}, {p}] }} }}\n",
            d = dir.display(),
            h = hooks_dir.display(),
            c = hook("createRuntime"),
            s = hook("poststart"),
            p = hook("poststop"),
            // In the guest, in the container: writes into the bundle's rootfs.
            g = "{ path = \"/bin/sh\", args = [\"sh\", \"-c\", \"cat > /sc.json\"], stage = \"startContainer\" }",
        ),
    )
    .unwrap();
    let stages = || -> Vec<(String, serde_json::Value)> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (stage, state) = l.split_once(' ').unwrap();
                (stage.to_string(), serde_json::from_str(state).unwrap())
            })
            .collect()
    };
    f.plugins = Some(config);
    let b = f.bundle(
        "b",
        json!({"process": {"args": ["sh", "-c", "echo $INJECTED"]}}),
    );
    let pid = f.create("plug", &b, &[]);
    let seen = stages();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "createRuntime");
    assert_eq!(seen[0].1["id"], "plug");
    assert_eq!(seen[0].1["status"], "creating");
    f.ok(&["start", "plug"]);
    assert_eq!(wait_pid(pid), 0);
    assert_eq!(f.output_of("plug", "out"), "by-plugin\n");
    let seen = stages();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].0, "poststart");
    let in_guest: Value =
        serde_json::from_slice(&std::fs::read(b.join("rootfs/sc.json")).unwrap()).unwrap();
    assert_eq!(in_guest["id"], "plug");
    assert_eq!(in_guest["status"], "created");
    let audit = std::fs::read_to_string(f.root().join("plug/audit.jsonl")).unwrap();
    for event in ["created", "started", "exited"] {
        assert!(
            audit.contains(&format!("\"event\":\"{event}\"")),
            "{event}: {audit}"
        );
    }
    f.ok(&["delete", "plug"]);
    let seen = stages();
    let names: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["createRuntime", "poststart", "poststop"]);
    assert_eq!(seen[2].1["status"], "stopped");
}

#[test]
fn unknown_capabilities_and_unsupported_seccomp_are_refused_at_create() {
    let Some(mut f) =
        Fixture::new("unknown_capabilities_and_unsupported_seccomp_are_refused_at_create")
    else {
        return;
    };
    for (name, patch, needle) in [
        (
            "badcap",
            json!({"process": {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_NOPE"]}}}),
            "NOPE",
        ),
        (
            "notify",
            json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}}}),
            "SCMP_ACT_NOTIFY",
        ),
        (
            "arm",
            json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_AARCH64"]}}}),
            "SCMP_ARCH_X86_64",
        ),
        (
            "maskdots",
            json!({"linux": {"maskedPaths": ["/proc/../etc"]}}),
            "..",
        ),
        (
            "killable",
            json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}}}),
            "WAIT_KILLABLE_RECV",
        ),
        (
            "devmount",
            json!({"mounts": [{"destination": "/mnt", "type": "ext4", "source": "/dev/vda"}]}),
            "not supported",
        ),
    ] {
        let b = f.bundle(name, patch);
        f.fails(&["create", "--bundle", b.to_str().unwrap(), name], needle);
        f.fails(&["state", name], "does not exist");
    }
    assert_eq!(f.ok(&["list", "-q"]).trim(), "");
    f.ids.clear();
}

#[test]
fn masked_readonly_paths_capabilities_and_seccomp_apply_in_the_guest() {
    let Some(mut f) =
        Fixture::new("masked_readonly_paths_capabilities_and_seccomp_apply_in_the_guest")
    else {
        return;
    };
    let script = "busybox grep Cap /proc/self/status; \
        echo secret=$(cat /etc/secret); echo hidden=$(ls /hidden); \
        touch /hidden/new && echo HIDDEN-WRITABLE; \
        echo nope > /ro/f && echo RO-WRITABLE; \
        touch /dev/shm/f && busybox chown 1:1 /dev/shm/f && echo CHOWN-OK; \
        busybox mknod /dev/shm/n c 1 3 && echo MKNOD-OK; \
        busybox hostname other && echo HOSTNAME-OK; \
        busybox mkdir /dev/shm/d && echo MKDIR-OK; \
        touch /dev/shm/t && echo TOUCH-OK";
    let chown_only = json!(["CAP_CHOWN"]);
    let b = f.bundle(
        "b",
        json!({
            "process": {
                "args": ["sh", "-c", script],
                // CAP_KILL cannot be ambient (not permitted nor inheritable): left
                // out, as runc does, not an error.
                "capabilities": {"bounding": chown_only, "effective": chown_only,
                    "permitted": chown_only, "inheritable": chown_only,
                    "ambient": ["CAP_CHOWN", "CAP_KILL"]},
            },
            "linux": {
                "maskedPaths": ["/proc/kcore", "/etc/secret", "/hidden", "/no/such/path"],
                "readonlyPaths": ["/ro", "/proc/sys"],
                "seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                        "errnoRet": 1}]},
            },
        }),
    );
    std::fs::write(b.join("rootfs/etc/secret"), "visible\n").unwrap();
    std::fs::create_dir_all(b.join("rootfs/ro")).unwrap();
    std::fs::create_dir_all(b.join("rootfs/hidden")).unwrap();
    std::fs::write(b.join("rootfs/hidden/file"), "hidden\n").unwrap();
    let pid = f.create("sec", &b, &[]);
    f.ok(&["start", "sec"]);
    assert_eq!(wait_pid(pid), 0);
    let out = f.output_of("sec", "out");
    let err = f.output_of("sec", "err");
    for line in [
        "CapInh:\t0000000000000001",
        "CapPrm:\t0000000000000001",
        "CapEff:\t0000000000000001",
        "CapBnd:\t0000000000000001",
        "CapAmb:\t0000000000000001",
        "secret=\n",
        "hidden=\n",
        "CHOWN-OK",
        "TOUCH-OK",
    ] {
        assert!(
            out.contains(line),
            "{line:?} missing in {out:?} (stderr {err:?})"
        );
    }
    for line in [
        "RO-WRITABLE",
        "HIDDEN-WRITABLE",
        "MKNOD-OK",
        "HOSTNAME-OK",
        "MKDIR-OK",
    ] {
        assert!(!out.contains(line), "{line:?} in {out:?}");
    }
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!b.join("rootfs/ro/f").exists());
    f.ok(&["delete", "sec"]);
}

/// The container's process is PID 1 of its own PID namespace, /proc is that
/// namespace's, execs join it, and PID 1 keeps the signal protection runc's has.
#[test]
fn the_process_is_pid_1_of_its_own_namespace_and_execs_join_it() {
    let Some(mut f) = Fixture::new("the_process_is_pid_1_of_its_own_namespace_and_execs_join_it")
    else {
        return;
    };
    let b = f.bundle(
        "b",
        json!({
            "process": {"args": ["sh", "-c",
                "trap 'echo got USR1; exit 5' USR1; echo main=$$; \
                 while :; do sleep 0.1; done"]},
            "linux": {"maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]},
        }),
    );
    let pid = f.create("pidns", &b, &[]);
    f.ok(&["start", "pidns"]);
    let probe = "echo exec=$$; echo one=$(cat /proc/1/cmdline | tr '\\0' ' '); \
        echo comms=$(cat /proc/[0-9]*/comm | sort -u | tr '\\n' ' '); \
        echo kcore=$(cat /proc/kcore | wc -c); \
        echo x > /proc/sys/kernel/hostname || echo sys-ro";
    let out = f.ok(&["exec", "pidns", "sh", "-c", probe]);
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing in {out:?}"))
            .to_owned()
    };
    let exec_pid: u32 = field("exec").parse().unwrap();
    assert!(exec_pid > 1, "{out}");
    assert!(field("one").starts_with("sh -c trap"), "{out}");
    // Only the container's processes: no agent, no kernel threads.
    let comms = field("comms");
    assert!(
        !comms.contains("skiff-agent") && !comms.contains("kthreadd"),
        "{out}"
    );
    assert_eq!(field("kcore"), "0", "{out}");
    assert!(out.contains("sys-ro"), "{out}");
    // Unhandled TERM from inside the namespace does not reach PID 1; its USR1 handler does.
    let out = f.ok(&[
        "exec",
        "pidns",
        "sh",
        "-c",
        "kill -TERM 1; kill -0 1 && echo alive",
    ]);
    assert_eq!(out, "alive\n");
    // PID 1 exits on USR1, and the kernel then SIGKILLs the rest of its namespace:
    // the exec may finish first (0) or be killed with it (137), as under runc.
    let out = f.run(&["exec", "pidns", "sh", "-c", "kill -USR1 1"]);
    assert!(
        matches!(out.status.code(), Some(0 | 137)),
        "exec kill -USR1 1: {:?}",
        out.status
    );
    assert_eq!(wait_pid(pid), 5);
    assert_eq!(f.output_of("pidns", "out"), "main=1\ngot USR1\n");
    f.fails(&["exec", "pidns", "true"], "stopped");
    f.ok(&["delete", "pidns"]);
}

/// The spec's filesystems are mounted in spec order with their flags and options;
/// cgroup is skipped (no cgroupfs in the guest kernel) without failing the container.
#[test]
fn spec_mounts_are_made_in_order_with_their_options() {
    let Some(mut f) = Fixture::new("spec_mounts_are_made_in_order_with_their_options") else {
        return;
    };
    let shared = f.scratch.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("in"), "bound over the tmpfs\n").unwrap();
    let mut mounts = default_mounts();
    let list = mounts.as_array_mut().unwrap();
    list.push(
        json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=0710"]}),
    );
    list.push(json!({"destination": "/data/sub", "type": "bind",
        "source": shared.to_str().unwrap(), "options": ["rbind", "ro"]}));
    let b = f.bundle(
        "b",
        json!({
            "mounts": mounts,
            "process": {"args": ["sh", "-c",
                "grep -E ' /(sys|data|dev/mqueue|dev/pts|sys/fs/cgroup) ' /proc/mounts; \
                 stat -c 'mode=%a' /data; cat /data/sub/in; \
                 touch /data/sub/x || echo sub-ro; echo t > /data/t && echo tmpfs-rw"]},
        }),
    );
    let pid = f.create("mnt", &b, &[]);
    f.ok(&["start", "mnt"]);
    assert_eq!(wait_pid(pid), 0, "{}", f.output_of("mnt", "err"));
    let out = f.output_of("mnt", "out");
    let line = |target: &str| {
        out.lines()
            .find(|l| l.split(' ').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("{target} not mounted: {out:?}"))
            .to_owned()
    };
    let data = line("/data");
    assert!(
        data.starts_with("tmpfs /data tmpfs rw,nosuid,nodev,noexec"),
        "{data}"
    );
    assert!(
        data.contains("size=1024k") && data.contains("mode=710"),
        "{data}"
    );
    assert!(
        line("/sys").starts_with("sysfs /sys sysfs ro,nosuid,nodev,noexec"),
        "{out}"
    );
    assert!(line("/dev/mqueue").contains("mqueue"), "{out}");
    assert!(line("/dev/pts").contains("ptmxmode=666"), "{out}");
    assert!(!out.contains("/sys/fs/cgroup"), "{out}");
    for want in ["mode=710", "bound over the tmpfs", "sub-ro", "tmpfs-rw"] {
        assert!(out.contains(want), "{want} missing in {out:?}");
    }
    assert!(!shared.join("x").exists());
    f.ok(&["delete", "mnt"]);
}

/// Single-file binds (/etc/hosts and friends): the file's directory is shared and the
/// file bound inside the guest; rw binds carry writes both ways, ro ones refuse them.
#[test]
fn single_file_binds_are_live_both_ways() {
    let Some(mut f) = Fixture::new("single_file_binds_are_live_both_ways") else {
        return;
    };
    let files = f.scratch.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hosts"), "127.0.0.1 written-before-create\n").unwrap();
    std::fs::write(files.join("hostname"), "from-the-host\n").unwrap();
    std::fs::write(files.join("other"), "not bound\n").unwrap();
    let mut mounts = default_mounts();
    let list = mounts.as_array_mut().unwrap();
    list.push(json!({"destination": "/etc/hosts", "type": "bind",
        "source": files.join("hosts").to_str().unwrap(), "options": ["rbind", "rw"]}));
    list.push(json!({"destination": "/etc/hostname", "type": "bind",
        "source": files.join("hostname").to_str().unwrap(), "options": ["bind", "ro"]}));
    let b = f.bundle(
        "b",
        json!({
            "mounts": mounts,
            "process": {"args": ["sh", "-c",
                "until grep -q written-after-create /etc/hosts; do sleep 0.2; done; \
                 cat /etc/hosts; echo added-in-guest >> /etc/hosts; cat /etc/hostname; \
                 echo x > /etc/hostname || echo hostname-ro; echo other=$(ls /etc | grep -c other)"]},
        }),
    );
    let pid = f.create("files", &b, &[]);
    // Written on the host after create: the guest reads the live file (virtio-fs with
    // cache=auto revalidates within a second, hence the wait in the container).
    std::fs::write(
        files.join("hosts"),
        "127.0.0.1 written-before-create\n127.0.0.1 written-after-create\n",
    )
    .unwrap();
    f.ok(&["start", "files"]);
    assert_eq!(wait_pid(pid), 0, "{}", f.output_of("files", "err"));
    assert_eq!(
        f.output_of("files", "out"),
        "127.0.0.1 written-before-create\n127.0.0.1 written-after-create\n\
         from-the-host\nhostname-ro\nother=0\n"
    );
    assert!(std::fs::read_to_string(files.join("hosts"))
        .unwrap()
        .ends_with("written-after-create\nadded-in-guest\n"));
    assert_eq!(
        std::fs::read_to_string(files.join("hostname")).unwrap(),
        "from-the-host\n"
    );
    f.ok(&["delete", "files"]);
}

/// linux.seccomp flags reach the guest kernel with the filter (a flag it refused would
/// fail the exec with 126), and the filter still applies.
#[test]
fn seccomp_filter_flags_reach_the_guest_kernel() {
    let Some(mut f) = Fixture::new("seccomp_filter_flags_reach_the_guest_kernel") else {
        return;
    };
    let b = f.bundle(
        "b",
        json!({
            "process": {"args": ["sh", "-c",
                "busybox mkdir /tmp/d && echo MKDIR-OK; grep -E '^Seccomp:' /proc/self/status"]},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_TSYNC"],
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 1}]}},
        }),
    );
    let pid = f.create("flags", &b, &[]);
    f.ok(&["start", "flags"]);
    assert_eq!(wait_pid(pid), 0, "{}", f.output_of("flags", "err"));
    let out = f.output_of("flags", "out");
    assert!(!out.contains("MKDIR-OK"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    f.ok(&["delete", "flags"]);
}

/// `ps --format json` lists the host pids standing for the container's processes (the
/// supervisor and each exec proxy); the table lists the guest's processes as the
/// container's PID namespace numbers them.
#[test]
fn ps_lists_host_pids_as_json_and_guest_processes_as_a_table() {
    let Some(mut f) = Fixture::new("ps_lists_host_pids_as_json_and_guest_processes_as_a_table")
    else {
        return;
    };
    let b = f.bundle("b", json!({}));
    let pid = f.create("ps", &b, &[]);
    let json_pids = |f: &Fixture| -> Vec<u32> {
        serde_json::from_str(&f.ok(&["ps", "--format", "json", "ps"])).unwrap()
    };
    assert_eq!(json_pids(&f), [pid]);
    f.ok(&["start", "ps"]);
    let exec_pid = f.scratch.path().join("exec.pid");
    // Detached, with stdio a caller keeps (not pipes this test would wait to close).
    let status = f
        .cmd(&[
            "exec",
            "--detach",
            "--pid-file",
            exec_pid.to_str().unwrap(),
            "ps",
            "sleep",
            "777",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let epid: u32 = std::fs::read_to_string(&exec_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut pids = json_pids(&f);
    pids.sort_unstable();
    let mut want = vec![pid, epid];
    want.sort_unstable();
    assert_eq!(pids, want);
    let table = f.ok(&["ps", "ps"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["UID", "PID", "PPID", "CMD"], "{table}");
    assert!(
        rows.iter().any(|r| r[1..] == ["1", "0", "sleep", "1000"]),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r[1] != "1" && r[2] == "0" && r[3..] == ["sleep", "777"]),
        "{table}"
    );
    assert_eq!(rows.len(), 3, "{table}");
    // The exec ends: its proxy leaves the list.
    // SAFETY: kill(2) of the exec proxy, whose signals reach the exec'd process.
    unsafe { libc::kill(epid as i32, libc::SIGTERM) };
    assert_eq!(wait_pid(epid), 128 + libc::SIGTERM);
    assert_eq!(json_pids(&f), [pid]);
    f.ok(&["kill", "ps", "KILL"]);
    assert_eq!(wait_pid(pid), 128 + libc::SIGKILL);
    assert_eq!(json_pids(&f), Vec::<u32>::new());
    f.ok(&["delete", "ps"]);
}

/// createContainer and startContainer hooks run inside the guest, their path resolved in
/// the container, with the state on stdin, at their points; a failure or a timeout
/// fails create or start as in runc.
#[test]
fn create_container_and_start_container_hooks_run_in_the_guest() {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut f) = Fixture::new("create_container_and_start_container_hooks_run_in_the_guest")
    else {
        return;
    };
    // The hook exists only in the container's rootfs, not on the host.
    let with_hook = |f: &Fixture, name: &str, hooks: Value, process: &str| {
        let b = f.bundle(
            name,
            json!({"hooks": hooks, "process": {"args": ["sh", "-c", process]}}),
        );
        let script = b.join("rootfs/hook");
        std::fs::write(
            &script,
            "#!/bin/sh\ncat > /$1.json\necho \"$2\" >&2\nexit ${3:-0}\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        b
    };
    assert!(!Path::new("/hook").exists());
    let b = with_hook(
        &f,
        "ok",
        json!({"createContainer": [{"path": "/hook", "args": ["hook", "created"], "timeout": 30}],
               "startContainer": [{"path": "/hook", "args": ["hook", "started"], "timeout": 30}]}),
        "cat /started.json",
    );
    let pid = f.create("hooks", &b, &[]);
    let created: Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("rootfs/created.json")).unwrap())
            .unwrap();
    assert_eq!(created["id"], "hooks");
    assert!(!b.join("rootfs/started.json").exists());
    f.ok(&["start", "hooks"]);
    assert_eq!(wait_pid(pid), 0, "{}", f.output_of("hooks", "err"));
    // The container's process ran after the startContainer hook and saw its file.
    let started: Value = serde_json::from_str(&f.output_of("hooks", "out")).unwrap();
    assert_eq!(started["id"], "hooks");
    f.ok(&["delete", "hooks"]);

    // A failing createContainer hook fails create and leaves nothing behind.
    let b = with_hook(
        &f,
        "badcreate",
        json!({"createContainer": [{"path": "/hook", "args": ["hook", "c", "no-good", "3"]}]}),
        "true",
    );
    f.fails(
        &["create", "--bundle", b.to_str().unwrap(), "badcreate"],
        "createContainer hook /hook: failed: exit status 3: no-good",
    );
    f.fails(&["state", "badcreate"], "does not exist");
    assert_no_cgroup("badcreate");
    // One that outlives its timeout is killed and fails create too.
    let b = f.bundle(
        "slow",
        json!({"hooks": {"createContainer": [{"path": "/bin/sleep", "args": ["sleep", "100"], "timeout": 1}]}}),
    );
    f.fails(
        &["create", "--bundle", b.to_str().unwrap(), "slow"],
        "timed out",
    );
    f.fails(&["state", "slow"], "does not exist");
    assert_no_cgroup("slow");
    // A failing startContainer hook fails start; the container ends without running.
    let b = with_hook(
        &f,
        "badstart",
        json!({"startContainer": [{"path": "/hook", "args": ["hook", "s", "refused", "4"]}]}),
        "touch /ran",
    );
    let pid = f.create("badstart", &b, &[]);
    f.fails(
        &["start", "badstart"],
        "startContainer hook /hook: failed: exit status 4: refused",
    );
    assert_ne!(wait_pid(pid), 0);
    assert_eq!(f.state("badstart")["status"], "stopped");
    assert!(!b.join("rootfs/ran").exists());
    f.ok(&["delete", "badstart"]);
}

/// pause/resume on the vmm backend reach skiff-vmm's API socket. A Linux guest does not
/// boot under skiff-vmm on PVM hosts, so the VM is the bare-metal test guest launched
/// through the runtime's own vmm backend, and the container record `create` would
/// write is written by hand (the VMM process standing in for the supervisor); pause,
/// state and resume are the real commands. The guest prints a step at a time: paused,
/// its console stops growing; resumed, it finishes.
#[test]
fn pause_and_resume_reach_skiff_vmm_through_its_api_socket() {
    use skiff_runtime::oci::{Record, Store};
    use skiff_runtime::vm::hypervisor;
    let test = "pause_and_resume_reach_skiff_vmm_through_its_api_socket";
    let ready = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm: {e}"))
        .and_then(|()| {
            std::env::var_os("SKIFF_TESTGUEST")
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .ok_or_else(|| "SKIFF_TESTGUEST is not set (guest/testguest/build.sh)".into())
        });
    if !skiff_tests::prerequisite(test, ready.as_ref().map(drop).map_err(Clone::clone)) {
        return;
    }
    let Some(f) = Fixture::new(test) else { return };
    let dir = f.scratch.path();
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .and_then(|d| d.set_len(1 << 20))
        .unwrap();
    let initramfs = dir.join("initramfs");
    std::fs::write(&initramfs, b"unused by the test guest").unwrap();
    let artifacts = skiff_runtime::GuestArtifacts {
        kernel: ready.unwrap(),
        initramfs,
    };
    let console = dir.join("console.log");
    let disks = [skiff_runtime::Disk {
        path: disk,
        readonly: false,
        serial: "work".into(),
    }];
    let spec = hypervisor::LaunchSpec {
        artifacts: &artifacts,
        memory_mib: 128,
        vcpus: 1,
        disks: &disks,
        shares: &[],
        nets: &[],
        balloon: false,
        cmdline_extra: "testguest.snapwork=12 testguest.snapmib=1",
        vsock_uds: &work.join("vsock.sock"),
        console: &console,
        work_dir: &work,
        die_with_parent: true,
        snapshot: None,
    };
    let selection = hypervisor::Selection {
        kind: skiff_runtime::HypervisorKind::Vmm,
        accel: hypervisor::Accel::Kvm,
        reason: "test".into(),
    };
    let mut vm = hypervisor::launch(&selection, &spec).unwrap();
    let log = || std::fs::read_to_string(&console).unwrap_or_default();
    let patience = Instant::now() + Duration::from_secs(600);
    while !log().contains("step 1/12") {
        assert!(vm.try_wait().unwrap().is_none(), "the VM ended\n{}", log());
        assert!(Instant::now() < patience, "no progress\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let api = work.join(hypervisor::VMM_API_SOCKET);
    assert!(api.exists(), "the vmm backend made no API socket");

    let store = Store::new(f.root());
    let lock = store.lock("vmm").unwrap();
    lock.create(&Record {
        id: "vmm".into(),
        pid: Some(vm.pid()),
        pid_start: skiff_runtime::container::process_start_ticks(vm.pid()),
        started: true,
        vmm_api: Some(api),
        ..Record::default()
    })
    .unwrap();
    drop(lock);

    f.fails(&["resume", "vmm"], "not paused");
    f.ok(&["pause", "vmm"]);
    assert_eq!(f.state("vmm")["status"], "paused");
    // Paused vCPUs print nothing. (A broken pause can slip through a short wait; a
    // working one never fails it.)
    let paused_at = log();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(log(), paused_at, "the guest ran on while paused");
    assert!(!paused_at.contains("PASS (snapwork)"));
    f.fails(&["pause", "vmm"], "not running");
    f.ok(&["resume", "vmm"]);
    assert_eq!(f.state("vmm")["status"], "running");
    let ended = loop {
        if let Some(how) = vm.try_wait().unwrap() {
            break how;
        }
        assert!(Instant::now() < patience, "never finished\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(ended.contains("exit status: 0"), "{ended}\n{}", log());
    assert!(log().contains("step 12/12") && log().contains("PASS (snapwork)"));
    assert_eq!(f.state("vmm")["status"], "stopped");
    vm.kill();
    f.ok(&["delete", "vmm"]);
}

/// The cgroup file(s) holding a cgroup's CPU bandwidth, as "QUOTA PERIOD" (v1) or
/// cpu.max's own text (v2).
fn cpu_max_of(cgroup: &Path) -> String {
    let read = |name: &str| std::fs::read_to_string(cgroup.join(name)).unwrap_or_default();
    if cgroup.join("cpu.max").exists() {
        read("cpu.max").trim().to_owned()
    } else {
        format!(
            "{} {}",
            read("cpu.cfs_quota_us").trim(),
            read("cpu.cfs_period_us").trim()
        )
    }
}

fn recorded_cgroup(f: &Fixture, id: &str) -> PathBuf {
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(f.root().join(id).join("state.json")).unwrap(),
    )
    .unwrap();
    PathBuf::from(record["cgroup"].as_str().expect("no cgroup recorded"))
}

/// `update --cpu-quota` (and `--resources`) land in the microVM's host cgroup, which
/// holds the supervisor and the VM's processes; a bad value is refused and changes
/// nothing; delete removes the cgroup.
#[test]
fn update_sets_the_cpu_quota_of_the_microvm_cgroup() {
    let Some(mut f) = Fixture::new("update_sets_the_cpu_quota_of_the_microvm_cgroup") else {
        return;
    };
    let b = f.bundle("b", json!({}));
    let pid = f.create("cpu", &b, &[]);
    f.ok(&["start", "cpu"]);
    let cgroup = recorded_cgroup(&f, "cpu");
    let quota = || cpu_max_of(&cgroup);
    let unlimited = quota();
    assert!(
        unlimited.starts_with("max") || unlimited.starts_with("-1"),
        "{unlimited}"
    );
    let members: Vec<u32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        members.contains(&pid),
        "supervisor {pid} not in {members:?}"
    );
    assert!(
        members.len() >= 2,
        "the VM's processes are not in {members:?}"
    );
    f.ok(&[
        "update",
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "100000",
        "cpu",
    ]);
    assert_eq!(quota(), "50000 100000");
    let res = f.scratch.path().join("res.json");
    std::fs::write(&res, r#"{"cpu": {"quota": 20000, "period": 50000}}"#).unwrap();
    f.ok(&["update", "--resources", res.to_str().unwrap(), "cpu"]);
    assert_eq!(quota(), "20000 50000");
    // What `docker update` sends for a change it does not make: zeros, which runc
    // reads as "unchanged" (the limit is kept, not lifted or refused).
    std::fs::write(
        &res,
        r#"{"cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0, "realtimePeriod": 0}}"#,
    )
    .unwrap();
    f.ok(&["update", "--resources", res.to_str().unwrap(), "cpu"]);
    assert_eq!(quota(), "20000 50000");
    f.fails(
        &["update", "--cpu-period", "5", "cpu"],
        "invalid CPU period",
    );
    f.fails(&["update", "--cpu-quota", "10", "cpu"], "invalid CPU quota");
    assert_eq!(quota(), "20000 50000");
    assert_eq!(f.state("cpu")["status"], "running");
    f.ok(&["kill", "cpu", "KILL"]);
    assert_eq!(wait_pid(pid), 128 + libc::SIGKILL);
    f.fails(&["update", "--cpu-quota", "50000", "cpu"], "not running");
    f.ok(&["delete", "cpu"]);
    assert!(!cgroup.exists(), "delete left {}", cgroup.display());
}

/// Network namespaces made for one test, removed (with their interfaces) on drop.
struct Netns(Vec<String>);

impl Netns {
    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// A spec naming a network namespace (as CNI callers do): the namespace's interface is
/// joined to the microVM's TAP, and the guest takes its address, default route and
/// MTU and reaches a server on the other end of the veth.
#[test]
fn a_spec_network_namespace_is_joined_to_the_guest() {
    let test = "a_spec_network_namespace_is_joined_to_the_guest";
    let Some(mut f) = Fixture::new(test) else {
        return;
    };
    let tools = skiff_tests::clients::which("ip")
        .zip(skiff_tests::clients::which("tc"))
        .map(drop)
        .ok_or_else(|| "ip and tc not installed (apt-get install iproute2)".to_owned());
    if !skiff_tests::prerequisite(test, tools) {
        return;
    }
    let tag = std::process::id();
    let (peer, ctr) = (format!("skt-peer-{tag}"), format!("skt-ctr-{tag}"));
    let _ns = Netns(vec![peer.clone(), ctr.clone()]);
    let host_if = format!("sktv{tag}");
    Netns::ip(&["netns", "add", &peer]);
    Netns::ip(&["netns", "add", &ctr]);
    Netns::ip(&[
        "link", "add", &host_if, "netns", &peer, "mtu", "1400", "type", "veth", "peer", "name",
        "eth0", "netns", &ctr, "mtu", "1400",
    ]);
    for (ns, dev, addr) in [
        (&peer, &host_if, "10.77.0.1/24"),
        (&ctr, &"eth0".to_owned(), "10.77.0.2/24"),
    ] {
        Netns::ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        Netns::ip(&["-n", ns, "link", "set", dev, "up"]);
        Netns::ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    Netns::ip(&["-n", &ctr, "route", "add", "default", "via", "10.77.0.1"]);
    let www = f.scratch.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "served from the peer namespace\n").unwrap();
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &peer,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "10.77.0.1:8080",
            "-h",
        ])
        .arg(&www)
        .spawn()
        .unwrap();

    let b = f.bundle(
        "b",
        json!({
            "process": {"args": ["sh", "-c",
                "ip -o -4 addr show; ip -o link show; ip route show; \
                 for i in 1 2 3 4 5 6 7 8 9 10; do \
                   wget -q -O - http://10.77.0.1:8080/index.html && exit 0; sleep 1; \
                 done; exit 1"]},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"},
                {"type": "network", "path": format!("/run/netns/{ctr}")}]},
        }),
    );
    for applet in ["ip", "wget"] {
        let _ = std::os::unix::fs::symlink("busybox", b.join("rootfs/bin").join(applet));
    }
    let pid = f.create("netns", &b, &[]);
    f.ok(&["start", "netns"]);
    let status = wait_pid(pid);
    let _ = server.kill();
    let _ = server.wait();
    let out = f.output_of("netns", "out");
    assert_eq!(status, 0, "{out}\n{}", f.output_of("netns", "err"));
    assert!(out.contains("inet 10.77.0.2/24"), "{out}");
    assert!(out.contains("default via 10.77.0.1"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("mtu 1400") && !l.contains(": lo:")),
        "{out}"
    );
    assert!(out.contains("served from the peer namespace"), "{out}");
    f.ok(&["delete", "netns"]);
}

/// MemTotal inside the container, in KiB.
fn mem_total_kib(f: &Fixture, id: &str) -> u64 {
    let out = f.ok(&["exec", id, "grep", "MemTotal", "/proc/meminfo"]);
    out.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {out:?}"))
}

/// Polls MemTotal until `done` accepts it and the balloon has stopped moving (it moves
/// a batch of pages at a time: the same value twice in a row), or a generous deadline
/// passes; returns the last value.
fn await_mem_total(f: &Fixture, id: &str, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    loop {
        let kib = mem_total_kib(f, id);
        if (done(kib) && last == Some(kib)) || Instant::now() > deadline {
            return kib;
        }
        last = Some(kib);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `update --memory`: the VM boots with the annotation's maximum and the balloon holds
/// the guest to the limit; an update shrinks it and regrows it up to the maximum, and
/// one beyond the maximum (or below the floor) is refused with nothing changed, CPU
/// quota included.
#[test]
fn update_moves_memory_through_the_balloon_up_to_the_boot_size() {
    let Some(mut f) = Fixture::new("update_moves_memory_through_the_balloon_up_to_the_boot_size")
    else {
        return;
    };
    let b = f.bundle(
        "b",
        json!({
            "annotations": {"io.skiff.vm.memory-max-mib": "512"},
            "linux": {"resources": {"memory": {"limit": 256u64 << 20}}},
        }),
    );
    let pid = f.create("mem", &b, &[]);
    f.ok(&["start", "mem"]);
    let at_256 = await_mem_total(&f, "mem", |k| k <= 256 << 10);
    assert!(
        at_256 <= 256 << 10,
        "MemTotal {at_256} KiB above the 256 MiB limit"
    );
    f.ok(&["update", "--memory", "160m", "mem"]);
    let at_160 = await_mem_total(&f, "mem", |k| k <= 160 << 10);
    assert!(
        at_160 <= 160 << 10,
        "MemTotal {at_160} KiB after update to 160 MiB"
    );
    assert!(at_256 - at_160 >= 90 << 10, "{at_256} -> {at_160} KiB");
    f.ok(&["update", "--memory", "400m", "mem"]);
    let at_400 = await_mem_total(&f, "mem", |k| k > 300 << 10);
    assert!(
        (300 << 10..=400 << 10).contains(&at_400),
        "MemTotal {at_400} KiB after update to 400 MiB"
    );

    let cgroup = recorded_cgroup(&f, "mem");
    let before = cpu_max_of(&cgroup);
    let res = f.scratch.path().join("res.json");
    std::fs::write(
        &res,
        r#"{"memory": {"limit": 1073741824}, "cpu": {"quota": 90000, "period": 100000}}"#,
    )
    .unwrap();
    f.fails(
        &["update", "--resources", res.to_str().unwrap(), "mem"],
        "cannot grow beyond",
    );
    assert_eq!(cpu_max_of(&cgroup), before);
    assert_eq!(mem_total_kib(&f, "mem"), at_400);
    f.fails(&["update", "--memory", "16m", "mem"], "at least");
    assert_eq!(mem_total_kib(&f, "mem"), at_400);
    assert_eq!(f.state("mem")["status"], "running");
    f.ok(&["kill", "mem", "KILL"]);
    assert_eq!(wait_pid(pid), 128 + libc::SIGKILL);
    f.ok(&["delete", "mem"]);
}
