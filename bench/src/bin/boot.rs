//! Boot + `true` + shutdown of one microVM, phase by phase, over N runs (default 20).
//!
//!   cargo run --release -p skiff-bench --bin boot [-- RUNS]
//!
//! Phases: host preparation (scratch dir, sockets, device backend) up to the VMM's
//! spawn; VMM spawn to the agent's hello; the command (create the container's rootfs,
//! start `true`, its exit); teardown (exit to the VMM process gone). Also the guest's own
//! uptime at agent ready and the initramfs size.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_bench::{ms, percentile, print_table};
use skiff_proto::{ContainerConfig, ProcessSpec};
use skiff_runtime::vm::hypervisor;
use skiff_runtime::{Disk, Event, GuestArtifacts, MicroVm, StartOutcome, VmConfig, VmSize};

#[derive(Default)]
struct Sample {
    prepare: Duration,
    to_ready: Duration,
    guest_ready: Duration,
    command: Duration,
    teardown: Duration,
    total: Duration,
}

fn one_run(config: &VmConfig) -> Result<Sample> {
    let t0 = Instant::now();
    let (mut vm, mut agent) = MicroVm::boot(config)?;
    let t_ready = Instant::now();
    agent.create_container(&ContainerConfig {
        id: "bench".into(),
        layers: vec!["layer0".into()],
        ..ContainerConfig::default()
    })?;
    let StartOutcome::Running { .. } =
        agent.start(1, true, &ProcessSpec::new(vec!["true".into()]))?
    else {
        bail!("`true` did not start");
    };
    loop {
        match agent.next_event()? {
            Some(Event::Exited { status, .. }) if status.code() == 0 => break,
            Some(Event::Exited { status, .. }) => bail!("`true` exited with {status:?}"),
            Some(_) => {}
            None => bail!("agent hung up"),
        }
    }
    let t_exit = Instant::now();
    while let Some(e) = agent.next_event()? {
        if e == Event::PoweringOff {
            break;
        }
    }
    agent.sender().hang_up();
    if vm.wait(Duration::from_secs(30))?.is_none() {
        bail!("the VM did not power off");
    }
    let t_end = Instant::now();
    Ok(Sample {
        prepare: vm.timings.prepare,
        to_ready: vm.timings.launch_to_ready,
        guest_ready: vm.timings.guest_uptime_at_ready.unwrap_or_default(),
        command: t_exit - t_ready,
        teardown: t_end - t_exit,
        total: t_end - t0,
    })
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("RUNS must be a number")?
        .unwrap_or(20);
    let artifacts = GuestArtifacts::locate(None, None)?;
    let selection = hypervisor::select(None)?;
    let layer = skiff_tests::busybox_layer().map_err(anyhow::Error::msg)?;
    let disks = vec![Disk {
        path: layer,
        readonly: true,
        serial: "layer0".into(),
    }];
    let size = VmSize {
        memory_mib: 256,
        vcpus: 1,
    };
    let config = VmConfig::sized(artifacts.clone(), selection.clone(), size, disks);

    println!(
        "# skiff microVM boot: {runs} runs, backend {} ({:?}), 1 vCPU, 256 MiB",
        selection.kind, selection.accel
    );
    one_run(&config).context("warm-up run")?;
    let samples: Vec<Sample> = (0..runs).map(|_| one_run(&config)).collect::<Result<_>>()?;

    let col = |f: fn(&Sample) -> Duration| samples.iter().map(f).collect::<Vec<_>>();
    let rows: Vec<(&str, Vec<Duration>, &str)> = vec![
        ("host preparation", col(|s| s.prepare), ""),
        ("VMM start -> agent ready (wall)", col(|s| s.to_ready), ""),
        (
            "agent ready, guest uptime",
            col(|s| s.guest_ready),
            "<= 1500",
        ),
        ("command (rootfs + `true`)", col(|s| s.command), ""),
        ("teardown (exit -> VMM gone)", col(|s| s.teardown), ""),
        ("end to end", col(|s| s.total), "<= 3000"),
    ];
    let table: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(name, v, target)| {
            vec![
                name.to_owned(),
                ms(percentile(&v, 50.0)),
                ms(percentile(&v, 95.0)),
                target.to_owned(),
            ]
        })
        .collect();
    print_table(&["phase", "p50 ms", "p95 ms", "target p50 ms"], &table);
    let initramfs = std::fs::metadata(&artifacts.initramfs)?.len();
    println!();
    print_table(
        &["artifact", "size", "target"],
        &[
            vec![
                "initramfs".into(),
                format!("{:.2} MiB", initramfs as f64 / 1048576.0),
                "< 2 MiB".into(),
            ],
            vec![
                "kernel".into(),
                format!(
                    "{:.2} MiB",
                    std::fs::metadata(&artifacts.kernel)?.len() as f64 / 1048576.0
                ),
                String::new(),
            ],
        ],
    );
    Ok(())
}
