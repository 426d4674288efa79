//! The rules of requests that run something (sandboxes, invocations, and what plugin
//! admission lets through): the labels that mark a tenant's containers, the bounds on
//! size, command, environment and names, and the process a request asks for on top of
//! its image's defaults.

use skiff_engine::run_config::{self, ImageDefaults};
use skiff_proto::ProcessSpec;

use crate::error::{printable, ApiError};

/// The label plugins read the tenant from (see plugins/examples/tenant-limits).
pub const TENANT_LABEL: &str = "tenant";
/// Marks the containers that are sandboxes of this API.
pub const SANDBOX_LABEL: &str = "io.skiff.sandbox";
/// Output kept per stream by non-streaming calls.
pub const OUTPUT_CAP: usize = 1 << 20;

/// A fresh name such as `sb-0123456789ab`: the prefix and 6 random bytes in hex (all
/// zeros if the kernel's random source cannot be read).
pub fn generated_name(prefix: &str) -> String {
    let hex = skiff_sys::random::hex(6).unwrap_or_else(|_| "0".repeat(12));
    format!("{prefix}-{hex}")
}

/// A sandbox name a client chose (stored as `<tenant>.<name>`).
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    // Docker's rule for names, as for containers and networks.
    if skiff_runtime::names::is_valid_name(name, 64) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name: 1-64 of [a-zA-Z0-9_.-], starting with a letter or digit",
        ))
    }
}

/// Memory and vCPUs of a request, defaulted and bounded.
pub fn size(memory_mib: Option<u32>, vcpus: Option<u32>) -> Result<(u32, u32), ApiError> {
    let m = memory_mib.unwrap_or(256);
    let c = vcpus.unwrap_or(1);
    if !(64..=65_536).contains(&m) {
        return Err(ApiError::invalid("memory_mib must be between 64 and 65536"));
    }
    if !(1..=64).contains(&c) {
        return Err(ApiError::invalid("vcpus must be between 1 and 64"));
    }
    Ok((m, c))
}

/// Command, environment and working directory a client sent: bounded, `KEY=VALUE`
/// only (a bare `KEY` would copy the daemon's own environment), no NUL bytes.
pub fn check_process_input(
    cmd: &[String],
    env: &[String],
    workdir: Option<&str>,
) -> Result<(), ApiError> {
    if cmd.len() > 1024 || env.len() > 1024 {
        return Err(ApiError::invalid("at most 1024 cmd and 1024 env entries"));
    }
    if cmd.iter().chain(env).any(|s| s.contains('\0')) || workdir.is_some_and(|w| w.contains('\0'))
    {
        return Err(ApiError::invalid(
            "cmd, env and workdir must not contain NUL bytes",
        ));
    }
    for e in env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "env entry {:?} is not KEY=VALUE",
                    printable(e)
                )))
            }
        }
    }
    if let Some(w) = workdir {
        if !w.starts_with('/') {
            return Err(ApiError::invalid("workdir must be an absolute path"));
        }
    }
    Ok(())
}

/// The process a sandbox or invocation runs: the image's Entrypoint/Cmd/Env/WorkingDir
/// with the request's overrides.
pub fn process_for(
    defaults: &ImageDefaults,
    cmd: &[String],
    env: &[String],
    workdir: Option<&str>,
    hostname: &str,
) -> Result<ProcessSpec, ApiError> {
    check_process_input(cmd, env, workdir)?;
    let (entrypoint, cmd) = run_config::entrypoint_and_cmd(defaults, None, cmd)
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    let mut p = ProcessSpec::new([entrypoint, cmd].concat());
    p.env = run_config::process_env(defaults, hostname, env, false)
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    p.cwd = run_config::working_dir(defaults, workdir)
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    let (user, user_name) = run_config::parse_user(&defaults.user)
        .map_err(|e| ApiError::invalid(format!("image user: {e:#}")))?;
    p.user = user;
    p.user_name = user_name;
    Ok(p)
}
