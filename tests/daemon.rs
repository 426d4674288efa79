//! skiffd end to end: the real daemon on a UNIX socket (and TCP for tokens), real
//! sandboxes in microVMs, and schemathesis against crates/daemon/openapi.yaml.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_tests::{plugin_components, prerequisite, processes_mentioning, skiff_bin, vm_ready};

fn skiffd_bin() -> PathBuf {
    std::env::var_os("SKIFFD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| skiff_bin().with_file_name("skiffd"))
}

fn daemon_ready() -> Result<(), String> {
    if !skiffd_bin().is_file() {
        return Err(format!(
            "{} is not built (cargo build -p skiff-daemon)",
            skiffd_bin().display()
        ));
    }
    Ok(())
}

fn vm_and_daemon_ready() -> Result<(), String> {
    daemon_ready()?;
    vm_ready()
}

/// A store root whose sandboxes are killed when the test ends, however it ends: their
/// supervisors outlive any daemon by design, and their VMs die with them.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("skiffd-test-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn supervisor_pid(&self, id: &str) -> Option<i32> {
        let st: Value = serde_json::from_slice(
            &std::fs::read(self.path().join("containers").join(id).join("state.json")).ok()?,
        )
        .ok()?;
        st["pid"].as_i64().and_then(|p| i32::try_from(p).ok())
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.path().join("containers")) {
            for e in rd.flatten() {
                if let Some(pid) = self.supervisor_pid(&e.file_name().to_string_lossy()) {
                    // SAFETY: kill(2) of a supervisor this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let needle = self.path().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_mentioning(&needle).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    tcp: Option<String>,
}

impl Daemon {
    fn start(root: &Root, config: &str) -> Self {
        Self::start_with(root, config, false)
    }

    fn start_with(root: &Root, config: &str, tcp: bool) -> Self {
        Self::start_opts(root, config, tcp, None)
    }

    /// With `plugins`, skiffd runs the plugins configured in that plugins.toml.
    fn start_opts(root: &Root, config: &str, tcp: bool, plugins: Option<&Path>) -> Self {
        let cfg = root.path().join("skiffd.toml");
        std::fs::write(&cfg, config).unwrap();
        let socket = root.path().join("api.sock");
        let mut cmd = Command::new(skiffd_bin());
        cmd.arg("--root")
            .arg(root.path())
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&cfg)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null());
        match plugins {
            Some(p) => cmd.env("SKIFF_PLUGINS_CONFIG", p),
            None => cmd.env_remove("SKIFF_PLUGINS_CONFIG"),
        };
        let addr = tcp.then(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        });
        if let Some(a) = &addr {
            cmd.args(["--listen", a]);
        }
        let child = cmd.spawn().unwrap();
        let mut d = Self {
            child,
            socket,
            tcp: addr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if UnixStream::connect(&d.socket).is_ok()
                && d.tcp
                    .as_ref()
                    .is_none_or(|a| std::net::TcpStream::connect(a).is_ok())
            {
                break;
            }
            if let Ok(Some(s)) = d.child.try_wait() {
                panic!("skiffd exited at startup: {s}");
            }
            assert!(Instant::now() < deadline, "skiffd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn call(&self, tenant: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, bytes) = self.raw(Some(tenant), method, path, body.map(str::as_bytes));
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    fn raw(
        &self,
        tenant: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> (u16, Vec<u8>) {
        let mut headers = String::new();
        if let Some(t) = tenant {
            headers.push_str(&format!("X-Skiff-Tenant: {t}\r\n"));
        }
        http(
            UnixStream::connect(&self.socket).unwrap(),
            method,
            path,
            &headers,
            body,
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request with `Connection: close`; the (de-chunked) body.
fn http(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<&[u8]>,
) -> (u16, Vec<u8>) {
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: skiffd\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before taking the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = &raw[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        (status, dechunk(body))
    } else {
        (status, body.to_vec())
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
    out
}

fn ndjson(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

fn pull_busybox(d: &Daemon, tenant: &str) {
    let (s, v) = d.call(
        tenant,
        "POST",
        "/v1/images/pull",
        Some(r#"{"reference":"busybox"}"#),
    );
    assert_eq!(s, 200, "{v}");
}

/// Follows the tenant's event stream in the background.
fn follow_events(d: &Daemon, tenant: &str) -> Arc<Mutex<String>> {
    let seen = Arc::new(Mutex::new(String::new()));
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: skiffd\r\nX-Skiff-Tenant: {tenant}\r\n\r\n"
    )
    .unwrap();
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            out.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    seen
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sandbox_lifecycle_exec_logs_and_events_over_the_unix_socket() {
    if !prerequisite("daemon::lifecycle", vm_and_daemon_ready()) {
        return;
    }
    let root = Root::new();
    let d = Daemon::start(&root, "");
    let (s, v) = d.call("team-a", "GET", "/healthz", None);
    assert_eq!((s, &v["status"]), (200, &json!("ok")));
    let events = follow_events(&d, "team-a");
    pull_busybox(&d, "team-a");
    let (s, v) = d.call("team-a", "GET", "/v1/images", None);
    assert_eq!(s, 200);
    assert!(
        v["images"][0]["tags"].to_string().contains("busybox"),
        "{v}"
    );
    let (s, v) = d.call("team-a", "GET", "/v1/images/busybox%3Alatest", None);
    assert_eq!(s, 200, "{v}");

    // A sandbox that prints and ends: its logs.
    let (s, v) = d.call(
        "team-a",
        "POST",
        "/v1/sandboxes",
        Some(r#"{"image":"busybox","name":"echo","cmd":["sh","-c","echo out; echo err >&2"],"start":true}"#),
    );
    assert_eq!(s, 201, "{v}");
    let echo_id = v["id"].as_str().unwrap().to_owned();
    wait_for("the echo sandbox to exit", || {
        d.call("team-a", "GET", "/v1/sandboxes/echo", None).1["state"] == "exited"
    });
    let (s, v) = d.call("team-a", "GET", "/v1/sandboxes/echo/logs", None);
    assert_eq!(s, 200);
    let logs: Vec<(String, String)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().unwrap().into(),
                e["log"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(logs.contains(&("stdout".into(), "out\n".into())), "{v}");
    assert!(logs.contains(&("stderr".into(), "err\n".into())), "{v}");
    let (_, v) = d.call("team-a", "GET", "/v1/sandboxes/echo/logs?tail=1", None);
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);

    // A long-running sandbox: exec with streamed output and the exit status last.
    let (s, v) = d.call(
        "team-a",
        "POST",
        "/v1/sandboxes",
        Some(r#"{"image":"busybox","name":"web","cmd":["sleep","600"],"env":["GREETING=hi"],"memory_mib":192}"#),
    );
    assert_eq!((s, v["state"].as_str()), (201, Some("created")), "{v}");
    let (s, v) = d.call("team-a", "POST", "/v1/sandboxes/web/start", None);
    assert_eq!((s, v["state"].as_str()), (200, Some("running")), "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, body) = d.raw(
        Some("team-a"),
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(br#"{"cmd":["sh","-c","echo $GREETING; echo oops >&2; exit 3"]}"#),
    );
    assert_eq!(s, 200);
    let lines = ndjson(&body);
    assert!(
        lines.contains(&json!({"stream":"stdout","data":"hi\n"})),
        "{lines:?}"
    );
    assert!(
        lines.contains(&json!({"stream":"stderr","data":"oops\n"})),
        "{lines:?}"
    );
    assert_eq!(lines.last(), Some(&json!({"exit_code": 3})));
    let (s, v) = d.call("team-a", "GET", "/v1/sandboxes/web/stats", None);
    assert_eq!(s, 200);
    assert!(v["host_pss_bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["memory_limit_mib"], 192);

    // A client that goes away mid-stream: its process is killed, the sandbox lives on.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let body = br#"{"cmd":["sh","-c","while true; do echo tick-tock; sleep 0.2; done"]}"#;
    write!(
        s,
        "POST /v1/sandboxes/web/exec HTTP/1.1\r\nHost: skiffd\r\nX-Skiff-Tenant: team-a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while !line.contains("tick-tock") {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
    }
    drop(r);
    wait_for("the abandoned exec to be killed", || {
        let (_, body) = d.raw(
            Some("team-a"),
            "POST",
            "/v1/sandboxes/web/exec",
            Some(br#"{"cmd":["ps","-o","args"]}"#),
        );
        !String::from_utf8_lossy(&body).contains("tick-tock")
    });
    let (_, v) = d.call("team-a", "GET", "/v1/sandboxes/web", None);
    assert_eq!(v["state"], "running");

    let (s, v) = d.call(
        "team-a",
        "POST",
        "/v1/sandboxes/web/stop",
        Some(r#"{"timeout_s":1}"#),
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("exited")), "{v}");
    let (s, v) = d.call(
        "team-a",
        "POST",
        "/v1/sandboxes/web/exec",
        Some(r#"{"cmd":["true"]}"#),
    );
    assert_eq!((s, error_code(&v)), (409, "not_running"));
    for n in ["web", "echo"] {
        let (s, _) = d.call("team-a", "DELETE", &format!("/v1/sandboxes/{n}"), None);
        assert_eq!(s, 200);
    }
    let (_, v) = d.call("team-a", "GET", "/v1/sandboxes", None);
    assert_eq!(v["sandboxes"], json!([]));
    assert!(!root.path().join("containers").join(&id).exists());

    wait_for("the events", || {
        let e = events.lock().unwrap();
        [
            "sandbox.created",
            "sandbox.started",
            "sandbox.exited",
            "exec.exited",
            "sandbox.deleted",
        ]
        .iter()
        .all(|k| e.contains(k))
            && e.contains(&echo_id)
    });
    let (s, bytes) = d.raw(None, "GET", "/metrics", None);
    let m = String::from_utf8_lossy(&bytes);
    assert_eq!(s, 200);
    assert!(m.contains("skiffd_sandbox_start_seconds_count 2"), "{m}");
    assert!(m.contains("skiffd_sandboxes{state=\"running\"} 0"), "{m}");
}

#[test]
fn tenants_are_isolated_and_quotas_enforced() {
    if !prerequisite("daemon::tenants", daemon_ready()) {
        return;
    }
    let root = Root::new();
    let d = Daemon::start(
        &root,
        r#"
[tenants.small]
quota = { max_sandboxes = 1, max_memory_mib = 512, max_vcpus = 2 }
[tenants.slow]
quota = { requests_per_second = 0.01, burst = 2 }
"#,
    );
    pull_busybox(&d, "small");
    let create = |t: &str, body: &str| d.call(t, "POST", "/v1/sandboxes", Some(body));
    let (s, v) = create(
        "small",
        r#"{"image":"busybox","name":"mine","cmd":["true"]}"#,
    );
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // Another tenant: the same 404 as for a sandbox that does not exist, whatever it does.
    let (s404, missing) = d.call(
        "other",
        "GET",
        &format!("/v1/sandboxes/{}", "f".repeat(64)),
        None,
    );
    for (method, path) in [
        ("GET", format!("/v1/sandboxes/{id}")),
        ("GET", "/v1/sandboxes/mine".into()),
        ("DELETE", format!("/v1/sandboxes/{id}")),
        ("POST", format!("/v1/sandboxes/{id}/start")),
        ("POST", format!("/v1/sandboxes/{id}/stop")),
        ("GET", format!("/v1/sandboxes/{id}/logs")),
        ("GET", format!("/v1/sandboxes/{id}/stats")),
    ] {
        let (s, v) = d.call("other", method, &path, None);
        assert_eq!(
            (s, error_code(&v)),
            (404, "not_found"),
            "{method} {path}: {v}"
        );
        assert_eq!(s, s404);
        assert_eq!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .replace(&id, "X")
                .replace("mine", "X"),
            missing["error"]["message"]
                .as_str()
                .unwrap()
                .replace(&"f".repeat(64), "X"),
        );
    }
    let (s, v) = d.call(
        "other",
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(r#"{"cmd":["true"]}"#),
    );
    assert_eq!((s, error_code(&v)), (404, "not_found"));
    let (_, v) = d.call("other", "GET", "/v1/sandboxes", None);
    assert_eq!(v["sandboxes"], json!([]));
    // Names are per tenant: the other tenant may use the same one.
    let (s, v) = create(
        "other",
        r#"{"image":"busybox","name":"mine","cmd":["true"]}"#,
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = create(
        "other",
        r#"{"image":"busybox","name":"mine","cmd":["true"]}"#,
    );
    assert_eq!((s, error_code(&v)), (409, "name_in_use"));
    // The plugins see the tenant through the label they read.
    let spec: Value = serde_json::from_slice(
        &std::fs::read(root.path().join("containers").join(&id).join("spec.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(spec["labels"]["tenant"], "small");

    // Quotas: sandboxes, memory, vCPUs.
    let (s, v) = create("small", r#"{"image":"busybox","cmd":["true"]}"#);
    assert_eq!((s, error_code(&v)), (403, "quota_exceeded"), "{v}");
    let (s, _) = d.call("small", "DELETE", "/v1/sandboxes/mine", None);
    assert_eq!(s, 200);
    let (s, v) = create("small", r#"{"image":"busybox","memory_mib":1024}"#);
    assert_eq!((s, error_code(&v)), (403, "quota_exceeded"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("memory"));
    let (s, v) = create("small", r#"{"image":"busybox","vcpus":3}"#);
    assert_eq!((s, error_code(&v)), (403, "quota_exceeded"), "{v}");
    let (s, v) = d.call(
        "small",
        "POST",
        "/v1/invoke",
        Some(r#"{"image":"busybox","memory_mib":4096}"#),
    );
    assert_eq!((s, error_code(&v)), (403, "quota_exceeded"), "{v}");

    // Request rate: a burst of two, then 429 with Retry-After.
    for _ in 0..2 {
        assert_eq!(d.call("slow", "GET", "/v1/sandboxes", None).0, 200);
    }
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Skiff-Tenant: slow\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after:"), "{raw}");
    assert!(raw.contains("rate_limited"), "{raw}");
    assert_eq!(
        d.call("small", "GET", "/v1/sandboxes", None).0,
        200,
        "other tenants are unaffected"
    );
}

#[test]
fn bad_input_gets_precise_4xx_json_errors() {
    if !prerequisite("daemon::bad_input", daemon_ready()) {
        return;
    }
    let root = Root::new();
    let token = "t0ken-for-team-a";
    let hash = sha256_hex(token);
    let d = Daemon::start_with(
        &root,
        &format!("max_body_bytes = 4096\n[tenants.team-a]\ntokens_sha256 = [\"{hash}\"]\n"),
        true,
    );
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/v1/sandboxes",
            Some("{\"image\": "),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some("not json"),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"image":"busybox","bogus":1}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"image":7}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"image":"busybox","memory_mib":-1}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"image":"busybox","memory_mib":1}"#),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"image":"busybox","name":"../x"}"#),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"image":"busybox","env":["PATH"]}"#),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"image":"nope"}"#),
            404,
            "image_not_found",
        ),
        ("POST", "/v1/sandboxes", Some(""), 400, "invalid_json"),
        (
            "POST",
            "/v1/images/pull",
            Some(r#"{"reference":"UPPER CASE!"}"#),
            400,
            "invalid_reference",
        ),
        ("GET", "/v1/images/%zz", None, 400, "invalid_argument"),
        ("GET", "/v1/sandboxes/..%2F..%2Fetc", None, 404, "not_found"),
        (
            "GET",
            "/v1/sandboxes/x/logs?tail=-1",
            None,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/sandboxes/x/exec",
            Some(r#"{"cmd":"ls"}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/invoke",
            Some(r#"{"image":"busybox","timeout_s":0}"#),
            400,
            "invalid_argument",
        ),
        ("PUT", "/v1/sandboxes", None, 405, "method_not_allowed"),
        ("GET", "/v2/whatever", None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let (s, v) = d.call("team-a", method, path, *body);
        assert_eq!(
            (s, error_code(&v)),
            (*status, *code),
            "{method} {path} {body:?}: {v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Oversized bodies, declared or not.
    let big = vec![b' '; 10_000];
    let (s, v) = d.raw(Some("team-a"), "POST", "/v1/sandboxes", Some(&big));
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&v));
    // Tenants on the UNIX socket.
    let (s, v) = d.raw(None, "GET", "/v1/sandboxes", None);
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&v));
    let (s, v) = d.call("Bad.Tenant", "GET", "/v1/sandboxes", None);
    assert_eq!((s, error_code(&v)), (400, "invalid_tenant"));
    // Tokens on TCP: missing, malformed, wrong, right; the tenant header is ignored there.
    let addr = d.tcp.clone().unwrap();
    let tcp = |auth: &str| {
        let (s, b) = http(
            std::net::TcpStream::connect(&addr).unwrap(),
            "GET",
            "/v1/sandboxes",
            auth,
            None,
        );
        (
            s,
            serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
        )
    };
    for auth in [
        "X-Skiff-Tenant: team-a\r\n",
        "Authorization: Basic dXNlcjpwdw==\r\n",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Bearer \r\n",
    ] {
        let (s, v) = tcp(auth);
        assert_eq!((s, error_code(&v)), (401, "unauthorized"), "{auth}: {v}");
    }
    let (s, v) = tcp(&format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(s, 200, "{v}");
    // The scheme is case-insensitive (RFC 7235).
    let (s, v) = tcp(&format!("Authorization: bearer {token}\r\n"));
    assert_eq!(s, 200, "{v}");
    // The daemon is still fine after all of that.
    assert_eq!(d.call("team-a", "GET", "/healthz", None).0, 200);
    let (_, bytes) = d.raw(None, "GET", "/metrics", None);
    assert!(String::from_utf8_lossy(&bytes).contains("skiffd_server_errors_total 0"));
}

/// Reads whatever the server sends until it closes or `within` passes: `Some(bytes)`
/// if it closed (or reset) the connection, `None` if it is still open.
fn closed_within(s: &mut UnixStream, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(_) => return None,
        }
    }
}

/// A slowloris client (connections that never finish their request headers) holds no
/// slot past the header timeout and locks no tenant out; past the connection cap new
/// connections get 503 with Retry-After.
#[test]
fn half_sent_requests_are_shed_and_timed_out_while_tenants_keep_working() {
    if !prerequisite("daemon::half_sent_requests", daemon_ready()) {
        return;
    }
    let root = Root::new();
    let d = Daemon::start(
        &root,
        "[connections]\nheader_timeout_ms = 3000\nmax = 40\nmax_per_peer = 40\n",
    );
    let half_sent = |n: usize| -> Vec<UnixStream> {
        (0..n)
            .map(|_| {
                let mut s = UnixStream::connect(&d.socket).unwrap();
                s.write_all(b"GET /v1/sandboxes HTTP/1.1\r\nHost: skiffd\r\nX-Skiff-")
                    .unwrap();
                s
            })
            .collect()
    };
    let mut flood = half_sent(30);
    // Below the cap, tenants are served while the flood holds its slots.
    let (status, _) = d.call("team-a", "GET", "/v1/sandboxes", None);
    assert_eq!(status, 200);
    // Past the cap (45 connections, 40 slots): the last ones are shed at once with
    // 503 and Retry-After, not left hanging. (Admitted ones send nothing before the
    // header timeout closes them.)
    let mut more = half_sent(15);
    let answers: Vec<String> = more
        .iter_mut()
        .rev()
        .filter_map(|s| closed_within(s, Duration::from_millis(500)))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .filter(|r| !r.is_empty())
        .collect();
    assert!(answers.len() >= 5, "{} shed: {answers:?}", answers.len());
    for r in &answers {
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("Retry-After: 1"), "{r}");
    }
    // The half-sent requests are closed by the header timeout...
    for s in flood.iter_mut().chain(more.iter_mut()) {
        assert!(
            closed_within(s, Duration::from_secs(20)).is_some(),
            "a half-sent request outlived the header timeout"
        );
    }
    // ...and their slots are free again.
    let (status, _) = d.call("team-a", "GET", "/v1/sandboxes", None);
    assert_eq!(status, 200);
    let (_, metrics) = d.raw(None, "GET", "/metrics", None);
    assert!(
        String::from_utf8_lossy(&metrics).contains("skiffd_shed_connections_total"),
        "no shed counter in /metrics"
    );
}

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_restarted_daemon_finds_its_sandboxes_and_reports_lost_ones() {
    if !prerequisite("daemon::restart", vm_and_daemon_ready()) {
        return;
    }
    let root = Root::new();
    let mut d = Daemon::start(&root, "");
    pull_busybox(&d, "t");
    let mut ids = Vec::new();
    for name in ["keep", "doomed"] {
        let (s, v) = d.call(
            "t",
            "POST",
            "/v1/sandboxes",
            Some(&format!(
                r#"{{"image":"busybox","name":"{name}","cmd":["sleep","600"],"start":true}}"#
            )),
        );
        assert_eq!((s, v["state"].as_str()), (201, Some("running")), "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // The daemon dies hard; while it is away one sandbox's supervisor dies too.
    d.kill();
    let pid = root.supervisor_pid(&ids[1]).unwrap();
    // SAFETY: kill(2) of the supervisor this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let d = Daemon::start(&root, "");
    let (_, v) = d.call("t", "GET", "/v1/sandboxes/keep", None);
    assert_eq!(v["state"], "running", "{v}");
    let (s, body) = d.raw(
        Some("t"),
        "POST",
        "/v1/sandboxes/keep/exec",
        Some(br#"{"cmd":["echo","still here"]}"#),
    );
    assert_eq!(s, 200);
    assert_eq!(
        ndjson(&body),
        [
            json!({"stream":"stdout","data":"still here\n"}),
            json!({"exit_code":0})
        ]
    );
    let (_, v) = d.call("t", "GET", "/v1/sandboxes/doomed", None);
    assert_eq!(v["state"], "lost", "{v}");
    assert!(v["error"].as_str().is_some(), "{v}");
    let (s, _) = d.call("t", "DELETE", "/v1/sandboxes/doomed", None);
    assert_eq!(s, 200);
    let (s, v) = d.call(
        "t",
        "POST",
        "/v1/sandboxes/keep/stop",
        Some(r#"{"timeout_s":0}"#),
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("exited")), "{v}");
}

#[test]
fn warm_pool_invoke_runs_in_a_booted_vm_within_the_quota() {
    if !prerequisite("daemon::warm_pool", vm_and_daemon_ready()) {
        return;
    }
    let root = Root::new();
    // The pool asks for 2 VMs but the tenant may hold only 1 sandbox: it gets 1.
    let d = Daemon::start(
        &root,
        r#"
[tenants.fn]
quota = { max_sandboxes = 1, max_memory_mib = 1024, max_vcpus = 2 }
[[pools]]
tenant = "fn"
image = "busybox"
memory_mib = 128
size = 2
"#,
    );
    let ready = || {
        let (_, b) = d.raw(None, "GET", "/metrics", None);
        String::from_utf8_lossy(&b)
            .lines()
            .find_map(|l| l.strip_prefix("skiffd_pool_ready "))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    wait_for("a warm VM", || ready() == 1);
    let (s, v) = d.call(
        "fn",
        "POST",
        "/v1/sandboxes",
        Some(r#"{"image":"busybox","cmd":["true"]}"#),
    );
    assert_eq!(
        (s, error_code(&v)),
        (403, "quota_exceeded"),
        "the warm VM counts: {v}"
    );
    let (s, v) = d.call(
        "fn",
        "POST",
        "/v1/invoke",
        Some(r#"{"image":"busybox","memory_mib":128,"cmd":["sh","-c","echo hello; echo x >&2; hostname; exit 4"]}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pool"], "hit");
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["stderr"], "x\n");
    let out = v["stdout"].as_str().unwrap();
    assert!(out.starts_with("hello\nsb-"), "{out}");
    // The pool refills in the background; the next one is warm again and has a new
    // identity and a fresh writable layer.
    wait_for("the pool to refill", || ready() == 1);
    let (s, v) = d.call(
        "fn",
        "POST",
        "/v1/invoke",
        Some(r#"{"image":"busybox","memory_mib":128,"cmd":["sh","-c","hostname; ls /tmp; touch /tmp/mark"]}"#),
    );
    assert_eq!((s, v["pool"].as_str()), (200, Some("hit")), "{v}");
    assert!(!v["stdout"]
        .as_str()
        .unwrap()
        .contains(out.lines().nth(1).unwrap()));
    assert!(!v["stdout"].as_str().unwrap().contains("mark"));
    let (_, b) = d.raw(None, "GET", "/metrics", None);
    let m = String::from_utf8_lossy(&b);
    assert!(m.contains("skiffd_pool_hits_total 2"), "{m}");
    assert!(m.contains("skiffd_pool_misses_total 0"), "{m}");
}

fn pool_ready(d: &Daemon) -> u32 {
    let (_, b) = d.raw(None, "GET", "/metrics", None);
    String::from_utf8_lossy(&b)
        .lines()
        .find_map(|l| l.strip_prefix("skiffd_pool_ready "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

#[test]
fn invocations_pass_plugin_admission_with_their_tenant() {
    const TEST: &str = "daemon::invoke_admission";
    if !prerequisite(TEST, vm_and_daemon_ready()) {
        return;
    }
    let dir = match plugin_components() {
        Ok(d) => d,
        Err(e) => {
            prerequisite(TEST, Err(e));
            return;
        }
    };
    let root = Root::new();
    let plugins = root.path().join("plugins.toml");
    std::fs::write(
        &plugins,
        format!(
            r#"cache_dir = "{cache}"
[[plugin]]
name = "inject"
path = "{dir}/env-injector.wasm"
settings = {{ env = {{ INJECTED = "by-plugin" }} }}

[[plugin]]
name = "limits"
path = "{dir}/tenant-limits.wasm"
settings = {{ tenants = {{ fn = {{ memory_mib = 128, vcpus = 1 }} }} }}
"#,
            cache = root.path().join("plugin-cache").display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_opts(
        &root,
        r#"
[[pools]]
tenant = "fn"
image = "busybox"
memory_mib = 128
size = 1
"#,
        false,
        Some(&plugins),
    );
    wait_for("a warm VM", || pool_ready(&d) == 1);
    // Asked for 512 MiB, capped by the tenant's plugin limit to 128: the pool's size,
    // so a warm VM serves it; the plugin's variable is in the environment.
    let (s, v) = d.call(
        "fn",
        "POST",
        "/v1/invoke",
        Some(r#"{"image":"busybox","memory_mib":512,"cmd":["sh","-c","echo $INJECTED; grep MemTotal /proc/meminfo"]}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pool"], "hit", "{v}");
    let out = v["stdout"].as_str().unwrap();
    assert!(out.starts_with("by-plugin\n"), "{out}");
    let kib: u64 = out
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(kib <= 128 * 1024, "a 128 MiB VM: {out}");
    // A tenant the plugin has no limits for is denied, before any VM is used.
    let (s, v) = d.call(
        "stranger",
        "POST",
        "/v1/invoke",
        Some(r#"{"image":"busybox","cmd":["true"]}"#),
    );
    assert_eq!((s, error_code(&v)), (403, "denied"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("stranger"),
        "the plugin saw the tenant: {v}"
    );
    let (_, b) = d.raw(None, "GET", "/metrics", None);
    let m = String::from_utf8_lossy(&b);
    assert!(m.contains("skiffd_pool_misses_total 0"), "{m}");
}

#[test]
fn invocations_restored_from_a_snapshot_keep_to_themselves() {
    let ok = vm_and_daemon_ready().and_then(|()| skiff_tests::snapshot_ready());
    if !prerequisite("daemon::snapshot_invoke", ok) {
        return;
    }
    let root = Root::new();
    let mut d = Daemon::start(&root, "");
    pull_busybox(&d, "fn");
    let body = json!({
        "image": "busybox",
        "memory_mib": 128,
        "snapshot": true,
        "cmd": ["sh", "-c",
            "if [ -e /etc/w ]; then echo seen; else echo fresh; fi; echo x > /etc/w; \
             hostname; head -c16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"],
    })
    .to_string();
    let invoke = |d: &Daemon| {
        let (s, v) = d.call("fn", "POST", "/v1/invoke", Some(&body));
        assert_eq!((s, v["pool"].as_str()), (200, Some("snapshot")), "{v}");
        assert_eq!(v["exit_code"], 0, "{v}");
        let out: Vec<String> = v["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(out.len(), 3, "{v}");
        out
    };
    let a = invoke(&d); // makes the snapshot, then restores from it
    let b = invoke(&d);
    assert_eq!((a[0].as_str(), b[0].as_str()), ("fresh", "fresh"));
    assert!(a[1].starts_with("sb-") && a[1] != b[1], "{a:?} {b:?}");
    assert_ne!(a[2], b[2], "two restored VMs drew the same random bytes");
    let (_, m) = d.raw(None, "GET", "/metrics", None);
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("skiffd_invoke_seconds_count{pool=\"snapshot\"} 2"),
        "{m}"
    );

    // A restarted daemon restores from the snapshot on disk instead of making another.
    let made = |root: &Root| {
        let dir = std::fs::read_dir(root.path().join("snapshots"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::metadata(dir.join("snapshot.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let first = made(&root);
    d.kill();
    let d = Daemon::start(&root, "");
    let c = invoke(&d);
    assert_eq!(c[0], "fresh");
    assert_eq!(made(&root), first, "the snapshot was made again");
}

#[test]
fn sandboxes_and_pools_start_from_a_snapshot() {
    let ok = vm_and_daemon_ready().and_then(|()| skiff_tests::snapshot_ready());
    if !prerequisite("daemon::snapshot_sandboxes", ok) {
        return;
    }
    let root = Root::new();
    let d = Daemon::start(
        &root,
        r#"
[[pools]]
tenant = "fn"
image = "busybox"
memory_mib = 128
size = 1
snapshot = true
"#,
    );
    // The pool makes the snapshot and fills itself from it.
    wait_for("a warm VM restored from the snapshot", || {
        pool_ready(&d) == 1
    });
    assert_eq!(
        std::fs::read_dir(root.path().join("snapshots"))
            .unwrap()
            .count(),
        1
    );
    let (s, v) = d.call(
        "fn",
        "POST",
        "/v1/invoke",
        Some(r#"{"image":"busybox","memory_mib":128,"cmd":["hostname"]}"#),
    );
    assert_eq!((s, v["pool"].as_str()), (200, Some("hit")), "{v}");
    assert!(v["stdout"].as_str().unwrap().starts_with("sb-"), "{v}");

    // Two sandboxes from the same snapshot, each with exec, its own writes and identity.
    let create = |name: &str| {
        let body = json!({"image": "busybox", "name": name, "cmd": ["sleep", "600"],
            "memory_mib": 128, "snapshot": true, "start": true})
        .to_string();
        let (s, v) = d.call("fn", "POST", "/v1/sandboxes", Some(&body));
        assert_eq!((s, v["state"].as_str()), (201, Some("running")), "{v}");
        assert_eq!(v["snapshot"], true, "{v}");
    };
    let exec = |name: &str, script: &str| {
        let body = json!({"cmd": ["sh", "-c", script]}).to_string();
        let (s, b) = d.raw(
            Some("fn"),
            "POST",
            &format!("/v1/sandboxes/{name}/exec"),
            Some(body.as_bytes()),
        );
        assert_eq!(s, 200);
        let lines = ndjson(&b);
        let out: String = lines
            .iter()
            .filter(|l| l["stream"] == "stdout")
            .map(|l| l["data"].as_str().unwrap().to_owned())
            .collect();
        (out, lines.last().cloned().unwrap_or_default())
    };
    create("a");
    create("b");
    assert_eq!(
        std::fs::read_dir(root.path().join("snapshots"))
            .unwrap()
            .count(),
        1,
        "the pool's snapshot was reused"
    );
    let probe = "if [ -e /etc/w ]; then echo seen; else echo fresh; fi; hostname; \
                 head -c16 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    let (a1, st) = exec("a", &format!("{probe}; echo; echo x > /etc/w; exit 3"));
    assert_eq!(st, json!({"exit_code": 3}));
    let (a2, _) = exec("a", probe);
    let (b1, _) = exec("b", probe);
    let (a1, a2, b1): (Vec<&str>, Vec<&str>, Vec<&str>) = (
        a1.lines().collect(),
        a2.lines().collect(),
        b1.lines().collect(),
    );
    assert_eq!((a1[0], a2[0], b1[0]), ("fresh", "seen", "fresh"));
    assert_eq!(a1[1], a2[1]);
    assert_ne!(a1[1], b1[1], "two restored sandboxes share a hostname");
    assert_ne!(
        a1[2], b1[2],
        "two restored sandboxes drew the same random bytes"
    );

    // Several connections share the one agent line: a slow exec does not hold up another.
    let slow = std::thread::scope(|sc| {
        let t = sc.spawn(|| exec("a", "sleep 8; echo slow"));
        std::thread::sleep(Duration::from_millis(500));
        let (quick, _) = exec("a", "echo quick");
        assert_eq!(quick, "quick\n");
        assert!(!t.is_finished(), "the quick exec waited for the slow one");
        t.join().unwrap().0
    });
    assert_eq!(slow, "slow\n");

    // A restart restores a fresh copy: the writable layer lived in the VM's memory.
    let (s, v) = d.call(
        "fn",
        "POST",
        "/v1/sandboxes/a/stop",
        Some(r#"{"timeout_s":1}"#),
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("exited")), "{v}");
    let (s, v) = d.call("fn", "POST", "/v1/sandboxes/a/start", None);
    assert_eq!((s, v["state"].as_str()), (200, Some("running")), "{v}");
    let (a3, _) = exec("a", probe);
    assert!(a3.starts_with("fresh\n"), "{a3}");
    for n in ["a", "b"] {
        let (s, _) = d.call("fn", "DELETE", &format!("/v1/sandboxes/{n}"), None);
        assert_eq!(s, 200);
    }
}

#[test]
fn schemathesis_finds_no_server_errors() {
    let st = std::env::var_os("SKIFF_SCHEMATHESIS")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let have = match (&st, daemon_ready()) {
        (_, Err(e)) => Err(e),
        (None, _) => Err(
            "schemathesis is not installed (scripts/schemathesis.sh; set SKIFF_SCHEMATHESIS)"
                .into(),
        ),
        (Some(_), Ok(())) => Ok(()),
    };
    if !prerequisite("daemon::schemathesis", have) {
        return;
    }
    let root = Root::new();
    let token = "schemathesis-token";
    let d = Daemon::start_with(
        &root,
        &format!(
            "[tenants.st]\ntokens_sha256 = [\"{}\"]\nquota = {{ max_sandboxes = 0, requests_per_second = 10000.0, burst = 10000 }}\n",
            sha256_hex(token)
        ),
        true,
    );
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/daemon/openapi.yaml");
    let out = Command::new(st.unwrap())
        // It keeps a cache (.schemathesis) in its working directory.
        .current_dir(root.path())
        .arg("run")
        .arg(&spec)
        .arg("--url")
        .arg(format!("http://{}", d.tcp.as_ref().unwrap()))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance",
        ])
        .args(["--max-examples", "30", "--request-timeout", "20"])
        // Pulls would reach out to registries this machine cannot reach.
        .args([
            "--exclude-operation-id",
            "pullImage",
            "--exclude-operation-id",
            "events",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    // Its summary (operations, cases, checks) in the test log.
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("{}", lines[lines.len().saturating_sub(25)..].join("\n"));
    let (_, b) = d.raw(None, "GET", "/metrics", None);
    assert!(String::from_utf8_lossy(&b).contains("skiffd_server_errors_total 0"));
}
