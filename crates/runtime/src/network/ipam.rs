//! Address management for one IPv4 subnet: the gateway takes the first host address,
//! containers the lowest free ones after it. Pure functions over the lease list, so the
//! caller decides where leases live (see [`super::store`]).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 subnet in CIDR form, normalised to its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

/// Prefixes skiff accepts: wide enough to be useful, narrow enough to hold a gateway
/// and at least a few containers.
pub const MIN_PREFIX: u8 = 16;
pub const MAX_PREFIX: u8 = 29;

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(format!(
                "subnet prefix /{prefix} must be between /{MIN_PREFIX} and /{MAX_PREFIX}"
            ));
        }
        let base = Ipv4Addr::from(u32::from(addr) & Self::mask_bits(prefix));
        if base != addr {
            return Err(format!(
                "{addr}/{prefix} is not a network address (did you mean {base}/{prefix}?)"
            ));
        }
        Ok(Self { base, prefix })
    }

    fn mask_bits(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(Self::mask_bits(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_bits(self.prefix) == u32::from(self.base)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        let m = Self::mask_bits(p);
        u32::from(self.base) & m == u32::from(other.base) & m
    }

    /// The host's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    fn broadcast(&self) -> u32 {
        u32::from(self.base) | !Self::mask_bits(self.prefix)
    }

    /// The lowest host address that is neither the gateway nor in `used`.
    pub fn allocate(&self, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let first = u32::from(self.base) + 2;
        (first..self.broadcast())
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("subnet {s:?} must be in CIDR form, e.g. 10.89.7.0/24"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("subnet {s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("subnet {s:?}: {prefix:?} is not a prefix length"))?;
        Self::new(addr, prefix)
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// A locally administered unicast MAC derived from the address, so it is unique on
/// the bridge and stable for the lease.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:73:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_refuse_nonsense() {
        let s: Subnet = "10.89.3.0/24".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 3, 1));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.to_string(), "10.89.3.0/24");
        for bad in [
            "10.89.3.0",
            "10.89.3.5/24",
            "10.89.3.0/8",
            "10.89.3.0/30",
            "x/24",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_skips_gateway_and_used_and_stops_at_broadcast() {
        let s: Subnet = "10.89.0.0/29".parse().unwrap();
        let mut used = Vec::new();
        while let Some(ip) = s.allocate(&used) {
            used.push(ip);
        }
        // .0 network, .1 gateway, .7 broadcast: .2 to .6 remain.
        assert_eq!(used.len(), 5);
        assert_eq!(used[0], Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(used[4], Ipv4Addr::new(10, 89, 0, 6));
        used.remove(1);
        assert_eq!(s.allocate(&used), Some(Ipv4Addr::new(10, 89, 0, 3)));
    }

    #[test]
    fn overlap_and_membership() {
        let a: Subnet = "10.89.0.0/16".parse().unwrap();
        let b: Subnet = "10.89.4.0/24".parse().unwrap();
        let c: Subnet = "10.90.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(b.contains(Ipv4Addr::new(10, 89, 4, 200)));
        assert!(!b.contains(Ipv4Addr::new(10, 89, 5, 1)));
        assert_eq!(mac_for(Ipv4Addr::new(10, 89, 0, 2)), "02:73:0a:59:00:02");
    }
}
