//! `skiff-vmm`: see the crate documentation of `skiff_vmm` for flags and exit codes.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use skiff_vmm::builder::{RunOptions, RunOutcome};
use skiff_vmm::cli::{spec_error, Cli, Plan};
use skiff_vmm::exit::EXIT_VMM_ERROR;
use skiff_vmm::restore::RestoreConfig;
use skiff_vmm::vmm_config::{RestorePlan, RunPlan};

fn run(plan: RunPlan, start: Instant) -> anyhow::Result<i32> {
    let vm = skiff_vmm::builder::build(&plan, start)?;
    finish(vm.run(RunOptions {
        api_socket: plan.api_socket,
    })?)
}

fn restore(plan: RestorePlan, start: Instant) -> anyhow::Result<i32> {
    let config = RestoreConfig::from(&plan);
    let vm = skiff_vmm::restore::restore(&config, start)?;
    finish(vm.run(RunOptions {
        api_socket: plan.api_socket,
    })?)
}

fn finish(outcome: RunOutcome) -> anyhow::Result<i32> {
    if let skiff_vmm::exit::GuestExit::Crash(why) = &outcome.exit {
        eprintln!("skiff-vmm: guest crashed: {why}");
    }
    tracing::info!("guest ended: {:?}", outcome);
    Ok(outcome.exit_code())
}

fn main() -> ExitCode {
    let start = Instant::now();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_VMM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A refused device option is bad input like a missing kernel: one line, 125.
        Err(e) => match spec_error(&e) {
            Some(bad) => {
                eprintln!("skiff-vmm: {bad}");
                return ExitCode::from(EXIT_VMM_ERROR as u8);
            }
            None => e.exit(),
        },
    };
    let result = match cli.into_plan() {
        Plan::Run(plan) => run(plan, start),
        Plan::Restore(plan) => restore(plan, start),
        Plan::VhostUserVsock(p) => {
            skiff_vmm::vhost_user::serve_vsock(p.guest_cid, &p.socket, &p.uds_path, true)
                .map(|()| 0)
        }
        Plan::VhostUserBlk(p) => {
            skiff_vmm::vhost_user::serve_block(&p.socket, p.disk, true).map(|()| 0)
        }
    };
    match result {
        Ok(code) => {
            // vCPU threads may still be inside KVM_RUN: leave without unwinding them.
            std::process::exit(code)
        }
        Err(e) => {
            eprintln!("skiff-vmm: {e:#}");
            ExitCode::from(EXIT_VMM_ERROR as u8)
        }
    }
}
