//! Between the host's types and the WIT types, checking everything a plugin returns:
//! a plugin's answer is hostile input like any other.

use std::collections::BTreeMap;

use crate::bindings::types as wit;
use crate::model::{
    Adjustments, ContainerAdmission, ContainerEvent, EventKind, Hook, HookStage, ImageAdmission,
    Mount, Resources, VmSize,
};

const MAX_REASON: usize = 1024;
const MAX_MESSAGE: usize = 4096;
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 32 * 1024;
const MAX_PATH: usize = 4096;
const MAX_PAIRS: usize = 256;
const MAX_MOUNTS: usize = 64;
const MAX_HOOKS: usize = 16;
const MAX_STRINGS: usize = 64;
pub(crate) const MAX_RECORDS: usize = 32;
const MAX_FIELDS: usize = 32;
const MAX_ACTION: usize = 128;
const MAX_MEMORY_MIB: u32 = 1 << 20;
const MAX_VCPUS: u32 = 256;

fn pairs(map: &BTreeMap<String, String>) -> Vec<wit::KeyValue> {
    map.iter()
        .map(|(k, v)| wit::KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

pub(crate) fn image_request(req: &ImageAdmission) -> wit::ImageAdmission {
    wit::ImageAdmission {
        reference: req.reference.clone(),
        digest: req.digest.clone(),
        config: req.config.clone(),
        layers: req
            .layers
            .iter()
            .map(|l| wit::Layer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect(),
    }
}

pub(crate) fn container_request(req: &ContainerAdmission) -> wit::ContainerAdmission {
    wit::ContainerAdmission {
        id: req.id.clone(),
        spec: req.spec.clone(),
        image_reference: req.image_reference.clone(),
        image_config: req.image_config.clone(),
        annotations: pairs(&req.annotations),
        labels: pairs(&req.labels),
        tenant: req.tenant.clone(),
    }
}

pub(crate) fn event(ev: &ContainerEvent) -> wit::ContainerEvent {
    wit::ContainerEvent {
        id: ev.id.clone(),
        kind: match ev.kind {
            EventKind::Created => wit::EventKind::Created,
            EventKind::Started => wit::EventKind::Started,
            EventKind::Exited(s) => wit::EventKind::Exited(s),
            EventKind::Removed => wit::EventKind::Removed,
        },
        annotations: pairs(&ev.annotations),
        labels: pairs(&ev.labels),
        tenant: ev.tenant.clone(),
        timestamp_ms: ev.timestamp_ms,
    }
}

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("…(truncated)");
    }
    s
}

/// A deny reason: never empty, never huge.
pub(crate) fn reason(reason: String) -> String {
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        "(no reason given)".to_string()
    } else {
        truncate(reason, MAX_REASON)
    }
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes, at most {max}", s.len()));
    }
    if s.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    Ok(())
}

fn check_key(what: &str, key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("{what} has an empty key"));
    }
    check_text(&format!("{what} key {key:.40?}"), key, MAX_KEY)
}

