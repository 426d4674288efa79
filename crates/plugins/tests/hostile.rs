//! Plugins that misbehave: every failure fails the hook per the failure policy, with a
//! message naming the plugin, and the host neither crashes nor hangs.

#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::collections::BTreeMap;

use serde_json::json;
use skiff_plugins::{
    ContainerAdmission, ContainerEvent, EventKind, FailurePolicy, ImageAdmission, Outcome,
    PluginConfig, PluginError, PluginHost, PLUGIN_FAILED_ACTION,
};

fn hostile(dir: &std::path::Path, name: &str, mode: &str) -> PluginConfig {
    common::plugin(dir, name, "hostile", json!({ "mode": mode }))
}

fn container() -> ContainerAdmission {
    ContainerAdmission {
        id: "c1".into(),
        spec: "{}".into(),
        image_config: "{}".into(),
        ..Default::default()
    }
}

fn image() -> ImageAdmission {
    ImageAdmission {
        reference: "busybox".into(),
        ..Default::default()
    }
}

fn event() -> ContainerEvent {
    ContainerEvent {
        id: "c1".into(),
        kind: EventKind::Started,
        annotations: BTreeMap::new(),
        labels: BTreeMap::new(),
        tenant: None,
        timestamp_ms: 0,
    }
}

/// Under `deny` the container is denied with a reason naming the plugin and
/// containing `expect`; under `allow` it is admitted and the failure recorded.
fn check_admission_failure(mode: &str, expect: &str) {
    let dir = need_components!();
    // Only the looping plugin meets the default deadline; the others get the tests'
    // generous one, so a busy machine cannot turn their failure into a timeout.
    let deadline = (mode == "spin").then_some(100);
    let mut bad = hostile(dir, "bad", mode);
    bad.deadline_ms = deadline;
    let host = PluginHost::load(&common::config(vec![bad])).unwrap();
    let d = host.admit_container(&container());
    assert!(!d.allowed, "{mode}: {d:?}");
    let reason = d.reason.unwrap();
    assert!(reason.contains("plugin 'bad'"), "{mode}: {reason}");
    assert!(reason.contains(expect), "{mode}: {reason}");
    assert!(reason.contains("failure policy: deny"), "{mode}: {reason}");

    let d = host.admit_image(&image());
    if mode != "garbage" {
        assert!(!d.allowed, "{mode}: image {d:?}");
        assert!(d.reason.unwrap().contains(expect), "{mode}");
    }

    let records = host.lifecycle(&event());
    assert_eq!(records.len(), 1, "{mode}: {records:?}");
    assert_eq!(records[0].action, PLUGIN_FAILED_ACTION);
    assert!(
        records[0].message.contains("plugin 'bad'"),
        "{mode}: {records:?}"
    );

    let mut lenient = hostile(dir, "lenient", mode);
    lenient.deadline_ms = deadline;
    lenient.on_error = FailurePolicy::Allow;
    let host = PluginHost::load(&common::config(vec![lenient])).unwrap();
    let d = host.admit_container(&container());
    assert!(d.allowed, "{mode}: {d:?}");
    match &d.records[0].outcome {
        Outcome::Failed { error, applied } => {
            assert_eq!(applied, "allowed");
            assert!(
                error.contains("plugin 'lenient'") && error.contains(expect),
                "{error}"
            );
        }
        other => panic!("{mode}: expected a failure record, got {other:?}"),
    }
}

#[test]
fn a_looping_plugin_is_stopped_at_its_deadline() {
    check_admission_failure("spin", "exceeded its deadline of 100 ms");
}

#[test]
fn a_trapping_plugin_fails_with_its_panic_message() {
    check_admission_failure("trap", "hostile plugin traps on purpose");
}

#[test]
fn a_memory_hog_hits_the_cap() {
    check_admission_failure("hog", "exceeded its memory cap of 32 MiB");
}

#[test]
fn deep_recursion_traps_instead_of_overflowing_our_stack() {
    // Rust on wasm keeps its frames in linear memory: running off the shadow stack is
    // an out-of-bounds trap; the wasm stack limit catches call-depth exhaustion.
    check_admission_failure("recurse", "trapped");
}

#[test]
fn garbage_answers_are_refused() {
    check_admission_failure("garbage", "invalid adjustment");
}

