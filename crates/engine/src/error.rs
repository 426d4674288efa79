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
    /// The container records, the VM or the host network failed (including a name
    /// already in use: `skiff_runtime::Error::NameInUse`).
    #[error(transparent)]
    Runtime(#[from] skiff_runtime::Error),
    #[error(transparent)]
    Image(#[from] skiff_image::Error),
    #[error("container {} is already running", short(id))]
    AlreadyRunning { id: String },
    #[error("container {} is not running", short(id))]
    NotRunning { id: String },
    #[error(
        "cannot remove container {}: it is running; stop it first or use rm -f",
        short(id)
    )]
    Running { id: String },
    #[error("container {} failed to start: {failure}", short(id))]
    StartFailed { id: String, failure: StartFailure },
    #[error(
        "the container's supervisor exited ({status}) before the container started; see {}",
        log.display()
    )]
    SupervisorExited {
        id: String,
        status: std::process::ExitStatus,
        log: std::path::PathBuf,
    },
    #[error("container {} did not {what} within {secs} s", short(id))]
    Timeout {
        id: String,
        what: &'static str,
        secs: u64,
    },
}

/// The 12-character ID people see.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Why a container whose supervisor ran did not really start.
#[derive(Debug, Clone)]
pub enum StartFailure {
    /// The supervisor recorded an error (the VM did not boot, the agent refused).
    Recorded(String),
    /// The command could not be executed (exit 126 or 127); its stderr says why.
    NotRunnable { exit_code: i32, stderr: String },
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Recorded(e) => f.write_str(e),
            Self::NotRunnable { exit_code, stderr } if stderr.is_empty() => {
                write!(f, "the command could not be run (exit {exit_code})")
            }
            Self::NotRunnable { stderr, .. } => f.write_str(stderr),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `return Err(Error::Invalid(format!(...)))`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use invalid;
