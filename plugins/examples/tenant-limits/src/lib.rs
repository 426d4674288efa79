//! Caps the microVM size of a container by its tenant. The tenant is the one the caller
//! passes, or else the value of the label `label` (default `tenant`). The requested size
//! comes from the annotations `io.skiff.vm.memory-mib` / `io.skiff.vm.vcpus`; the plugin
//! sets the size to min(requested, cap), or to the cap when nothing was requested.
//! Containers of unknown tenants get `default`, or are denied when there is none.
//!
//! Settings: `{"label": "tenant",
//!             "tenants": {"team-a": {"memory_mib": 512, "vcpus": 1}},
//!             "default": {"memory_mib": 256, "vcpus": 1}}`

use std::collections::BTreeMap;

use skiff_plugin_sdk::{
    export_plugin, Adjustment, ContainerAdmission, ContainerVerdict, HookSet, Plugin, VmSize,
};

const MEMORY_ANNOTATION: &str = "io.skiff.vm.memory-mib";
const VCPUS_ANNOTATION: &str = "io.skiff.vm.vcpus";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    memory_mib: u32,
    vcpus: u32,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_label")]
    label: String,
    #[serde(default)]
    tenants: BTreeMap<String, Limits>,
    default: Option<Limits>,
}

fn default_label() -> String {
    "tenant".into()
}

struct TenantLimits;

impl Plugin for TenantLimits {
    type Settings = Settings;
    const NAME: &'static str = "tenant-limits";
    const HOOKS: HookSet = HookSet::CONTAINER_ADMISSION.union(HookSet::SETTINGS_VALIDATION);

    fn check_settings(settings: &Settings) -> Result<(), String> {
        let all = settings.tenants.iter().map(|(n, l)| (n.as_str(), l));
        for (name, limits) in all.chain(settings.default.iter().map(|l| ("default", l))) {
            if limits.memory_mib == 0 || limits.vcpus == 0 {
                return Err(format!(
                    "limits of {name} must be at least 1 MiB and 1 vcpu"
                ));
            }
        }
        Ok(())
    }

    fn admit_container(settings: &Settings, container: &ContainerAdmission) -> ContainerVerdict {
        let tenant = container.tenant_or_label(&settings.label);
        let limits = match tenant.and_then(|t| settings.tenants.get(t)) {
            Some(limits) => limits,
            None => match &settings.default {
                Some(limits) => limits,
                None => {
                    return ContainerVerdict::Deny(match tenant {
                        Some(t) => format!("tenant {t:?} has no limits configured"),
                        None => format!("container has no tenant (label {:?})", settings.label),
                    })
                }
            },
        };
        let requested = |key: &str| {
            container
                .annotation(key)
                .and_then(|v| v.parse::<u32>().ok())
        };
        let capped = |req: Option<u32>, cap: u32| Some(req.map_or(cap, |r| r.min(cap)));
        Adjustment {
            vm: VmSize {
                memory_mib: capped(requested(MEMORY_ANNOTATION), limits.memory_mib),
                vcpus: capped(requested(VCPUS_ANNOTATION), limits.vcpus),
            },
            ..Adjustment::default()
        }
        .into_verdict()
    }
}

export_plugin!(TenantLimits);
