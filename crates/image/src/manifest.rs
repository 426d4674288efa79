//! Manifest documents: telling indexes from image manifests, choosing the
//! linux/amd64 entry of an index, and building new manifests and configs.

use oci_spec::image::{Descriptor, ImageIndex};
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::error::{malformed, Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Media types we accept for manifests, in Accept-header order.
pub const ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

pub const PLATFORM_OS: &str = "linux";
pub const PLATFORM_ARCH: &str = "amd64";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// Decide what a manifest document is, from its media type (header or field)
/// or, failing that, its shape.
pub fn kind_of(bytes: &[u8], header_media_type: Option<&str>) -> Result<Kind> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| malformed("manifest", e))?;
    let mt = v
        .get("mediaType")
        .and_then(Value::as_str)
        .or(header_media_type)
        .unwrap_or("");
    if mt == OCI_INDEX || mt == DOCKER_LIST || (mt.is_empty() && v.get("manifests").is_some()) {
        return Ok(Kind::Index);
    }
    if v.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
        return Err(Error::Unsupported(
            "Docker schema 1 manifests (deprecated)".into(),
        ));
    }
    if v.get("layers").is_some() && v.get("config").is_some() {
        return Ok(Kind::Manifest);
    }
    Err(malformed("manifest", format!("unknown media type {mt:?}")))
}

pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(|e| malformed("image index", e))
}

/// The linux/amd64 entry of an index (an entry without platform counts as a
/// match when it is the only one).
pub fn select_platform(index: &ImageIndex) -> Result<Descriptor> {
    let ms = index.manifests();
    let matches = |d: &&Descriptor| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == PLATFORM_OS && p.architecture().to_string() == PLATFORM_ARCH
        })
    };
    if let Some(d) = ms.iter().find(matches) {
        return Ok(d.clone());
    }
    let unplatformed: Vec<&Descriptor> = ms.iter().filter(|d| d.platform().is_none()).collect();
    if let [only] = unplatformed.as_slice() {
        return Ok((*only).clone());
    }
    let have: Vec<String> = ms
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| format!("{}/{}", p.os(), p.architecture()))
        .collect();
    Err(Error::Unsupported(format!(
        "no {PLATFORM_OS}/{PLATFORM_ARCH} image in index (has: {})",
        have.join(", ")
    )))
}

/// One layer for a new manifest.
pub struct NewLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// Serialize an OCI image manifest for a config and layers.
pub fn build_manifest(config: &Digest, config_size: u64, layers: &[NewLayer]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.digest.as_str(), "size": l.size}))
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.as_str(), "size": config_size},
        "layers": layers,
    });
    serde_json::to_vec(&m).unwrap_or_default()
}

/// A minimal linux/amd64 config for the given diff_ids.
pub fn base_config(diff_ids: &[Digest], created: &str, created_by: &str) -> Value {
    let history: Vec<Value> = diff_ids
        .iter()
        .map(|_| json!({"created": created, "created_by": created_by}))
        .collect();
    json!({
        "architecture": PLATFORM_ARCH,
        "os": PLATFORM_OS,
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(Digest::as_str).collect::<Vec<_>>()},
        "history": history,
    })
}

/// Media type of a layer from its first bytes (archives do not say).
pub fn sniff_layer_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        OCI_LAYER_GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        OCI_LAYER_ZSTD
    } else {
        OCI_LAYER_TAR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of(br#"{"schemaVersion":2,"manifests":[]}"#, None).unwrap(),
            Kind::Index
        );
        assert_eq!(
            kind_of(br#"{"schemaVersion":2,"config":{},"layers":[]}"#, None).unwrap(),
            Kind::Manifest
        );
        assert!(kind_of(br#"{"schemaVersion":1}"#, None).is_err());
        assert!(kind_of(b"not json", None).is_err());
    }

    #[test]
    fn platform_selection() {
        let idx = parse_index(
            format!(
                r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{b}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
                a = "a".repeat(64),
                b = "b".repeat(64)
            )
            .as_bytes(),
        )
        .unwrap();
        let d = select_platform(&idx).unwrap();
        assert!(d.digest().to_string().contains("bbbb"));
    }
}
