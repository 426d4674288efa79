//! A misbehaving plugin for host tests. `mode` in the settings chooses how every hook
//! misbehaves; `validate` chooses how settings validation at load time misbehaves.
//!
//! Modes: `trap` (panic), `spin` (loop forever), `hog` (allocate without bound),
//! `recurse` (exhaust the stack), `garbage` (well-typed but invalid answers),
//! `huge` (a 4 MiB deny reason / record), `log-flood` (many log calls, then allow),
//! `snoop` (deny, listing any ambient authority it finds: env vars, files, args),
//! `well` (behave).

use std::hint::black_box;

use skiff_plugin_sdk::{
    export_plugin, log, Adjustment, AuditRecord, CapabilityRequest, ContainerAdmission,
    ContainerEvent, ContainerVerdict, HookSet, ImageAdmission, ImageVerdict, KeyValue, Level,
    Mount, Plugin, VmSize,
};

#[derive(serde::Deserialize, Default)]
struct Settings {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    validate: String,
}

fn misbehave(mode: &str) {
    match mode {
        "trap" => panic!("hostile plugin traps on purpose"),
        "spin" => {
            let mut n: u64 = 0;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "hog" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "recurse" => {
            black_box(recurse(black_box(0)));
        }
        "log-flood" => {
            for i in 0..100_000 {
                log(Level::Warn, &format!("flood {i}"));
            }
        }
        _ => {}
    }
}

#[allow(unconditional_recursion)] // exhausting the stack is the point
fn recurse(depth: u64) -> u64 {
    let pad = black_box([depth; 64]);
    recurse(depth + 1).wrapping_add(pad[(depth % 64) as usize])
}

/// What ambient authority is visible, if any.
fn snoop() -> Option<String> {
    let mut found = Vec::new();
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    if !vars.is_empty() {
        found.push(format!("env {vars:?}"));
    }
    for path in ["/", ".", "/etc/passwd", "/tmp", "/granted"] {
        if std::fs::metadata(path).is_ok() {
            found.push(format!("file {path}"));
        }
    }
    if std::env::args().count() > 0 {
        found.push("args".into());
    }
    (!found.is_empty()).then(|| found.join(", "))
}

fn huge() -> String {
    "x".repeat(4 << 20)
}

struct Hostile;

impl Plugin for Hostile {
    type Settings = Settings;
    const NAME: &'static str = "hostile";
    const HOOKS: HookSet = HookSet::all();

    /// Asks for some authority, so tests can check it is given only when granted.
    fn requests() -> CapabilityRequest {
        CapabilityRequest {
            env: vec!["SKIFF_TEST_GRANTED".into()],
            dirs: vec!["/granted".into()],
            network: true,
        }
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        misbehave(&settings.validate);
        Ok(())
    }

    fn admit_image(settings: &Settings, _image: &ImageAdmission) -> ImageVerdict {
        misbehave(&settings.mode);
        match settings.mode.as_str() {
            "snoop" => match snoop() {
                Some(found) => ImageVerdict::Deny(found),
                None => ImageVerdict::Allow,
            },
            "huge" => ImageVerdict::Deny(huge()),
            "garbage" => ImageVerdict::Deny(String::new()),
            _ => ImageVerdict::Allow,
        }
    }

    fn admit_container(settings: &Settings, _c: &ContainerAdmission) -> ContainerVerdict {
        misbehave(&settings.mode);
        match settings.mode.as_str() {
            "huge" => ContainerVerdict::Deny(huge()),
            "garbage" => ContainerVerdict::Adjust(Adjustment {
                env: vec![KeyValue::new("BAD=KEY", "v")],
                mounts: vec![Mount {
                    destination: "../../etc".into(),
                    source: "/".into(),
                    kind: "bind".into(),
                    options: Vec::new(),
                }],
                vm: VmSize {
                    memory_mib: Some(0),
                    vcpus: Some(u32::MAX),
                },
                ..Adjustment::default()
            }),
            _ => ContainerVerdict::Allow,
        }
    }

    fn on_event(settings: &Settings, _event: &ContainerEvent) -> Vec<AuditRecord> {
        misbehave(&settings.mode);
        match settings.mode.as_str() {
            "huge" => vec![AuditRecord::new("huge", huge())],
            "garbage" => (0..10_000)
                .map(|i| AuditRecord::new("", i.to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

export_plugin!(Hostile);
