//! Injects environment variables (and optionally annotations) into every container it
//! is selected for.
//!
//! Settings: `{"env": {"HTTP_PROXY": "http://proxy:3128"},
//!             "annotations": {"example.com/injected": "true"}}`

use std::collections::BTreeMap;

use skiff_plugin_sdk::{
    export_plugin, Adjustment, ContainerAdmission, ContainerVerdict, HookSet, KeyValue, Plugin,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

struct EnvInjector;

impl Plugin for EnvInjector {
    type Settings = Settings;
    const NAME: &'static str = "env-injector";
    const HOOKS: HookSet = HookSet::CONTAINER_ADMISSION.union(HookSet::SETTINGS_VALIDATION);

    fn check_settings(settings: &Settings) -> Result<(), String> {
        match settings
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            Some(bad) => Err(format!("{bad:?} is not a valid environment variable name")),
            None => Ok(()),
        }
    }

    fn admit_container(settings: &Settings, _container: &ContainerAdmission) -> ContainerVerdict {
        let pairs = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| KeyValue::new(k.as_str(), v.as_str()))
                .collect()
        };
        Adjustment {
            env: pairs(&settings.env),
            annotations: pairs(&settings.annotations),
            ..Adjustment::default()
        }
        .into_verdict()
    }
}

export_plugin!(EnvInjector);
