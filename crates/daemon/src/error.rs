//! API errors: an HTTP status plus `{"error":{"code":..., "message":...}}`. Client
//! mistakes are 4xx with a code a program can match on; 5xx only for our own failures.

use hyper::StatusCode;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limiting).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_argument", message)
    }

    /// The same answer for "does not exist" and "belongs to another tenant".
    pub fn sandbox_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such sandbox: {}", printable(id)),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn quota(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "quota_exceeded", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

/// By kind: a denial (or an adjustment skiff cannot honour) is 403 `denied`, a bad
/// request 400, something missing 404, a sandbox in the wrong state or a name taken
/// 409, what this host cannot do 422, anything else ours (500).
impl From<skiff_engine::Error> for ApiError {
    fn from(e: skiff_engine::Error) -> Self {
        use skiff_engine::Error as E;
        match e {
            E::Denied(m) | E::Adjustment(m) => Self::new(StatusCode::FORBIDDEN, "denied", m),
            E::Invalid(m) => Self::invalid(m),
            E::AlreadyRunning { .. } => {
                Self::conflict("already_running", "the sandbox is already running")
            }
            E::NotRunning { .. } => Self::conflict("not_running", "the sandbox is not running"),
            E::Running { .. } => Self::conflict("running", "the sandbox is running"),
            E::Runtime(skiff_runtime::Error::NameInUse { name, .. }) => Self::conflict(
                "name_in_use",
                format!("the name {:?} is already in use", printable(&name)),
            ),
            E::Runtime(skiff_runtime::Error::Invalid(m)) => Self::invalid(m),
            E::Runtime(skiff_runtime::Error::NotFound(m)) => Self::not_found(m),
            E::Runtime(skiff_runtime::Error::Conflict(m)) => Self::conflict("conflict", m),
            E::Runtime(skiff_runtime::Error::Unsupported(m)) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported", m)
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

/// Client text echoed in messages: bounded and without control characters.
pub fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect::<String>()
}
