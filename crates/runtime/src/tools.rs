//! Finding host programs (QEMU, the vsock device backend) in a predictable order, and
//! skiff's cache directory where built kernels and tools live.

use std::path::{Path, PathBuf};

/// skiff's cache (built kernels, tools): `$XDG_CACHE_HOME/skiff` or `~/.cache/skiff`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SKIFF_CACHE") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("skiff")
}

/// Looks for `name` in `$env_var` (a full path), then beside the running executable,
/// then in skiff's tool cache, then on PATH. Returns the path or the places looked in.
pub fn find_program(name: &str, env_var: &str) -> Result<PathBuf, String> {
    let mut looked = Vec::new();
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        looked.push(format!("${env_var}={}", p.display()));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        // A cargo test binary lives in target/<profile>/deps; its siblings are one up.
        if dir.ends_with("deps") {
            if let Some(profile_dir) = dir.parent() {
                dirs.push(profile_dir.to_path_buf());
            }
        }
        dirs.push(dir);
    }
    dirs.push(cache_dir().join("tools/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for dir in &dirs {
        let p = dir.join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    looked.push(format!(
        "beside skiff, {}, $PATH",
        cache_dir().join("tools/bin").display()
    ));
    Err(looked.join(", "))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
