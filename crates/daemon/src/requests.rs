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
/// Linux's MAX_ARG_STRLEN: the longest single argument or environment string.
const MAX_ARG_BYTES: usize = 128 << 10;
/// Well under what the guest's 8 MiB stack allows for arguments and environment.
const MAX_ARGS_TOTAL: usize = 1 << 20;

pub fn check_process_input(
    cmd: &[String],
    env: &[String],
    workdir: Option<&str>,
) -> Result<(), ApiError> {
    if cmd.len() > 1024 || env.len() > 1024 {
        return Err(ApiError::invalid("at most 1024 cmd and 1024 env entries"));
    }
    // The guest kernel refuses (E2BIG) one string of MAX_ARG_STRLEN or more, and a
    // command line and environment larger than a fraction of its stack: say so before
    // a VM boots, not with a bare exit code 126 after.
    if cmd.iter().chain(env).any(|s| s.len() >= MAX_ARG_BYTES) {
        return Err(ApiError::invalid(
            "each cmd and env entry must be under 128 KiB (the kernel's limit on one argument)",
        ));
    }
    let total: usize = cmd.iter().chain(env).map(|s| s.len() + 1).sum();
    if total > MAX_ARGS_TOTAL {
        return Err(ApiError::invalid(
            "cmd and env together must be at most 1 MiB",
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_commands_are_refused_before_a_vm_boots() {
        let big = "x".repeat(MAX_ARG_BYTES);
        assert!(check_process_input(std::slice::from_ref(&big), &[], None).is_err());
        assert!(check_process_input(&[], &[format!("K={big}")], None).is_err());
        let ok = "y".repeat(100 << 10);
        assert!(check_process_input(std::slice::from_ref(&ok), &[], None).is_ok());
        let many: Vec<String> = (0..12).map(|i| format!("K{i}={ok}")).collect();
        assert!(check_process_input(&[], &many, None).is_err());
        assert!(check_process_input(&["true".into()], &["A=b".into()], Some("/")).is_ok());
    }
}
