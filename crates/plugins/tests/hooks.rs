//! Each hook point with the example plugins: allow, deny, adjust, ordering, conflicts,
//! selection, lifecycle audit, settings validation.

#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::collections::BTreeMap;

use serde_json::json;
use skiff_plugins::{
    ContainerAdmission, ContainerEvent, EventKind, HookStage, ImageAdmission, Outcome, PluginError,
    PluginHost, Selection, DISABLE_ANNOTATION, ENABLE_ANNOTATION,
};

fn image(reference: &str, digest: &str) -> ImageAdmission {
    ImageAdmission {
        reference: reference.into(),
        digest: digest.into(),
        config: "{}".into(),
        layers: vec![],
    }
}

fn container(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ContainerAdmission {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    ContainerAdmission {
        id: "c1".into(),
        spec: r#"{"ociVersion":"1.0.2","process":{"args":["sh"]}}"#.into(),
        image_reference: "docker.io/library/busybox:latest".into(),
        image_config: "{}".into(),
        annotations: map(annotations),
        labels: map(labels),
        tenant: None,
    }
}

fn event(kind: EventKind) -> ContainerEvent {
    ContainerEvent {
        id: "c1".into(),
        kind,
        annotations: BTreeMap::new(),
        labels: [("team".to_string(), "blue".to_string())].into(),
        tenant: Some("acme".into()),
        timestamp_ms: 1_700_000_000_000,
    }
}

const PINNED: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

#[test]
fn image_admission_allows_listed_registries_and_pinned_digests() {
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "allowlist",
        "image-allowlist",
        json!({"registries": ["docker.io", "registry.example.com:5000"], "digests": [PINNED]}),
    )]))
    .unwrap();

    let d = host.admit_image(&image("busybox", "sha256:abc"));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.records.len(), 1);
    assert_eq!(d.records[0].plugin, "allowlist");
    assert_eq!(d.records[0].outcome, Outcome::Allowed);

    assert!(
        host.admit_image(&image("registry.example.com:5000/x/y:1", "sha256:abc"))
            .allowed
    );
    assert!(host.admit_image(&image("quay.io/x/y:1", PINNED)).allowed);

    let d = host.admit_image(&image("quay.io/evil/miner:latest", "sha256:abc"));
    assert!(!d.allowed);
    let reason = d.reason.unwrap();
    assert!(
        reason.contains("'allowlist'") && reason.contains("quay.io"),
        "{reason}"
    );
    assert!(matches!(d.records[0].outcome, Outcome::Denied { .. }));
}

#[test]
fn settings_are_validated_at_load() {
    let dir = need_components!();
    let err = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "allowlist",
        "image-allowlist",
        json!({"registries": []}),
    )]))
    .err()
    .unwrap();
    assert!(
        matches!(&err, PluginError::SettingsRejected { plugin, .. } if plugin == "allowlist"),
        "{err}"
    );
    assert!(err.to_string().contains("allowlist is empty"), "{err}");

    let err = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "typo",
        "image-allowlist",
        json!({"registrys": ["docker.io"]}),
    )]))
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("'typo'") && err.to_string().contains("invalid settings"),
        "{err}"
    );

    let err = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "scripted",
        "scripted",
        json!({"reject_settings": "no thanks"}),
    )]))
    .err()
    .unwrap();
    assert!(err.to_string().contains("no thanks"), "{err}");
}

#[test]
fn env_injector_adjusts_the_container() {
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "proxy",
        "env-injector",
        json!({"env": {"HTTP_PROXY": "http://proxy:3128"}, "annotations": {"example.com/injected": "yes"}}),
    )]))
    .unwrap();
    let d = host.admit_container(&container(&[], &[]));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.adjustments.env["HTTP_PROXY"], "http://proxy:3128");
    assert_eq!(d.adjustments.annotations["example.com/injected"], "yes");
    assert!(matches!(d.records[0].outcome, Outcome::Adjusted { .. }));
    // The decision is data: it survives a JSON round trip for `skiff inspect`.
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(
        serde_json::from_str::<skiff_plugins::ContainerDecision>(&json).unwrap(),
        d
    );
}

