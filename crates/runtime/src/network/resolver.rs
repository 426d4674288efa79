//! The DNS responder of a user-defined network: a UDP socket on the network's gateway
//! address, port 53, that answers container names from the network's record at the
//! moment of the query (so a container started later is found and a removed or
//! stopped one is not) and forwards every other name to the host's resolvers.
//!
//! Every supervisor of a running container on the network serves it, all bound to the
//! same address with `SO_REUSEPORT` (the kernel spreads queries over them): the
//! responder lives exactly as long as some container that could ask it, without a
//! daemon. Answers come from the shared record, so any of them answers the same.
//!
//! Queries are hostile input: [`super::dns_wire`] parses them within fixed bounds; only
//! sources inside the network's subnet are answered; forwarding is refused for
//! `--internal` networks and for containers with `--egress deny` (DNS would otherwise
//! be a way out), and at most [`MAX_FORWARDS`] forwarded queries are in flight.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::dns_wire::{self, Query, Rcode, WireError, CLASS_IN, TYPE_A, TYPE_ANY};
use super::{link, Egress, Lease, Network, Networks};
use crate::{Error, Result};

pub const PORT: u16 = 53;
/// Forwarded queries in flight per responder; beyond this, SERVFAIL.
pub const MAX_FORWARDS: usize = 32;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the serving thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(500);

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Answer(Rcode, Vec<Ipv4Addr>),
    Forward,
    /// Not from this network: no answer at all.
    Drop,
}

/// Decides a query from `client` given the network and its live leases; `running`
/// says whether a lease's container is up (only running containers have names).
pub fn decide(
    network: &Network,
    leases: &[Lease],
    running: impl Fn(&Lease) -> bool,
    client: Ipv4Addr,
    q: &Query,
) -> Decision {
    if !network.subnet.contains(client) {
        return Decision::Drop;
    }
    let matches = |l: &Lease| {
        !q.name.is_empty()
            && (l.container_name.eq_ignore_ascii_case(&q.name)
                || (q.name.len() >= 12 && l.container_id.starts_with(&q.name)))
    };
    let found: Vec<&Lease> = leases.iter().filter(|l| matches(l) && running(l)).collect();
    if !found.is_empty() {
        let addrs = if q.qclass == CLASS_IN && matches!(q.qtype, TYPE_A | TYPE_ANY) {
            found.iter().map(|l| l.ip).collect()
        } else {
            // The name exists but has no such record (AAAA: no IPv6 here).
            Vec::new()
        };
        return Decision::Answer(Rcode::NoError, addrs);
    }
    let client_denied = leases
        .iter()
        .any(|l| l.ip == client && l.egress == Egress::Deny);
    if network.internal || client_denied {
        return Decision::Answer(Rcode::Refused, Vec::new());
    }
    Decision::Forward
}

/// The host's IPv4 resolvers (loopback ones too: this runs on the host).
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddrV4> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse().ok())
                .flatten()
        })
        .map(|ip| SocketAddrV4::new(ip, PORT))
        .take(3)
        .collect()
}

