//! Image admission by registry and digest: an image is admitted when its registry is
//! listed, or when its manifest digest is pinned in `digests`; everything else is denied.
//!
//! Settings: `{"registries": ["docker.io", "registry.example.com:5000"],
//!             "digests": ["sha256:..."]}`

use skiff_plugin_sdk::{export_plugin, registry_of, HookSet, ImageAdmission, ImageVerdict, Plugin};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    registries: Vec<String>,
    #[serde(default)]
    digests: Vec<String>,
}

struct ImageAllowlist;

impl Plugin for ImageAllowlist {
    type Settings = Settings;
    const NAME: &'static str = "image-allowlist";
    const HOOKS: HookSet = HookSet::IMAGE_ADMISSION.union(HookSet::SETTINGS_VALIDATION);

    fn check_settings(settings: &Settings) -> Result<(), String> {
        if settings.registries.is_empty() && settings.digests.is_empty() {
            return Err("allowlist is empty: list at least one registry or digest".into());
        }
        if let Some(bad) = settings.digests.iter().find(|d| !is_digest(d)) {
            return Err(format!("{bad:?} is not a sha256 digest"));
        }
        Ok(())
    }

    fn admit_image(settings: &Settings, image: &ImageAdmission) -> ImageVerdict {
        if settings.digests.contains(&image.digest) {
            return ImageVerdict::Allow;
        }
        let registry = registry_of(&image.reference);
        if settings.registries.iter().any(|r| r == registry) {
            return ImageVerdict::Allow;
        }
        ImageVerdict::Deny(format!(
            "image {} ({}) is from registry {registry}, which is not allowed, and its digest is not pinned",
            image.reference, image.digest
        ))
    }
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

export_plugin!(ImageAllowlist);
