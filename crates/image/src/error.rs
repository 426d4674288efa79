//! Typed errors of the image store.

use std::path::PathBuf;

/// Everything that can go wrong in the image store. Inputs from archives and
/// registries are hostile, so most variants carry enough context for one clear
/// error line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid digest {0:?} (want sha256:<64 hex>)")]
    InvalidDigest(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid reference {0:?}: {1}")]
    InvalidReference(String, &'static str),
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("image {image} is in use by container(s) {containers} (use -f to force)")]
    ImageInUse { image: String, containers: String },
    #[error("image {0} is referenced by several repositories (use -f to force)")]
    ImageMultiplyTagged(String),
    #[error("refusing hostile layer: {0}")]
    HostileLayer(String),
    /// A tar stream made by a guest (`cp` out of a container, a commit) broke the rules.
    #[error("refusing hostile data from the guest: {0}")]
    HostileStream(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("registry {registry}: {detail}")]
    Registry { registry: String, detail: String },
    #[error("{tool} failed: {detail}")]
    Tool { tool: &'static str, detail: String },
    #[error("store at {0} is not usable: {1}")]
    Store(PathBuf, String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to an `io::Error` (`.ctx(|| format!(...))`).
pub(crate) trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: f(),
            source,
        })
    }
}

pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Error {
    Error::Malformed {
        what,
        detail: detail.to_string(),
    }
}
