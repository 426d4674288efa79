//! Errors of the plugin host. Every error that concerns one plugin names it.

use std::path::PathBuf;

/// Errors from loading a configuration or a plugin. (Hook calls never return errors:
/// failures become decisions according to the failure policy.)
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin configuration {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin configuration {path}: {message}")]
    ConfigParse { path: PathBuf, message: String },
    #[error("plugin configuration: {0}")]
    ConfigInvalid(String),
    #[error("plugin '{plugin}': cannot read {path}: {source}")]
    ReadComponent {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin '{plugin}': {message}")]
    Load { plugin: String, message: String },
    #[error("plugin '{plugin}' rejected its settings: {reason}")]
    SettingsRejected { plugin: String, reason: String },
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

pub type Result<T, E = PluginError> = std::result::Result<T, E>;
