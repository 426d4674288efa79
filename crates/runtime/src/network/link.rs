//! Host interfaces: the bridge of each network and one TAP per running container,
//! made with iproute2 (`ip`), plus the sysctls forwarding and the loopback path of
//! published ports need.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::tools::find_program;
use crate::{Error, Result};

/// Linux's IFNAMSIZ less the terminating NUL.
pub use skiff_sys::net::MAX_IFNAME;

fn ip_binary() -> Result<std::path::PathBuf> {
    find_program("ip", "SKIFF_IP").map_err(|looked| Error::MissingTool {
        tool: "ip",
        looked,
        hint: "install it with `apt-get install iproute2`",
    })
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new(ip_binary()?)
        .args(args)
        .output()
        .map_err(Error::io("run ip"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::Network(format!(
        "ip {}: {}",
        args.join(" "),
        stderr.trim()
    )))
}

pub fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn sysctl(path: &str, value: &str) -> Result<()> {
    let full = Path::new("/proc/sys").join(path);
    if std::fs::read_to_string(&full).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&full, value).map_err(Error::io(format!("set {}", full.display())))
}

/// Creates the bridge with the gateway address if it is missing, and brings it up.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    if !exists(name) {
        match ip(&["link", "add", name, "type", "bridge"]) {
            // Another skiff process made it first.
            Err(_) if exists(name) => {}
            other => other?,
        }
    }
    let addr = format!("{gateway}/{prefix}");
    let has_addr = Command::new(ip_binary()?)
        .args(["-4", "-o", "addr", "show", "dev", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {addr} ")))
        .unwrap_or(false);
    if !has_addr {
        match ip(&["addr", "add", &addr, "dev", name]) {
            Err(Error::Network(m)) if m.contains("File exists") => {}
            other => other?,
        }
    }
    ip(&["link", "set", name, "up"])?;
    // Containers reach the uplink through the host; 127.0.0.1 published ports are
    // DNAT'd onto the bridge, which the kernel only routes with route_localnet.
    sysctl("net/ipv4/ip_forward", "1")?;
    sysctl(&format!("net/ipv4/conf/{name}/route_localnet"), "1")?;
    Ok(())
}

pub fn remove(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    match ip(&["link", "del", name]) {
        Err(_) if !exists(name) => Ok(()),
        other => other,
    }
}

/// A persistent TAP enslaved to `bridge`; an existing one (left by a crashed
/// supervisor) is reused.
pub fn create_tap(tap: &str, bridge: &str) -> Result<()> {
    if !exists(tap) {
        ip(&["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])?;
    }
    ip(&["link", "set", "dev", tap, "master", bridge])?;
    ip(&["link", "set", "dev", tap, "up"])
}

/// The TAP of a container: `skt` and the first 12 hex digits of its ID.
pub fn tap_name(container_id: &str) -> String {
    let short: String = container_id.chars().take(12).collect();
    format!("skt{short}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_sys::net::valid_ifname;

    #[test]
    fn tap_names_fit_ifnamsiz() {
        let n = tap_name(&"ab12".repeat(16));
        assert_eq!(n, "sktab12ab12ab12");
        assert!(valid_ifname(&n));
        assert!(!valid_ifname("skiff0; rm"));
        assert!(!valid_ifname(&"a".repeat(16)));
    }
}
