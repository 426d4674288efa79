//! The WebAssembly plugins at skiff's decision points, end to end: container admission
//! (deny, env and microVM-size adjustments, the decision in `inspect`), lifecycle audit
//! records, and image admission on `load`. Uses the example plugins built by
//! plugins/build.sh and a private store per test.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use skiff_tests::{plugin_components as components, prerequisite, skiff_bin, vm_ready};

struct Env {
    root: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    fn new(test: &str, plugins_toml: &str) -> Option<Self> {
        let dir = match components() {
            Ok(d) => d,
            Err(e) => {
                prerequisite(test, Err(e));
                return None;
            }
        };
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("plugins.toml");
        let text = format!(
            "cache_dir = \"{}\"\n{}",
            root.path().join("plugin-cache").display(),
            plugins_toml.replace("@DIR@", &dir.display().to_string())
        );
        std::fs::write(&config, text).unwrap();
        Some(Self { root, config })
    }

    fn skiff(&self, args: &[&str], plugins: bool) -> Output {
        let mut cmd = Command::new(skiff_bin());
        cmd.arg("--root")
            .arg(self.root.path().join("store"))
            .args(args);
        if plugins {
            cmd.env("SKIFF_PLUGINS_CONFIG", &self.config);
        } else {
            cmd.env_remove("SKIFF_PLUGINS_CONFIG");
        }
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str], plugins: bool) -> String {
        let out = self.skiff(args, plugins);
        assert_eq!(
            out.status.code(),
            Some(0),
            "skiff {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

const CONTAINER_PLUGINS: &str = r#"
[[plugin]]
name = "inject"
path = "@DIR@/env-injector.wasm"
settings = { env = { INJECTED = "by-plugin" } }

[[plugin]]
name = "limits"
path = "@DIR@/tenant-limits.wasm"
settings = { label = "tenant", tenants = { team-a = { memory_mib = 128, vcpus = 1 } } }

[[plugin]]
name = "audit"
path = "@DIR@/audit-logger.wasm"
settings = { labels = ["tenant"] }
"#;

#[test]
fn plugins_admit_adjust_and_audit_containers() {
    const TEST: &str = "plugins_admit_adjust_and_audit_containers";
    if !prerequisite(TEST, vm_ready()) {
        return;
    }
    let Some(env) = Env::new(TEST, CONTAINER_PLUGINS) else {
        return;
    };
    env.ok(&["image", "build-busybox"], false);

    // Adjusted: env injected, the 512M request capped to the tenant's 128 MiB.
    let out = env.ok(
        &[
            "run",
            "--rm",
            "-l",
            "tenant=team-a",
            "-m",
            "512M",
            "busybox",
            "sh",
            "-c",
            "echo $INJECTED; grep MemTotal /proc/meminfo",
        ],
        true,
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("by-plugin"));
    let mem_kb: u64 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        mem_kb < 200 * 1024,
        "guest has {mem_kb} kB, the plugin capped it at 128 MiB"
    );

    // Denied: no tenant label. One line naming the plugin, nothing recorded.
    let out = env.skiff(&["create", "--name", "nobody", "busybox", "true"], true);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits") && err.contains("no tenant"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(env.ok(&["ps", "-a", "-q"], true), "");

    // The decision and the audit trail are in `inspect`.
    env.ok(
        &[
            "create",
            "--name",
            "kept",
            "-l",
            "tenant=team-a",
            "busybox",
            "true",
        ],
        true,
    );
    env.ok(&["start", "-a", "kept"], true);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "kept"], true)).unwrap();
    let plugins = &v[0]["Plugins"];
    assert_eq!(plugins["Admission"]["allowed"], true, "{plugins}");
    assert_eq!(
        plugins["Admission"]["adjustments"]["env"]["INJECTED"], "by-plugin",
        "{plugins}"
    );
    let events: Vec<&str> = plugins["Audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert!(
        events.contains(&"created") && events.contains(&"started") && events.contains(&"exited"),
        "{events:?}"
    );
    env.ok(&["rm", "kept"], true);
}

