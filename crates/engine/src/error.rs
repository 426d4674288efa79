//! Typed errors of the engine's use cases.

/// Why a use case failed, by kind: front ends choose exit codes and statuses from the
/// variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be done as asked (a flag, an env file, a user, a signal).
    #[error("{0}")]
    Invalid(String),
    /// A policy plugin denied the image or container; the message says which and why.
    #[error("{0}")]
    Denied(String),
    /// A plugin's adjustment that skiff cannot honour (refused rather than dropped).
    #[error("{0}")]
    Adjustment(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("load plugins from {path}: {source}")]
    Plugins {
        path: String,
        #[source]
        source: skiff_plugins::PluginError,
    },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `return Err(Error::Invalid(format!(...)))`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use invalid;