fn check_absolute(what: &str, path: &str) -> Result<(), String> {
    check_text(what, path, MAX_PATH)?;
    if !path.starts_with('/') {
        return Err(format!("{what} {path:.80?} is not an absolute path"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("{what} {path:.80?} contains '..'"));
    }
    Ok(())
}

fn check_strings(what: &str, list: &[String], max_len: usize) -> Result<(), String> {
    if list.len() > MAX_STRINGS {
        return Err(format!(
            "{what}: {} entries, at most {MAX_STRINGS}",
            list.len()
        ));
    }
    list.iter().try_for_each(|s| check_text(what, s, max_len))
}

fn key_values(
    what: &str,
    list: Vec<wit::KeyValue>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<BTreeMap<String, String>, String> {
    if list.len() > MAX_PAIRS {
        return Err(format!(
            "{what}: {} entries, at most {MAX_PAIRS}",
            list.len()
        ));
    }
    let mut map = BTreeMap::new();
    for kv in list {
        check_key(what, &kv.key)?;
        check(&kv.key)?;
        check_text(&format!("{what} {:.40?}", kv.key), &kv.value, MAX_VALUE)?;
        if let Some(previous) = map.insert(kv.key.clone(), kv.value.clone()) {
            if previous != kv.value {
                return Err(format!(
                    "{what} {:.40?} is set twice to different values",
                    kv.key
                ));
            }
        }
    }
    Ok(map)
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    what: &str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<Option<T>, String> {
    match v {
        Some(x) if x < lo || x > hi => Err(format!("{what} {x} is outside {lo}..={hi}")),
        _ => Ok(v),
    }
}

/// Check a plugin's adjustment and turn it into the host's form.
pub(crate) fn adjustment(a: wit::Adjustment) -> Result<Adjustments, String> {
    let env = key_values("env", a.env, |k| {
        if k.contains('=') {
            Err(format!("env name {k:.40?} contains '='"))
        } else {
            Ok(())
        }
    })?;
    let annotations = key_values("annotation", a.annotations, |_| Ok(()))?;
    let labels = key_values("label", a.labels, |_| Ok(()))?;

    if a.mounts.len() > MAX_MOUNTS {
        return Err(format!("{} mounts, at most {MAX_MOUNTS}", a.mounts.len()));
    }
    let mut mounts = Vec::with_capacity(a.mounts.len());
    for m in a.mounts {
        check_absolute("mount destination", &m.destination)?;
        if m.source.is_empty() {
            return Err(format!(
                "mount at {:.80?} has an empty source",
                m.destination
            ));
        }
        check_text("mount source", &m.source, MAX_PATH)?;
        if m.kind.is_empty() || m.kind.len() > 32 || !m.kind.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("mount type {:.40?} is not valid", m.kind));
        }
        check_strings("mount options", &m.options, MAX_KEY)?;
        if mounts
            .iter()
            .any(|x: &Mount| x.destination == m.destination)
        {
            return Err(format!("two mounts at {:.80?}", m.destination));
        }
        mounts.push(Mount {
            destination: m.destination,
            source: m.source,
            kind: m.kind,
            options: m.options,
        });
    }

    if a.hooks.len() > MAX_HOOKS {
        return Err(format!("{} hooks, at most {MAX_HOOKS}", a.hooks.len()));
    }
    let mut hooks = Vec::with_capacity(a.hooks.len());
    for h in a.hooks {
        check_absolute("hook path", &h.path)?;
        check_strings("hook args", &h.args, MAX_VALUE)?;
        check_strings("hook env", &h.env, MAX_VALUE)?;
        if let Some(bad) = h.env.iter().find(|e| !e.contains('=')) {
            return Err(format!("hook env entry {bad:.40?} is not NAME=VALUE"));
        }
        in_range("hook timeout", h.timeout_secs, 1, 3600)?;
        hooks.push(Hook {
            stage: match h.stage {
                wit::HookStage::CreateRuntime => HookStage::CreateRuntime,
                wit::HookStage::CreateContainer => HookStage::CreateContainer,
                wit::HookStage::StartContainer => HookStage::StartContainer,
                wit::HookStage::Poststart => HookStage::Poststart,
                wit::HookStage::Poststop => HookStage::Poststop,
            },
            path: h.path,
            args: h.args,
            env: h.env,
            timeout_secs: h.timeout_secs,
        });
    }

    let vm = VmSize {
        memory_mib: in_range("vm memory MiB", a.vm.memory_mib, 1, MAX_MEMORY_MIB)?,
        vcpus: in_range("vm vcpus", a.vm.vcpus, 1, MAX_VCPUS)?,
    };
    let r = a.resources;
    let resources = Resources {
        memory_limit_bytes: in_range("memory limit", r.memory_limit_bytes, 1, u64::MAX)?,
        cpu_shares: in_range("cpu shares", r.cpu_shares, 2, 262_144)?,
        cpu_quota: match r.cpu_quota {
            Some(q) if q != -1 && q < 1000 => {
                return Err(format!("cpu quota {q} must be -1 or at least 1000"))
            }
            q => q,
        },
        cpu_period: in_range("cpu period", r.cpu_period, 1000, 1_000_000)?,
        pids_limit: match r.pids_limit {
            Some(p) if p != -1 && p < 1 => {
                return Err(format!("pids limit {p} must be -1 or positive"))
            }
            p => p,
        },
    };
    Ok(Adjustments {
        env,
        mounts,
        annotations,
        labels,
        vm,
        resources,
        hooks,
    })
}

/// A checked audit record from a plugin: (action, message, fields).
pub(crate) type CheckedRecord = (String, String, BTreeMap<String, String>);

pub(crate) fn audit_records(records: Vec<wit::AuditRecord>) -> Result<Vec<CheckedRecord>, String> {
    if records.len() > MAX_RECORDS {
        return Err(format!(
            "returned {} audit records, at most {MAX_RECORDS}",
            records.len()
        ));
    }
    records
        .into_iter()
        .map(|r| {
            if r.action.is_empty() || r.action.len() > MAX_ACTION {
                return Err(format!(
                    "audit action {:.40?} must be 1..={MAX_ACTION} bytes",
                    r.action
                ));
            }
            if r.fields.len() > MAX_FIELDS {
                return Err(format!(
                    "audit record has {} fields, at most {MAX_FIELDS}",
                    r.fields.len()
                ));
            }
            let fields = key_values("audit field", r.fields, |_| Ok(()))?;
            Ok((r.action, truncate(r.message, MAX_MESSAGE), fields))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> wit::Adjustment {
        wit::Adjustment {
            env: vec![],
            mounts: vec![],
            annotations: vec![],
            labels: vec![],
            vm: wit::VmSize {
                memory_mib: None,
                vcpus: None,
            },
            resources: wit::Resources {
                memory_limit_bytes: None,
                cpu_shares: None,
                cpu_quota: None,
                cpu_period: None,
                pids_limit: None,
            },
            hooks: vec![],
        }
    }

    fn kv(k: &str, v: &str) -> wit::KeyValue {
        wit::KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn good_adjustment_passes() {
        let mut a = empty();
        a.env = vec![kv("A", "1")];
        a.vm.memory_mib = Some(256);
        a.mounts = vec![wit::Mount {
            destination: "/data".into(),
            source: "/srv/data".into(),
            kind: "bind".into(),
            options: vec!["ro".into()],
        }];
        let got = adjustment(a).unwrap();
        assert_eq!(got.env["A"], "1");
        assert_eq!(got.vm.memory_mib, Some(256));
        assert_eq!(got.mounts.len(), 1);
    }

    #[test]
    fn garbage_is_refused() {
        type Case = Box<dyn Fn(&mut wit::Adjustment)>;
        let cases: Vec<Case> = vec![
            Box::new(|a| a.env = vec![kv("A=B", "1")]),
            Box::new(|a| a.env = vec![kv("", "1")]),
            Box::new(|a| a.env = vec![kv("A", "1"), kv("A", "2")]),
            Box::new(|a| a.env = (0..1000).map(|i| kv(&i.to_string(), "")).collect()),
            Box::new(|a| a.annotations = vec![kv("k", "v\0")]),
            Box::new(|a| a.vm.memory_mib = Some(0)),
            Box::new(|a| a.vm.vcpus = Some(100_000)),
            Box::new(|a| a.resources.cpu_quota = Some(-5)),
            Box::new(|a| a.resources.pids_limit = Some(0)),
            Box::new(|a| {
                a.mounts = vec![wit::Mount {
                    destination: "/a/../../etc".into(),
                    source: "/".into(),
                    kind: "bind".into(),
                    options: vec![],
                }]
            }),
            Box::new(|a| {
                a.mounts = vec![wit::Mount {
                    destination: "relative".into(),
                    source: "/".into(),
                    kind: "bind".into(),
                    options: vec![],
                }]
            }),
            Box::new(|a| {
                a.hooks = vec![wit::Hook {
                    stage: wit::HookStage::Poststop,
                    path: "/bin/x".into(),
                    args: vec![],
                    env: vec!["NOEQUALS".into()],
                    timeout_secs: None,
                }]
            }),
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut a = empty();
            case(&mut a);
            assert!(adjustment(a).is_err(), "case {i} accepted");
        }
    }

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(reason("  ".into()), "(no reason given)");
        let long = reason("é".repeat(5000));
        assert!(long.len() < MAX_REASON + 32);
        assert!(long.ends_with("(truncated)"));
    }

    #[test]
    fn too_many_records_is_an_error() {
        let rec = |a: &str| wit::AuditRecord {
            action: a.into(),
            message: "m".into(),
            fields: vec![],
        };
        assert!(audit_records(vec![rec("x"); MAX_RECORDS + 1]).is_err());
        assert!(audit_records(vec![rec("")]).is_err());
        assert_eq!(audit_records(vec![rec("ok")]).unwrap().len(), 1);
    }
}
