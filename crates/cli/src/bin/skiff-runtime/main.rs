//! `skiff-runtime`: a runc-compatible command line over skiff's microVMs, so that
//! containerd, Podman and friends run containers in VMs without knowing it.
//!
//! Process model: `create` spawns a supervisor (this binary, `_supervise`) that boots
//! the VM, prepares the container and waits for `start`; its pid is the container's pid
//! for callers, it relays the container's stdio to the fds `create` was given and exits
//! with the container's status. Each `exec` gets its own proxy process (`_exec-proxy`).

mod admission;
mod cli;
mod commands;
mod console;
mod exec;
mod logging;
mod ps;
mod relay;
mod supervise;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let log = logging::Log::new(cli.log.clone(), cli.log_format);
    let code = match commands::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            log.error(&format!("{e:#}"));
            1
        }
    };
    std::process::exit(code);
}