#[test]
fn tenant_limits_cap_vm_size_by_label() {
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "limits",
        "tenant-limits",
        json!({"label": "tenant", "tenants": {"small": {"memory_mib": 256, "vcpus": 1}}}),
    )]))
    .unwrap();

    let d = host.admit_container(&container(
        &[("tenant", "small")],
        &[
            ("io.skiff.vm.memory-mib", "4096"),
            ("io.skiff.vm.vcpus", "8"),
        ],
    ));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.adjustments.vm.memory_mib, Some(256));
    assert_eq!(d.adjustments.vm.vcpus, Some(1));

    let d = host.admit_container(&container(
        &[("tenant", "small")],
        &[("io.skiff.vm.memory-mib", "128")],
    ));
    assert_eq!(d.adjustments.vm.memory_mib, Some(128));

    let d = host.admit_container(&container(&[("tenant", "unknown")], &[]));
    assert!(!d.allowed);
    assert!(d.reason.unwrap().contains("unknown"));
    assert!(d.adjustments.is_empty());
}

#[test]
fn plugins_run_in_order_and_merge() {
    let dir = need_components!();
    let mut first = common::plugin(
        dir,
        "first",
        "scripted",
        json!({"adjust": {"env": {"A": "1", "SHARED": "same"}, "hooks": [{"path": "/bin/first"}]}}),
    );
    first.grants.host_hooks.insert("/bin".into());
    let host = PluginHost::load(&common::config(vec![
        first,
        common::plugin(
            dir,
            "second",
            "scripted",
            json!({"adjust": {"env": {"B": "2", "SHARED": "same"}, "memory_mib": 512,
                   "hooks": [{"path": "/bin/second", "stage": "startContainer"}]}}),
        ),
    ]))
    .unwrap();
    let d = host.admit_container(&container(&[], &[]));
    assert!(d.allowed, "{d:?}");
    let names: Vec<_> = d.records.iter().map(|r| r.plugin.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    let hooks: Vec<_> = d
        .adjustments
        .hooks
        .iter()
        .map(|h| h.path.as_str())
        .collect();
    assert_eq!(hooks, ["/bin/first", "/bin/second"]);
    assert_eq!(d.adjustments.hooks[0].stage, HookStage::CreateRuntime);
    assert_eq!(d.adjustments.hooks[1].stage, HookStage::StartContainer);
    assert_eq!(d.adjustments.env.len(), 3);
    assert_eq!(d.adjustments.vm.memory_mib, Some(512));
}

#[test]
fn host_hooks_a_plugin_was_not_granted_fail_by_its_policy() {
    let dir = need_components!();
    let settings = json!({"adjust": {"env": {"A": "1"},
        "hooks": [{"path": "/usr/bin/id", "stage": "poststop"}]}});
    // Failure policy deny: the container is refused, naming the plugin and the hook.
    let host = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "sneaky",
        "scripted",
        settings.clone(),
    )]))
    .unwrap();
    let d = host.admit_container(&container(&[], &[]));
    assert!(!d.allowed);
    let reason = d.reason.unwrap();
    assert!(
        reason.contains("sneaky")
            && reason.contains("/usr/bin/id")
            && reason.contains("host_hooks"),
        "{reason}"
    );
    assert!(d.adjustments.is_empty());

    // Failure policy allow: the container goes on without any of that plugin's changes.
    let mut lenient = common::plugin(dir, "sneaky", "scripted", settings.clone());
    lenient.on_error = skiff_plugins::FailurePolicy::Allow;
    let host = PluginHost::load(&common::config(vec![lenient])).unwrap();
    let d = host.admit_container(&container(&[], &[]));
    assert!(d.allowed, "{d:?}");
    assert!(d.adjustments.is_empty(), "{d:?}");

    // Granted (the exact file): the hook is kept with its stage.
    let mut granted = common::plugin(dir, "sneaky", "scripted", settings);
    granted.grants.host_hooks.insert("/usr/bin/id".into());
    let host = PluginHost::load(&common::config(vec![granted])).unwrap();
    let d = host.admit_container(&container(&[], &[]));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.adjustments.hooks.len(), 1);
    assert_eq!(d.adjustments.hooks[0].stage, HookStage::Poststop);
}

#[test]
fn conflicting_adjustments_deny_naming_both_plugins() {
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![
        common::plugin(
            dir,
            "proxy-a",
            "env-injector",
            json!({"env": {"HTTP_PROXY": "a"}}),
        ),
        common::plugin(
            dir,
            "proxy-b",
            "env-injector",
            json!({"env": {"HTTP_PROXY": "b"}}),
        ),
    ]))
    .unwrap();
    let d = host.admit_container(&container(&[], &[]));
    assert!(!d.allowed);
    let reason = d.reason.unwrap();
    assert!(
        reason.contains("'proxy-a'")
            && reason.contains("'proxy-b'")
            && reason.contains("HTTP_PROXY"),
        "{reason}"
    );
    assert!(d.adjustments.is_empty());
}

