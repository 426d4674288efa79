//! The lifecycle's all-or-nothing rules on a store with no VM involved.

use std::collections::BTreeMap;

use skiff_image::Store;
use skiff_proto::ProcessSpec;
use skiff_runtime::container::{BootSettings, ContainerSpec, Containers};

use super::*;
use crate::Error;

fn spec(name: &str, image_id: &str) -> ContainerSpec {
    ContainerSpec {
        id: String::new(),
        name: name.into(),
        image: "busybox".into(),
        image_id: image_id.into(),
        created_ms: 0,
        process: ProcessSpec::new(vec!["true".into()]),
        entrypoint: Vec::new(),
        cmd: vec!["true".into()],
        user: String::new(),
        hostname: String::new(),
        readonly_rootfs: false,
        memory_mib: 256,
        vcpus: 1,
        labels: BTreeMap::new(),
        stop_signal: libc::SIGTERM,
        stop_timeout_s: 10,
        auto_remove: false,
        layers: Vec::new(),
        writable_bytes: 1 << 30,
        boot: BootSettings::default(),
        binds: Vec::new(),
        plugin_decision: None,
        network: Default::default(),
        egress: Default::default(),
        passt_ports: Vec::new(),
        hooks: None,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    containers: Containers,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let containers = Containers::open(dir.path()).expect("containers");
    let store = Store::open(dir.path()).expect("store");
    Fixture {
        _dir: dir,
        containers,
        store,
    }
}

fn request(spec: ContainerSpec) -> Create<'static> {
    static NO_CONFIG: serde_json::Value = serde_json::Value::Null;
    Create {
        spec,
        image_config: &NO_CONFIG,
        ports: Vec::new(),
    }
}

#[test]
fn a_failed_step_leaves_no_record_and_frees_the_name() {
    let f = fixture();
    // No such image in the store: the record made before is undone.
    let missing = "sha256:".to_owned() + &"ab".repeat(32);
    let err = create(
        &f.containers,
        &f.store,
        request(spec("web", &missing)),
        |_| Ok(()),
    );
    assert!(matches!(err, Err(Error::Image(_))), "{err:?}");
    assert!(f.containers.list().expect("list").is_empty());
    // The front end's own refusal comes back as it was given, and records nothing.
    let err = create(
        &f.containers,
        &f.store,
        request(spec("web", &missing)),
        |_| Err(Error::Adjustment("no".into())),
    );
    assert!(matches!(err, Err(Error::Adjustment(_))), "{err:?}");
    assert!(f.containers.list().expect("list").is_empty());
}

#[test]
fn a_name_in_use_is_a_typed_error() {
    let f = fixture();
    f.containers
        .create(spec("web", "sha256:00"))
        .expect("first");
    let err = create(
        &f.containers,
        &f.store,
        request(spec("web", "sha256:00")),
        |_| Ok(()),
    );
    assert!(
        matches!(
            err,
            Err(Error::Runtime(skiff_runtime::Error::NameInUse { .. }))
        ),
        "{err:?}"
    );
}

#[test]
fn a_created_container_stops_and_goes_but_cannot_be_signalled() {
    let f = fixture();
    let c = f.containers.create(spec("", "sha256:00")).expect("create");
    assert!(matches!(
        kill(&f.containers, &c.id, libc::SIGTERM),
        Err(Error::NotRunning { .. })
    ));
    stop(&f.containers, &c.id, libc::SIGTERM, 0).expect("stopping a stopped one is fine");
    let st = wait_exited(&f.containers, &c.id, None).expect("never started");
    assert_eq!(st.pid, None);
    remove(&f.containers, &f.store, &c.id, false).expect("remove");
    assert!(f.containers.list().expect("list").is_empty());
}