/// Where other names are forwarded: `$SKIFF_DNS_UPSTREAMS` (comma-separated
/// `IP[:PORT]`, for hosts whose resolv.conf is not what containers should use, and
/// for tests), else the host's `/etc/resolv.conf`.
fn configured_upstreams() -> Vec<SocketAddrV4> {
    if let Ok(list) = std::env::var("SKIFF_DNS_UPSTREAMS") {
        return list
            .split(',')
            .filter_map(|a| {
                let a = a.trim();
                a.parse()
                    .ok()
                    .or_else(|| a.parse().ok().map(|ip| SocketAddrV4::new(ip, PORT)))
            })
            .take(3)
            .collect();
    }
    upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// A serving responder; stops (within [`POLL`]) when dropped.
pub struct Responder {
    stop: Arc<AtomicBool>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts serving `network` (whose bridge must already carry its gateway address).
pub fn start(networks: &Networks, network: &Network) -> Result<Responder> {
    let sock = bind_shared(SocketAddrV4::new(network.gateway, PORT))?;
    sock.set_read_timeout(Some(POLL))
        .map_err(Error::io("set the DNS socket's timeout"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = Server {
        sock,
        dir: networks.dir.clone(),
        network: network.name.clone(),
        upstreams: configured_upstreams(),
        inflight: Arc::new(AtomicUsize::new(0)),
        stop: stop.clone(),
    };
    std::thread::Builder::new()
        .name(format!("dns-{}", network.bridge))
        .spawn(move || server.serve())
        .map_err(Error::io("start the DNS responder"))?;
    Ok(Responder { stop })
}

struct Server {
    sock: UdpSocket,
    dir: PathBuf,
    network: String,
    upstreams: Vec<SocketAddrV4>,
    inflight: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn serve(self) {
        let mut buf = [0u8; dns_wire::MAX_MESSAGE + 1];
        while !self.stop.load(Ordering::Relaxed) {
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    tracing::warn!("DNS responder of {}: {e}", self.network);
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let SocketAddr::V4(from) = from else { continue };
            self.handle(&buf[..n], from);
        }
    }

    fn handle(&self, packet: &[u8], from: SocketAddrV4) {
        let q = match dns_wire::parse_query(packet) {
            Ok(q) => q,
            Err(WireError::Ignored(_)) => return,
            Err(WireError::Answerable(rc, why)) => {
                tracing::debug!("DNS query from {from}: {why}");
                if let Some(a) = dns_wire::error_without_question(packet, rc) {
                    let _ = self.sock.send_to(&a, from);
                }
                return;
            }
        };
        let decision = match Networks::snapshot_at(&self.dir, &self.network) {
            Ok(Some((net, leases))) => decide(
                &net,
                &leases,
                |l| link::exists(&link::tap_name(&l.container_id)),
                *from.ip(),
                &q,
            ),
            Ok(None) => Decision::Answer(Rcode::Refused, Vec::new()),
            Err(e) => {
                tracing::warn!("DNS responder of {}: {e}", self.network);
                Decision::Answer(Rcode::ServFail, Vec::new())
            }
        };
        match decision {
            Decision::Answer(rc, addrs) => {
                let _ = self.sock.send_to(&dns_wire::answer(&q, rc, &addrs), from);
            }
            Decision::Drop => {}
            Decision::Forward => self.forward(packet, q, from),
        }
    }

    /// Asks the host's resolvers on a thread of its own; the reply (only one that
    /// matches the query's ID) goes back from the responder's address.
    fn forward(&self, packet: &[u8], q: Query, from: SocketAddrV4) {
        let servfail = || {
            let _ = self
                .sock
                .send_to(&dns_wire::answer(&q, Rcode::ServFail, &[]), from);
        };
        if self.upstreams.is_empty() {
            return servfail();
        }
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= MAX_FORWARDS {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return servfail();
        }
        let Ok(reply_sock) = self.sock.try_clone() else {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return servfail();
        };
        let upstreams = self.upstreams.clone();
        let inflight = self.inflight.clone();
        let packet = packet.to_vec();
        let spawned = std::thread::Builder::new()
            .name("dns-forward".into())
            .spawn(move || {
                let reply = upstreams
                    .iter()
                    .find_map(|u| ask_upstream(*u, &packet, q.id))
                    .unwrap_or_else(|| dns_wire::answer(&q, Rcode::ServFail, &[]));
                let _ = reply_sock.send_to(&reply, from);
                inflight.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn ask_upstream(server: SocketAddrV4, packet: &[u8], id: u16) -> Option<Vec<u8>> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect(server).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.send(packet).ok()?;
    let mut buf = vec![0u8; dns_wire::MAX_RELAY + 1];
    // A connected socket only hears from `server`; stray IDs are skipped, a bounded
    // number of times.
    for _ in 0..4 {
        let n = s.recv(&mut buf).ok()?;
        if dns_wire::is_reply_to(&buf[..n], id) {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// A UDP socket on `addr` that other skiff processes may bind too (`SO_REUSEPORT`).
fn bind_shared(addr: SocketAddrV4) -> Result<UdpSocket> {
    skiff_sys::net::udp_bind_shared(addr)
        .map_err(Error::io(format!("bind the DNS socket on {addr}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::dns_wire::parse_query;

    fn net(internal: bool) -> Network {
        Network {
            name: "app".into(),
            id: "0".repeat(32),
            bridge: "skiff1".into(),
            subnet: "10.89.1.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 89, 1, 1),
            internal,
            created_ms: 0,
        }
    }

    fn lease(name: &str, id: &str, last: u8, egress: Egress) -> Lease {
        Lease {
            container_id: id.into(),
            container_name: name.into(),
            record: PathBuf::from("/nonexistent"),
            ip: Ipv4Addr::new(10, 89, 1, last),
            mac: String::new(),
            ports: Vec::new(),
            egress,
        }
    }

    fn q(name: &str, qtype: u16) -> Query {
        let mut p = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            p.push(u8::try_from(l.len()).unwrap());
            p.extend_from_slice(l.as_bytes());
        }
        p.extend_from_slice(&[0, 0, u8::try_from(qtype).unwrap(), 0, 1]);
        parse_query(&p).unwrap()
    }

    #[test]
    fn names_of_running_peers_resolve_and_others_forward() {
        let leases = [
            lease("web", "abcdef0123456789", 2, Egress::Allow),
            lease("db", "1111222233334444", 3, Egress::Allow),
            lease("jail", "9999888877776666", 4, Egress::Deny),
        ];
        let up = |l: &Lease| l.container_name != "db";
        let client = Ipv4Addr::new(10, 89, 1, 2);
        let d =
            |name: &str, qtype, client| decide(&net(false), &leases, up, client, &q(name, qtype));
        let web = Ipv4Addr::new(10, 89, 1, 2);
        assert_eq!(
            d("WEB", TYPE_A, client),
            Decision::Answer(Rcode::NoError, vec![web])
        );
        assert_eq!(
            d("abcdef012345", TYPE_A, client),
            Decision::Answer(Rcode::NoError, vec![web])
        );
        // AAAA for a known name: no data, not a forward.
        assert_eq!(
            d("web", 28, client),
            Decision::Answer(Rcode::NoError, vec![])
        );
        // A stopped container has no name; the short ID needs 12 characters.
        assert_eq!(d("db", TYPE_A, client), Decision::Forward);
        assert_eq!(d("abcdef", TYPE_A, client), Decision::Forward);
        assert_eq!(d("example.org", TYPE_A, client), Decision::Forward);
        // Egress-denied containers and internal networks get no forwarding.
        let jail = Ipv4Addr::new(10, 89, 1, 4);
        assert_eq!(
            d("example.org", TYPE_A, jail),
            Decision::Answer(Rcode::Refused, vec![])
        );
        assert_eq!(
            d("web", TYPE_A, jail),
            Decision::Answer(Rcode::NoError, vec![web])
        );
        assert_eq!(
            decide(&net(true), &leases, up, client, &q("example.org", TYPE_A)),
            Decision::Answer(Rcode::Refused, vec![])
        );
        // Outsiders are not answered at all.
        assert_eq!(
            d("web", TYPE_A, Ipv4Addr::new(10, 89, 2, 2)),
            Decision::Drop
        );
    }

    #[test]
    fn upstreams_come_from_resolv_conf() {
        assert_eq!(
            upstreams(
                "# x\nnameserver 127.0.0.53\nnameserver ::1\nsearch a\nnameserver 10.0.0.1\n"
            ),
            [
                SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 53), 53),
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 53)
            ]
        );
    }
}