#[test]
fn operator_limits_apply() {
    let dir = need_components!();
    let mut hog = hostile(dir, "hog", "hog");
    hog.memory_mib = Some(8);
    let mut spin = hostile(dir, "spin", "spin");
    spin.deadline_ms = Some(20);
    spin.on_error = FailurePolicy::Allow;
    let host = PluginHost::load(&common::config(vec![spin, hog])).unwrap();
    let d = host.admit_container(&container());
    assert!(!d.allowed);
    match &d.records[0].outcome {
        Outcome::Failed { error, .. } => assert!(error.contains("deadline of 20 ms"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(d.reason.unwrap().contains("memory cap of 8 MiB"));
}

#[test]
fn huge_answers_are_bounded() {
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![hostile(dir, "huge", "huge")])).unwrap();
    let d = host.admit_container(&container());
    assert!(!d.allowed);
    assert!(d.reason.unwrap().len() < 2048);
    let records = host.lifecycle(&event());
    assert_eq!(records.len(), 1);
    assert!(records[0].message.len() < 8192);
}

#[test]
fn log_floods_are_cut_and_the_call_still_succeeds() {
    let dir = need_components!();
    let noisy = hostile(dir, "noisy", "log-flood");
    let host = PluginHost::load(&common::config(vec![noisy])).unwrap();
    let d = host.admit_container(&container());
    assert!(d.allowed, "{d:?}");
}

#[test]
fn a_host_survives_many_failing_calls() {
    // Failed instances must go back to the pool: more failures than pool slots.
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![hostile(dir, "bad", "trap")])).unwrap();
    for _ in 0..100 {
        assert!(!host.admit_image(&image()).allowed);
    }
    let well = PluginHost::load(&common::config(vec![hostile(dir, "ok", "well")])).unwrap();
    for _ in 0..100 {
        assert!(well.admit_image(&image()).allowed);
    }
}

#[test]
fn misbehaving_at_load_refuses_the_configuration() {
    let dir = need_components!();
    for (validate, expect) in [("spin", "deadline"), ("trap", "traps on purpose")] {
        let mut cfg = common::plugin(dir, "loader", "hostile", json!({ "validate": validate }));
        cfg.deadline_ms = Some(100);
        let err = PluginHost::load(&common::config(vec![cfg])).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("'loader'") && msg.contains(expect), "{msg}");
    }
}

#[test]
fn invalid_components_are_refused_naming_the_plugin() {
    let dir = need_components!();
    let tmp = tempfile::tempdir().unwrap();
    let valid = std::fs::read(dir.join("scripted.wasm")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "garbage",
            b"this is not wasm at all".to_vec(),
            "not a valid WebAssembly component",
        ),
        ("empty", Vec::new(), "not a valid WebAssembly component"),
        // A core module, not a component.
        (
            "core",
            b"\0asm\x01\0\0\0".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "truncated",
            valid[..valid.len() / 2].to_vec(),
            "not a valid WebAssembly component",
        ),
        // A valid but empty component: exports nothing.
        (
            "alien",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "is not a skiff plugin",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = tmp.path().join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        let mut cfg = common::plugin(dir, name, "x", json!(null));
        cfg.path = path;
        let err = PluginHost::load(&common::config(vec![cfg])).err().unwrap();
        assert!(
            matches!(&err, PluginError::Load { plugin, .. } if plugin == name),
            "{err}"
        );
        assert!(err.to_string().contains(expect), "{name}: {err}");
    }

    let mut missing = common::plugin(dir, "missing", "does-not-exist", json!(null));
    missing.on_error = FailurePolicy::Allow;
    let err = PluginHost::load(&common::config(vec![missing]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("'missing'"), "{err}");
}

#[test]
fn a_sha256_pin_must_match() {
    let dir = need_components!();
    let mut cfg = common::plugin(dir, "pinned", "scripted", json!(null));
    cfg.sha256 = Some("0".repeat(64));
    let err = PluginHost::load(&common::config(vec![cfg.clone()]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("pins"), "{err}");
    let host = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "pinned",
        "scripted",
        json!(null),
    )]))
    .unwrap();
    cfg.sha256 = Some(host.plugins()[0].sha256.clone());
    assert!(PluginHost::load(&common::config(vec![cfg])).is_ok());
}

#[test]
fn no_ambient_authority_unless_asked_and_granted() {
    let dir = need_components!();
    let granted_dir = tempfile::tempdir().unwrap();

    let host = PluginHost::load(&common::config(vec![hostile(dir, "snoop", "snoop")])).unwrap();
    let d = host.admit_image(&image());
    assert!(d.allowed, "plugin saw ambient authority: {:?}", d.reason);
    let s = &host.plugins()[0];
    assert!(s.granted_env.is_empty() && s.granted_dirs.is_empty() && !s.granted_network);

    // Granted: the directory it asked for. Not granted: anything it did not ask for.
    let mut cfg = hostile(dir, "snoop", "snoop");
    cfg.grants
        .dirs
        .insert("/granted".into(), granted_dir.path().to_path_buf());
    cfg.grants
        .dirs
        .insert("/other".into(), granted_dir.path().to_path_buf());
    cfg.grants.env.insert("PATH".into());
    let host = PluginHost::load(&common::config(vec![cfg])).unwrap();
    let d = host.admit_image(&image());
    let reason = d.reason.unwrap_or_default();
    assert!(reason.contains("file /granted"), "{reason}");
    assert!(
        !reason.contains("env") && !reason.contains("file /tmp"),
        "{reason}"
    );
    let s = &host.plugins()[0];
    assert_eq!(s.granted_dirs.keys().collect::<Vec<_>>(), ["/granted"]);
    assert!(s.granted_env.is_empty());
}
