//! Images: the store the CLI uses, shared by every tenant (layers are content-addressed
//! and read-only; what a tenant runs stays its own). Pull, list, inspect, and look up
//! what a sandbox or invocation runs from.

use std::path::{Path, PathBuf};

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use skiff_engine::run_config::ImageDefaults;
use skiff_image::{busybox, registry, Image, Reference};

use crate::error::{printable, ApiError};
use crate::state::Daemon;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    pub reference: String,
}

#[derive(Debug, Serialize)]
pub struct ImageView {
    pub id: String,
    pub manifest_digest: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub layers: Vec<LayerView>,
    /// The image config's `config` object (Entrypoint, Cmd, Env, ...).
    pub config: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct LayerView {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

pub fn view(i: &Image) -> ImageView {
    ImageView {
        id: i.id.to_string(),
        manifest_digest: i.manifest_digest.to_string(),
        tags: i.tags.iter().map(ToString::to_string).collect(),
        size: i.layers.iter().map(|l| l.size).sum(),
        layers: i
            .layers
            .iter()
            .map(|l| LayerView {
                digest: l.digest.to_string(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect(),
        config: i.config_json["config"].clone(),
    }
}

pub fn list(d: &Daemon) -> Result<Vec<ImageView>, ApiError> {
    Ok(d.store
        .images()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .iter()
        .map(view)
        .collect())
}

pub fn inspect(d: &Daemon, reference: &str) -> Result<ImageView, ApiError> {
    d.store.image(reference).map(|i| view(&i)).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "image_not_found",
            format!("no image {:?} in the store", printable(reference)),
        )
    })
}

/// Makes `reference` present: already there, the offline busybox starter image, or a
/// registry pull. A registry that refuses or cannot be reached is the reference's
/// problem as far as this request goes (422), not the daemon's.
pub fn pull(d: &Daemon, reference: &str) -> Result<ImageView, ApiError> {
    let r = Reference::parse(reference)
        .map_err(|e| ApiError::bad_request("invalid_reference", format!("{e}")))?;
    if let Ok(i) = d.store.image(reference) {
        return Ok(view(&i));
    }
    let starter = Path::new(busybox::DEFAULT_BUSYBOX);
    let image = if r.familiar_name() == "busybox"
        && r.tag.as_deref().is_none_or(|t| t == "latest")
        && r.digest.is_none()
        && starter.is_file()
    {
        busybox::build(&d.store, starter, busybox::DEFAULT_NAME)
            .map_err(|e| ApiError::internal(format!("build the busybox starter image: {e}")))?
    } else {
        let opts = registry::RegistryOptions {
            progress: false,
            retries: 0,
            ..Default::default()
        };
        registry::pull(&d.store, &r, &opts)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "pull_failed",
                    format!("pull {}: {e}", printable(reference)),
                )
            })?
            .image
    };
    let policy = skiff_engine::policy::get().map_err(ApiError::from)?;
    if let Err(e) = policy.admit_image(reference, &image) {
        let _ = d.store.remove(reference, true);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "denied",
            format!("{e:#}"),
        ));
    }
    Ok(view(&image))
}

/// The image's defaults and read-only layer disks; 404 when it is not in the store.
pub fn image_for(
    d: &Daemon,
    reference: &str,
) -> Result<(Image, ImageDefaults, Vec<PathBuf>), ApiError> {
    if reference.is_empty() || reference.len() > 512 {
        return Err(ApiError::invalid("image: 1-512 characters"));
    }
    let image = d.store.image(reference).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "image_not_found",
            format!(
                "no image {:?} in the store; pull it first (POST /v1/images/pull)",
                printable(reference)
            ),
        )
    })?;
    let defaults = ImageDefaults::from_config_json(&image.config_json);
    let layers = d
        .store
        .layer_disks(&image)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((image, defaults, layers))
}