#[test]
fn a_denial_stops_admission() {
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![
        common::plugin(
            dir,
            "gate",
            "scripted",
            json!({"container_deny": "not today"}),
        ),
        common::plugin(dir, "after", "env-injector", json!({"env": {"X": "1"}})),
    ]))
    .unwrap();
    let d = host.admit_container(&container(&[], &[]));
    assert!(!d.allowed);
    assert_eq!(
        d.reason.as_deref(),
        Some("denied by plugin 'gate': not today")
    );
    assert_eq!(
        d.records.len(),
        1,
        "later plugins are not called after a denial"
    );
}

#[test]
fn annotations_select_opt_in_and_opt_out_plugins() {
    let dir = need_components!();
    let mut opt_in = common::plugin(dir, "extra", "env-injector", json!({"env": {"EXTRA": "1"}}));
    opt_in.selection = Selection::OptIn;
    let mut opt_out = common::plugin(dir, "usual", "env-injector", json!({"env": {"USUAL": "1"}}));
    opt_out.selection = Selection::OptOut;
    let always = common::plugin(
        dir,
        "policy",
        "env-injector",
        json!({"env": {"POLICY": "1"}}),
    );
    let host = PluginHost::load(&common::config(vec![opt_in, opt_out, always])).unwrap();

    let keys = |d: &skiff_plugins::ContainerDecision| -> Vec<String> {
        d.adjustments.env.keys().cloned().collect()
    };
    assert_eq!(
        keys(&host.admit_container(&container(&[], &[]))),
        ["POLICY", "USUAL"]
    );
    let d = host.admit_container(&container(
        &[],
        &[
            (ENABLE_ANNOTATION, "extra"),
            (DISABLE_ANNOTATION, "usual, policy"),
        ],
    ));
    // `always` plugins cannot be disabled by a container.
    assert_eq!(keys(&d), ["EXTRA", "POLICY"]);
}

#[test]
fn lifecycle_events_produce_audit_records() {
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![
        common::plugin(
            dir,
            "audit",
            "audit-logger",
            json!({"labels": ["team"], "log": true}),
        ),
        // An admission-only plugin is not called for events.
        common::plugin(dir, "proxy", "env-injector", json!({"env": {"X": "1"}})),
    ]))
    .unwrap();
    for (kind, action) in [
        (EventKind::Created, "container.created"),
        (EventKind::Started, "container.started"),
        (EventKind::Exited(137), "container.exited"),
        (EventKind::Removed, "container.removed"),
    ] {
        let records = host.lifecycle(&event(kind));
        assert_eq!(records.len(), 1, "{records:?}");
        let r = &records[0];
        assert_eq!(r.plugin, "audit");
        assert_eq!(r.action, action);
        assert_eq!(r.event, kind.name());
        assert_eq!(r.fields["tenant"], "acme");
        assert_eq!(r.fields["label.team"], "blue");
        if let EventKind::Exited(_) = kind {
            assert_eq!(r.fields["status"], "137");
        }
    }
}

#[test]
fn no_plugins_allows_everything() {
    let host = PluginHost::empty().unwrap();
    assert!(host.admit_image(&image("x", "y")).allowed);
    let d = host.admit_container(&container(&[], &[]));
    assert!(d.allowed && d.adjustments.is_empty() && d.records.is_empty());
    assert!(host.lifecycle(&event(EventKind::Started)).is_empty());
}

#[test]
fn summaries_list_hooks_and_grants() {
    let dir = need_components!();
    let host = PluginHost::load(&common::config(vec![common::plugin(
        dir,
        "audit",
        "audit-logger",
        serde_json::Value::Null,
    )]))
    .unwrap();
    let s = &host.plugins()[0];
    assert_eq!(s.reports_name, "audit-logger");
    assert_eq!(s.hooks, ["lifecycle"]);
    assert_eq!(s.deadline_ms, common::TEST_DEADLINE_MS);
    assert_eq!(s.memory_mib, 32);
    assert!(s.granted_env.is_empty() && s.granted_dirs.is_empty() && !s.granted_network);
}
