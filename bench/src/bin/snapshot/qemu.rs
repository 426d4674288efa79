//! `snapshot qemu [RUNS]`: QEMU-backend snapshot restore (#9) against a cold boot, with
//! the busybox layer, 256 MiB and 1 vCPU, on the runtime's WarmVm (no daemon, no HTTP):
//!
//! - cold boot to agent ready, agent on vsock (what warm pools and cold invokes do) and
//!   on the serial port (what snapshot templates boot with);
//! - saving the snapshot (pause + device state; RAM is already in its file);
//! - restore to agent ready (QEMU start, state load, agent hello);
//! - an invocation of `true` from restore: restore + reseed + CreateContainer + run;
//! - host memory (PSS) of a restored VM's QEMU against a cold-booted one's.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_bench::{latency_row as row, percentile, print_table, pss_kib};
use skiff_runtime::vm::hypervisor;
use skiff_runtime::{HypervisorKind, Snapshot, WarmSpec, WarmVm};

fn true_process() -> skiff_proto::ProcessSpec {
    let mut p = skiff_proto::ProcessSpec::new(vec!["true".into()]);
    p.env = vec![format!("PATH={}", skiff_proto::DEFAULT_PATH)];
    p
}

/// Runs `true`; (CreateContainer, reseed included where there is one; the process).
fn run_true(vm: &mut WarmVm) -> Result<(Duration, Duration)> {
    let out = vm.run("bench", &true_process(), 1 << 16, Duration::from_secs(60))?;
    if out.status.map(|s| s.code()) != Some(0) {
        bail!("true failed: {:?}", out.status);
    }
    Ok((out.create_time, out.process_time))
}

pub fn main(runs: usize) -> Result<()> {
    let layer = skiff_tests::busybox_layer().map_err(anyhow::Error::msg)?;
    let selection = hypervisor::select(Some(HypervisorKind::Qemu))?;
    let spec = WarmSpec {
        artifacts: skiff_runtime::GuestArtifacts::locate(None, None)?,
        selection: selection.clone(),
        layers: vec![layer],
        memory_mib: 256,
        vcpus: 1,
        writable_disk_bytes: None,
        scratch_parent: None,
        boot_timeout: Duration::from_secs(300),
    };
    let tmp = tempfile::tempdir()?;
    let (mut cold, mut cold_pss) = (Vec::new(), Vec::new());
    let (mut serial_boot, mut save) = (Vec::new(), Vec::new());
    let (mut restore, mut restore_pss, mut invoke, mut invoke_cold) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut create_cold, mut process_cold, mut create_rest, mut process_rest) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let t0 = Instant::now();
        let mut vm = WarmVm::boot(&spec).context("cold boot")?;
        cold.push(t0.elapsed());
        cold_pss.push(pss_kib(vm.pid()));
        let (c, p) = run_true(&mut vm)?;
        create_cold.push(c);
        process_cold.push(p);
        invoke_cold.push(t0.elapsed());
        drop(vm);

        let dir = tmp.path().join(format!("snap{i}"));
        let (snap, t) = Snapshot::create(&spec, &dir).context("snapshot")?;
        serial_boot.push(t.boot);
        save.push(t.save);
        // Two restores per snapshot: the second finds the RAM file in the page cache,
        // as every restore after the first does in a daemon.
        for _ in 0..2 {
            let t0 = Instant::now();
            let mut vm = snap.restore(&selection, None, Duration::from_secs(300))?;
            restore.push(t0.elapsed());
            restore_pss.push(pss_kib(vm.pid()));
            let (c, p) = run_true(&mut vm)?;
            create_rest.push(c);
            process_rest.push(p);
            invoke.push(t0.elapsed());
        }
        std::fs::remove_dir_all(&dir)?;
    }
    let kib = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) / 1024
    };
    println!(
        "## QEMU (TCG) snapshot restore vs cold boot: busybox, 256 MiB, 1 vCPU ({runs} cold boots, {} restores)\n",
        restore.len()
    );
    let ratio = percentile(&cold, 50.0).as_secs_f64() / percentile(&restore, 50.0).as_secs_f64();
    print_table(
        &["", "n", "p50 ms", "p99 ms"],
        &[
            row("cold boot to agent ready (vsock)", &cold),
            row("cold boot to agent waiting (serial port)", &serial_boot),
            row("save snapshot (pause + device state)", &save),
            row("restore to agent ready", &restore),
            vec![
                "cold / restore (p50)".into(),
                String::new(),
                format!("{ratio:.1}x"),
                String::new(),
            ],
            row("invoke `true`, cold boot (boot + run)", &invoke_cold),
            row(
                "invoke `true`, from snapshot (restore + reseed + run)",
                &invoke,
            ),
            row("  CreateContainer after cold boot", &create_cold),
            row("  Reseed + CreateContainer after restore", &create_rest),
            row("  `true` start to exit after cold boot", &process_cold),
            row("  `true` start to exit after restore", &process_rest),
        ],
    );
    println!(
        "\nHost memory (PSS of the QEMU process at agent ready, median): cold {} MiB, restored {} MiB",
        kib(&cold_pss),
        kib(&restore_pss)
    );
    Ok(())
}