/// A hook program that appends its name and the state it is given to a log file.
fn hook_script(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let script = hooks.join("record");
    std::fs::write(
        &script,
        "#!/bin/sh\n{ printf '%s ' \"$1\"; cat; echo; } >> \"$2\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn plugin_hooks_run_and_resources_size_the_microvm() {
    const TEST: &str = "plugin_hooks_run_and_resources_size_the_microvm";
    if !prerequisite(TEST, vm_ready()) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let script = hook_script(scratch.path());
    let log = scratch.path().join("hooks.log");
    let hook = |stage: &str| {
        format!(
            "{{ path = \"{}\", args = [\"record\", \"{stage}\", \"{}\"], stage = \"{stage}\" }}",
            script.display(),
            log.display()
        )
    };
    // In-guest hooks: a program of the image, writing the state it is given into the
    // container, where the container's own process reads it.
    let guest_hook = |stage: &str, file: &str| {
        format!(
            "{{ path = \"/bin/sh\", args = [\"sh\", \"-c\", \"cat > {file}\"], stage = \"{stage}\" }}"
        )
    };
    let plugin = |grant: &str| {
        format!(
            "[[plugin]]\nname = \"hooker\"\npath = \"@DIR@/scripted.wasm\"\n\
             grants = {{ host_hooks = [{grant}] }}\n\
             settings = {{ adjust = {{ memory_limit_bytes = 201326592, hooks = [{}, {}, {}, {}, {}] }} }}\n",
            hook("createRuntime"),
            guest_hook("createContainer", "/cc.json"),
            guest_hook("startContainer", "/sc.json"),
            hook("poststart"),
            hook("poststop"),
        )
    };
    let granted = format!("\"{}\"", script.parent().unwrap().display());
    let Some(env) = Env::new(TEST, &plugin(&granted)) else {
        return;
    };
    env.ok(&["image", "build-busybox"], false);

    let out = env.ok(
        &[
            "run",
            "--rm",
            "-m",
            "512M",
            "busybox",
            "sh",
            "-c",
            "cat /cc.json; echo; cat /sc.json; echo; grep MemTotal /proc/meminfo",
        ],
        true,
    );
    let mut lines = out.lines();
    let in_guest: Vec<serde_json::Value> = (0..2)
        .map(|_| serde_json::from_str(lines.next().unwrap()).unwrap())
        .collect();
    assert_eq!(in_guest[0]["status"], "creating", "{out}");
    assert_eq!(in_guest[1]["status"], "created", "{out}");
    let mem_kb: u64 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (100 * 1024..200 * 1024).contains(&mem_kb),
        "guest has {mem_kb} kB; the plugin's 192 MiB memory limit should size it"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let entries: Vec<(&str, serde_json::Value)> = text
        .lines()
        .map(|l| {
            let (stage, state) = l.split_once(' ').unwrap();
            (stage, serde_json::from_str(state).unwrap())
        })
        .collect();
    let stages: Vec<&str> = entries.iter().map(|(s, _)| *s).collect();
    assert_eq!(stages, ["createRuntime", "poststart", "poststop"], "{text}");
    for ((_, state), status) in entries.iter().zip(["creating", "running", "stopped"]) {
        assert_eq!(state["status"], status, "{text}");
        assert_eq!(state["id"], entries[0].1["id"], "{text}");
        assert_eq!(state["id"].as_str().unwrap().len(), 64, "{text}");
    }
    assert_eq!(in_guest[0]["id"], entries[0].1["id"], "{out}");

    // The same plugin without the grant: its host hooks fail it (failure policy deny).
    std::fs::write(&env.config, {
        let text = std::fs::read_to_string(&env.config).unwrap();
        text.replace(&granted, "")
    })
    .unwrap();
    let out = env.skiff(&["create", "busybox", "true"], true);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hooker") && err.contains("host_hooks"),
        "{err}"
    );
    assert_eq!(env.ok(&["ps", "-a", "-q"], true), "");
}

#[test]
fn image_admission_refuses_unlisted_registries_on_load() {
    const TEST: &str = "image_admission_refuses_unlisted_registries_on_load";
    let deny = r#"
[[plugin]]
name = "allowlist"
path = "@DIR@/image-allowlist.wasm"
settings = { registries = ["registry.example:5000"] }
"#;
    let Some(env) = Env::new(TEST, deny) else {
        return;
    };
    if !prerequisite(
        TEST,
        Path::new("/bin/busybox")
            .is_file()
            .then_some(())
            .ok_or("busybox-static missing".into()),
    ) {
        return;
    }
    env.ok(&["image", "build-busybox"], false);
    let archive = env.root.path().join("busybox.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"], false);
    env.ok(&["rmi", "busybox"], false);

    let out = env.skiff(&["load", "-i", archive.to_str().unwrap()], true);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allowlist") && err.contains("not allowed"),
        "{err}"
    );
    assert_eq!(
        env.ok(&["images", "-q"], true),
        "",
        "a denied image must not stay in the store"
    );

    // Allowed registry: the same archive loads.
    std::fs::write(
        &env.config,
        std::fs::read_to_string(&env.config)
            .unwrap()
            .replace("registry.example:5000", "docker.io"),
    )
    .unwrap();
    env.ok(&["load", "-i", archive.to_str().unwrap()], true);
    assert_ne!(env.ok(&["images", "-q"], true), "");
}
