//! Published ports: `-p [HOSTIP:][HOSTPORT:]CTRPORT[/tcp|/udp]` as Docker spells them,
//! and the host ports skiff picks when none is given (`-p 80`, `-P`).

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            other => Err(format!("unknown protocol {other:?} (expected tcp or udp)")),
        }
    }
}

/// One published port. `host_port` 0 means "pick a free one" until the lease is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Only traffic to this host address is forwarded; `None` is every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// Parses one `-p` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid port mapping {s:?}: {why}");
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, p)) => (r, p.parse::<Proto>().map_err(|e| bad(&e))?),
            None => (s, Proto::Tcp),
        };
        let port = |p: &str, what: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| bad(&format!("{what} {p:?} is not a port number (1-65535)")))
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_ip, host_port, ctr) = match parts.as_slice() {
            [ctr] => (None, 0, *ctr),
            [hp, ctr] => (None, port(hp, "host port")?, *ctr),
            [ip, hp, ctr] => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| bad(&format!("{ip:?} is not an IPv4 address")))?;
                let hp = if hp.is_empty() {
                    0
                } else {
                    port(hp, "host port")?
                };
                (Some(ip).filter(|ip| !ip.is_unspecified()), hp, *ctr)
            }
            _ => return Err(bad("expected [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]")),
        };
        Ok(Self {
            host_ip,
            host_port,
            container_port: port(ctr, "container port")?,
            proto,
        })
    }

    /// Do the two claim the same host socket address?
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

impl fmt::Display for PortMapping {
    /// As `docker ps` shows it: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.container_port,
            self.proto
        )
    }
}

/// An image's `ExposedPorts` key (`80/tcp`, `53/udp`, `8080`), for `-P`.
pub fn parse_exposed(key: &str) -> Result<PortMapping, String> {
    let m = PortMapping::parse(key)?;
    if m.host_port != 0 || m.host_ip.is_some() {
        return Err(format!("exposed port {key:?} must be PORT[/PROTO]"));
    }
    Ok(m)
}

/// Range host ports are picked from (Linux's default ephemeral range).
const PICK_FROM: u16 = 32768;
const PICK_TO: u16 = 60999;

/// Gives every mapping with host port 0 a port that no lease in `taken` uses and that
/// the host can bind right now.
pub fn assign_host_ports(wanted: &mut [PortMapping], taken: &[PortMapping]) -> Result<(), String> {
    let mut claimed: Vec<PortMapping> = taken.to_vec();
    for i in 0..wanted.len() {
        if wanted[i].host_port != 0 {
            claimed.push(wanted[i]);
            continue;
        }
        let found = (PICK_FROM..=PICK_TO).find(|&p| {
            let candidate = PortMapping {
                host_port: p,
                ..wanted[i]
            };
            !claimed.iter().any(|c| c.clashes_with(&candidate))
                && wanted.iter().all(|w| !w.clashes_with(&candidate))
                && host_port_free(candidate)
        });
        let Some(p) = found else {
            return Err("no free host port left to publish on".into());
        };
        wanted[i].host_port = p;
        claimed.push(wanted[i]);
    }
    Ok(())
}

/// Is the host port free of listeners? (A DNAT'd port would hide a host service.)
pub fn host_port_free(m: PortMapping) -> bool {
    let addr = (m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), m.host_port);
    match m.proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).is_ok(),
        Proto::Udp => std::net::UdpSocket::bind(addr).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_forms_parse() {
        let m = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.container_port, m.proto),
            (None, 8080, 80, Proto::Tcp)
        );
        let m = PortMapping::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(m.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            (m.host_port, m.container_port, m.proto),
            (5353, 53, Proto::Udp)
        );
        let m = PortMapping::parse("80").unwrap();
        assert_eq!((m.host_port, m.container_port), (0, 80));
        let m = PortMapping::parse("127.0.0.1::80").unwrap();
        assert_eq!((m.host_ip, m.host_port), (Some(Ipv4Addr::LOCALHOST), 0));
        let m = PortMapping::parse("0.0.0.0:81:80").unwrap();
        assert_eq!(m.host_ip, None);
        assert_eq!(m.to_string(), "0.0.0.0:81->80/tcp");
    }

    #[test]
    fn garbage_is_refused_with_the_input_named() {
        for bad in [
            "", "garbage", "80:", ":80", "0:80", "70000:80", "1:2:3:4", "80/sctp", "x.y:1:2",
            "8080:80/",
        ] {
            let e = PortMapping::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn clashes_consider_address_and_protocol() {
        let p = |s| PortMapping::parse(s).unwrap();
        assert!(p("8080:80").clashes_with(&p("127.0.0.1:8080:81")));
        assert!(!p("127.0.0.2:8080:80").clashes_with(&p("127.0.0.1:8080:81")));
        assert!(!p("8080:80/udp").clashes_with(&p("8080:80")));
    }

    #[test]
    fn picked_ports_avoid_taken_ones() {
        let taken = [PortMapping {
            host_port: PICK_FROM,
            ..PortMapping::parse("1:1").unwrap()
        }];
        let mut wanted = [
            PortMapping::parse("80").unwrap(),
            PortMapping::parse("81").unwrap(),
        ];
        assign_host_ports(&mut wanted, &taken).unwrap();
        assert!(wanted[0].host_port > PICK_FROM);
        assert_ne!(wanted[0].host_port, wanted[1].host_port);
        assert!(parse_exposed("80/tcp").is_ok());
        assert!(parse_exposed("1:80").is_err());
    }
}
