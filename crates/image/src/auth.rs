//! Registry credentials from a `~/.docker/config.json`-compatible file, and
//! `WWW-Authenticate` challenge parsing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Files searched, first hit wins: `$SKIFF_AUTH_FILE`, `$REGISTRY_AUTH_FILE`,
/// `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`.
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut v = Vec::new();
    v.extend(env("SKIFF_AUTH_FILE"));
    v.extend(env("REGISTRY_AUTH_FILE"));
    v.extend(env("DOCKER_CONFIG").map(|d| d.join("config.json")));
    v.extend(env("HOME").map(|h| h.join(".docker/config.json")));
    v.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    v
}

/// Keys a registry's credentials may be stored under.
fn keys_for(registry: &str) -> Vec<String> {
    let mut hosts = vec![registry.to_owned()];
    if registry == "docker.io" {
        hosts = [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "index.docker.io/v1/",
        ]
        .map(String::from)
        .to_vec();
    }
    let mut keys = Vec::new();
    for h in hosts {
        keys.push(format!("https://{h}"));
        keys.push(format!("http://{h}"));
        keys.push(h);
    }
    keys
}

/// Credentials for `registry` from the first of `files` that has them.
pub fn lookup_in(files: &[PathBuf], registry: &str) -> Option<Credentials> {
    for path in files {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let file: AuthFile = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                continue;
            }
        };
        for k in keys_for(registry) {
            let found = file
                .auths
                .iter()
                .find(|(key, _)| key.trim_end_matches('/') == k.trim_end_matches('/'));
            if let Some((_, e)) = found {
                if let Some(c) = decode(e) {
                    return Some(c);
                }
            }
        }
    }
    None
}

fn decode(e: &AuthEntry) -> Option<Credentials> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(e.auth.as_ref()?.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(Credentials {
        username: u.to_owned(),
        password: p.to_owned(),
    })
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val.trim().to_owned());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
    }

    #[test]
    fn decodes_auth_entries() {
        let e = AuthEntry {
            auth: Some("dXNlcjpwYTpzcw==".into()),
            ..Default::default()
        };
        let c = decode(&e).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        assert!(keys_for("docker.io").contains(&"https://index.docker.io/v1/".to_string()));
    }
}
