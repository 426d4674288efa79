//! The daemon's configuration file (TOML): tenants with their bearer-token hashes and
//! quotas, a default quota for tenants that only reach us over the UNIX socket, and
//! warm pools.
//!
//! ```toml
//! max_body_bytes = 1048576
//! [default_quota]
//! max_sandboxes = 8
//! max_memory_mib = 4096
//! max_vcpus = 8
//! requests_per_second = 50.0
//! burst = 100
//! [tenants.team-a]
//! tokens_sha256 = ["<hex sha256 of the token>"]
//! quota = { max_sandboxes = 2, max_memory_mib = 1024, max_vcpus = 2 }
//! [connections]          # every one optional; these are the defaults
//! header_timeout_ms = 10000   # a request's headers must be in within this
//! max = 1024                  # open connections, all clients together
//! max_per_peer = 64           # open connections from one TCP address
//! [[pools]]
//! tenant = "team-a"
//! image = "busybox"
//! memory_mib = 256
//! vcpus = 1
//! size = 2
//! snapshot = false
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Request bodies above this are refused with 413 unless the config says otherwise.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub default_quota: Quota,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    #[serde(default)]
    pub connections: Connections,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY,
            default_quota: Quota::default(),
            tenants: BTreeMap::new(),
            pools: Vec::new(),
            connections: Connections::default(),
        }
    }
}

/// How many connections skiffd keeps and how long a client may take to send its
/// request headers: half-sent requests (slowloris) are closed, and past the caps new
/// connections get `503` with `Retry-After` instead of exhausting the daemon's file
/// descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Connections {
    pub header_timeout_ms: u64,
    pub max: usize,
    pub max_per_peer: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            max: 1024,
            max_per_peer: 64,
        }
    }
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Lower-case hex SHA-256 of each bearer token that means this tenant.
    #[serde(default)]
    pub tokens_sha256: Vec<String>,
    pub quota: Option<Quota>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    pub max_sandboxes: u32,
    pub max_memory_mib: u64,
    pub max_vcpus: u32,
    pub requests_per_second: f64,
    pub burst: u32,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            max_sandboxes: 8,
            max_memory_mib: 4096,
            max_vcpus: 8,
            requests_per_second: 100.0,
            burst: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub tenant: String,
    pub image: String,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    pub size: u32,
    /// A command run in each warm VM while it waits (in its container, as root, in
    /// `/`; its output is discarded), so that the first process an invocation starts
    /// finds QEMU's translation cache and the guest's caches warm. It must leave
    /// nothing behind (the default `true` does not); `[]` turns the warm-up off.
    #[serde(default = "default_warm_up")]
    pub warm_up: Vec<String>,
    /// Refill from the snapshot of (image, memory_mib, vcpus) instead of booting each
    /// VM (QEMU backend only): a restore takes a tenth of a boot.
    #[serde(default)]
    pub snapshot: bool,
}

fn default_warm_up() -> Vec<String> {
    vec!["true".into()]
}

fn default_memory() -> u32 {
    256
}

fn default_vcpus() -> u32 {
    1
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        for (name, t) in &self.tenants {
            if !valid_tenant(name) {
                bail!(
                    "tenant name {name:?}: use 1-32 of [a-z0-9-], starting with a letter or digit"
                );
            }
            for h in &t.tokens_sha256 {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("tenant {name}: tokens_sha256 entries are 64 hex digits");
                }
            }
        }
        let c = &self.connections;
        if c.header_timeout_ms == 0 || c.max == 0 || c.max_per_peer == 0 {
            bail!("[connections]: header_timeout_ms, max and max_per_peer must be above 0");
        }
        for p in &self.pools {
            if !valid_tenant(&p.tenant) {
                bail!("pool tenant {:?} is not a valid tenant name", p.tenant);
            }
            if p.size > 64 {
                bail!("pool for {}: size {} is above 64", p.image, p.size);
            }
            if p.warm_up.len() > 64 || p.warm_up.iter().any(|a| a.len() > 4096 || a.contains('\0'))
            {
                bail!(
                    "pool for {}: warm_up is at most 64 arguments of 4096 bytes, no NUL",
                    p.image
                );
            }
        }
        Ok(())
    }

    pub fn quota_of(&self, tenant: &str) -> Quota {
        self.tenants
            .get(tenant)
            .and_then(|t| t.quota)
            .unwrap_or(self.default_quota)
    }

    /// The tenant a bearer token belongs to. Every configured hash is compared, in
    /// constant time, so timing says nothing about which (or whether one) matched.
    pub fn tenant_for_token(&self, token: &str) -> Option<String> {
        let digest = Sha256::digest(token.as_bytes());
        let mut found = None;
        for (name, t) in &self.tenants {
            for h in &t.tokens_sha256 {
                let Some(want) = hex_decode(h) else { continue };
                if bool::from(want.as_slice().ct_eq(digest.as_slice())) {
                    found = Some(name.clone());
                }
            }
        }
        found
    }
}

/// Tenant names: 1-32 of `[a-z0-9-]`, starting with a letter or digit. They become part
/// of container names (`<tenant>.<name>`) and labels, so no dots.
pub fn valid_tenant(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_tenants_by_hash() {
        let hash = format!("{:x}", Sha256::digest(b"s3cret"));
        let config: Config = toml::from_str(&format!(
            "[tenants.team-a]\ntokens_sha256 = [\"{hash}\"]\n[tenants.team-b]\n"
        ))
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.tenant_for_token("s3cret").as_deref(), Some("team-a"));
        assert_eq!(config.tenant_for_token("s3cre"), None);
        assert_eq!(config.tenant_for_token(""), None);
        assert_eq!(config.quota_of("team-b"), Quota::default());
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let c: Config = toml::from_str("[tenants.\"A.b\"]").unwrap();
        assert!(c.validate().is_err());
        assert!(valid_tenant("team-a") && valid_tenant("7"));
        assert!(!valid_tenant("") && !valid_tenant("-a") && !valid_tenant("a.b"));
    }
}
