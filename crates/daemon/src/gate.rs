//! Who gets a connection: at most `max` open at once and `max_per_peer` from one TCP
//! address. Past either cap a new connection is answered `503` with `Retry-After` and
//! closed at once (shedding), so a flood of idle or half-sent connections cannot
//! exhaust the daemon's file descriptors or lock other tenants out; the slots held by
//! the flood are freed by the header-read timeout (see `server`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::Connections;

/// The open connections, counted.
pub struct Gate {
    limits: Connections,
    open: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its slot.
pub struct Pass {
    gate: Arc<Gate>,
    peer: Option<IpAddr>,
}

impl Gate {
    pub fn new(limits: Connections) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::default(),
        })
    }

    /// A slot for a connection from `peer` (`None` on the UNIX socket), or `None` when
    /// a cap is reached.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Option<Pass> {
        let mut c = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.limits.max {
            return None;
        }
        if let Some(ip) = peer {
            let n = c.per_peer.entry(ip).or_default();
            if *n >= self.limits.max_per_peer {
                return None;
            }
            *n += 1;
        }
        c.total += 1;
        Some(Pass {
            gate: self.clone(),
            peer,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut c = self.gate.open.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.peer {
            if let Some(n) = c.per_peer.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_peer.remove(&ip);
                }
            }
        }
    }
}

/// The whole answer to a shed connection (it is closed right after).
pub const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 84\r\n\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many open connections; retry in 1 s\"}}\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_slots_come_back() {
        let g = Gate::new(Connections {
            header_timeout_ms: 1,
            max: 3,
            max_per_peer: 2,
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = g.admit(Some(a)).unwrap();
        let _p2 = g.admit(Some(a)).unwrap();
        assert!(g.admit(Some(a)).is_none(), "per-peer cap");
        let _p3 = g.admit(Some(b)).unwrap();
        assert!(g.admit(None).is_none(), "global cap");
        drop(p1);
        assert_eq!(g.open(), 2);
        assert!(g.admit(Some(a)).is_some());
    }

    #[test]
    fn the_shed_response_is_well_formed() {
        let text = std::str::from_utf8(SHED_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
        let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        assert_eq!(v["error"]["code"], "overloaded");
    }
}
