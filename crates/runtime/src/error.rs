use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between "run this" and the guest agent answering.
/// Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found (looked in {looked}); {hint}")]
    MissingArtifact {
        what: &'static str,
        looked: String,
        hint: &'static str,
    },
    #[error("{tool} not found (looked in {looked}); {hint}")]
    MissingTool {
        tool: &'static str,
        looked: String,
        hint: &'static str,
    },
    #[error("no hypervisor backend can run here: {0}")]
    NoBackend(String),
    /// What was asked for is malformed or not allowed (a flag, a name, a bundle field).
    #[error("{0}")]
    Invalid(String),
    /// The container, network or record named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists, but its state forbids the request (taken, in use, running, full).
    #[error("{0}")]
    Conflict(String),
    /// This backend or this VM cannot do what is asked.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else that is skiff's own failure (a corrupt record, an unexpected reply).
    #[error("{0}")]
    Config(String),
    /// Another container already has the name.
    #[error(
        "the container name {name:?} is already in use by container {holder}; remove or rename that container first"
    )]
    NameInUse { name: String, holder: String },
    #[error("could not start {what}: {source}")]
    Launch {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest agent did not come up within {after:?}{}", console_suffix(.console_tail))]
    BootTimeout {
        after: Duration,
        console_tail: Vec<String>,
    },
    #[error("the microVM exited ({status}) before its agent came up{}", console_suffix(.console_tail))]
    VmExitedEarly {
        status: String,
        console_tail: Vec<String>,
    },
    #[error("agent protocol error: {0}")]
    Protocol(String),
    #[error("the guest agent reported: {0}")]
    Agent(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Disk { path: PathBuf, message: String },
    /// A snapshot is missing, damaged, or does not fit this host or request.
    #[error("snapshot {path}: {message}")]
    Snapshot { path: PathBuf, message: String },
    /// Host network setup (bridge, TAP, nftables) failed.
    #[error("network setup: {0}")]
    Network(String),
}

fn console_suffix(lines: &[String]) -> String {
    if lines.is_empty() {
        String::from(" (the console printed nothing)")
    } else {
        format!("; last console lines:\n  {}", lines.join("\n  "))
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl From<skiff_proto::FrameError> for Error {
    fn from(e: skiff_proto::FrameError) -> Self {
        Self::Protocol(e.to_string())
    }
}
