//! `stats`: CPU and memory of the containers' microVMs on the host.

use std::time::Duration;

use anyhow::Result;
use skiff_engine::lifecycle;
use skiff_runtime::container::{ContainerSpec, ContainerState};

use super::*;

pub(super) fn stats(ctx: &Ctx, a: &StatsArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let pick = || -> Result<Vec<(ContainerSpec, ContainerState)>> {
        let all = c.list()?;
        if a.containers.is_empty() {
            return Ok(all
                .into_iter()
                .filter(|(_, st)| a.all || st.is_running())
                .collect());
        }
        let mut out = Vec::new();
        for n in &a.containers {
            let id = c.resolve(n)?.id;
            out.push((c.spec(&id)?, c.state(&id)?));
        }
        Ok(out)
    };
    let hz = skiff_sys::procfs::clock_ticks();
    loop {
        let list = pick()?;
        let before: Vec<u64> = list
            .iter()
            .map(|(spec, st)| lifecycle::usage(spec, st).cpu_ticks)
            .collect();
        let interval = Duration::from_millis(500);
        std::thread::sleep(interval);
        println!(
            "{:<14}{:<24}{:<10}{:<24}{:<8}",
            "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %"
        );
        for ((spec, st), b) in list.iter().zip(before) {
            let lifecycle::Usage {
                cpu_ticks: ticks,
                pss_bytes: pss,
                limit_bytes: limit,
            } = lifecycle::usage(spec, st);
            let cpu = (ticks.saturating_sub(b)) as f64 / hz as f64 / interval.as_secs_f64() * 100.0;
            let mem_pct = pss as f64 / limit as f64 * 100.0;
            println!(
                "{:<14}{:<24}{:<10}{:<24}{:<8}",
                &spec.id[..12],
                spec.name,
                format!("{cpu:.2}%"),
                format!(
                    "{} / {}",
                    skiff_image::fsutil::human_size(pss),
                    skiff_image::fsutil::human_size(limit)
                ),
                format!("{mem_pct:.2}%")
            );
        }
        if a.no_stream {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
