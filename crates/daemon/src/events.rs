//! The event stream: what happened to which sandbox, per tenant. API handlers and the
//! state watcher publish; `GET /v1/events` subscribers get their own tenant's events.

use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(skip)]
    pub tenant: String,
    pub time_ms: u64,
    /// `sandbox.created`, `sandbox.started`, `sandbox.exited`, `sandbox.lost`,
    /// `sandbox.deleted`, `exec.started`, `exec.exited`, `invoke.finished`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Clone)]
pub struct Bus(broadcast::Sender<Event>);

impl Default for Bus {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl Bus {
    pub fn publish(
        &self,
        tenant: &str,
        kind: &'static str,
        sandbox: Option<&str>,
        exit_code: Option<i32>,
    ) {
        // No subscriber is not an error.
        let _ = self.0.send(Event {
            tenant: tenant.to_owned(),
            time_ms: skiff_runtime::container::now_ms(),
            kind,
            sandbox: sandbox.map(str::to_owned),
            exit_code,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
