//! Name resolution inside containers: `/etc/resolv.conf` carries the host's resolvers
//! (loopback ones cannot be reached from a VM and are dropped, as Docker does), and
//! `/etc/hosts` names the container itself and, on user-defined networks, the other
//! containers of the network that exist when it starts, unless the network's DNS
//! responder ([`super::resolver`]) serves names, live.

use std::net::Ipv4Addr;

/// Largest file the agent is asked to write (it enforces the same bound).
pub const MAX_FILE: usize = skiff_proto::MAX_NET_FILE;

/// Used when the host has only loopback resolvers (systemd-resolved, dnsmasq).
const FALLBACK: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

/// The container's resolv.conf from the host's.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(addr) = words.next() else { continue };
                if let Ok(ip) = addr.parse::<Ipv4Addr>() {
                    if !ip.is_loopback() {
                        out.push_str(&format!("nameserver {ip}\n"));
                        servers += 1;
                    }
                }
            }
            Some("search" | "domain" | "options") => {
                out.push_str(t);
                out.push('\n');
            }
            _ => {}
        }
    }
    if servers == 0 {
        out.push_str(FALLBACK);
    }
    truncate(out)
}

/// The container's resolv.conf on a network with a DNS responder: the gateway, then
/// the host's search domains and options.
pub fn resolv_conf_via(gateway: Ipv4Addr, host: &str) -> String {
    let mut out = format!("nameserver {gateway}\n");
    for line in host.lines() {
        let t = line.trim();
        if matches!(
            t.split_whitespace().next(),
            Some("search" | "domain" | "options")
        ) {
            out.push_str(t);
            out.push('\n');
        }
    }
    truncate(out)
}

/// The container's /etc/hosts: localhost, itself, then `peers` (address, names).
pub fn hosts(own_ip: Ipv4Addr, own_names: &[&str], peers: &[(Ipv4Addr, Vec<String>)]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let line = |ip: Ipv4Addr, names: &[&str]| {
        let names: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| valid_hostname(n))
            .collect();
        if names.is_empty() {
            String::new()
        } else {
            format!("{ip}\t{}\n", names.join(" "))
        }
    };
    out.push_str(&line(own_ip, own_names));
    for (ip, names) in peers {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        out.push_str(&line(*ip, &names));
    }
    truncate(out)
}

/// Names that are safe on a hosts line (no whitespace or comment characters).
fn valid_hostname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_FILE {
        let cut = s[..MAX_FILE].rfind('\n').map_or(0, |i| i + 1);
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_dropped() {
        let r = resolv_conf(
            "# c\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch example.org\n",
        );
        assert_eq!(r, "nameserver 10.255.255.53\nsearch example.org\n");
        assert_eq!(resolv_conf("nameserver 127.0.0.53\n"), FALLBACK);
        assert_eq!(
            resolv_conf_via(
                Ipv4Addr::new(10, 89, 1, 1),
                "nameserver 127.0.0.53\nsearch example.org\n"
            ),
            "nameserver 10.89.1.1\nsearch example.org\n"
        );
    }

    #[test]
    fn hosts_name_self_and_peers_and_skip_bad_names() {
        let h = hosts(
            Ipv4Addr::new(10, 89, 1, 2),
            &["web", "abc123"],
            &[(
                Ipv4Addr::new(10, 89, 1, 3),
                vec!["db".into(), "bad name".into()],
            )],
        );
        assert!(h.contains("10.89.1.2\tweb abc123\n"));
        assert!(h.contains("10.89.1.3\tdb\n"));
        assert!(!h.contains("bad"));
    }
}
