//! `update`: CPU and memory limits of a running container (cgroup and balloon).

use super::*;

/// `update`: the CPU bandwidth of the microVM's host cgroup and, through the balloon,
/// the memory its guest may use (up to what it booted with). Everything is checked
/// before anything changes, so a refused update leaves the container as it was.
pub(super) fn update(store: &Store, id: &str, a: &UpdateArgs) -> Result<()> {
    let lock = store.lock(id)?;
    let mut rec = lock.load()?;
    if !matches!(
        rec.status(),
        Status::Created | Status::Running | Status::Paused
    ) {
        bail!("container not running");
    }
    let mut wanted = match &a.resources {
        Some(path) => {
            let mut bytes = Vec::new();
            if path == std::path::Path::new("-") {
                std::io::stdin().take(1 << 20).read_to_end(&mut bytes)?;
            } else {
                bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            }
            serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&bytes)
                .context("invalid resources JSON")?
        }
        None => oci_spec::runtime::LinuxResources::default(),
    };
    let mut cpu = wanted.cpu().clone().unwrap_or_default();
    if let Some(q) = a.cpu_quota {
        cpu.set_quota(Some(q));
    }
    if let Some(p) = a.cpu_period {
        cpu.set_period(Some(p));
    }
    wanted.set_cpu(Some(cpu));
    let mut memory_limit = wanted.memory().as_ref().and_then(|m| m.limit());
    if let Some(m) = &a.memory {
        memory_limit = Some(parse_bytes(m)?);
    }

    // Plan (and refuse) before changing anything.
    let cpu = wanted.cpu().as_ref();
    // Zero means unchanged, as in runc (Docker sends zeros for what it does not update).
    let (quota, period) = (
        cpu.and_then(|c| c.quota()).filter(|q| *q != 0),
        cpu.and_then(|c| c.period()).filter(|p| *p != 0),
    );
    let cpu_plan = if quota.is_some() || period.is_some() {
        let dir = rec
            .cgroup
            .clone()
            .ok_or_else(|| anyhow!("cannot set the CPU quota: container {id} has no cgroup"))?;
        let cg = CpuCgroup { dir };
        let old = cg.cpu_max()?;
        let new = CpuMax::from_oci(quota, period, old)?;
        Some((cg, old, new))
    } else {
        None
    };
    let memory_plan = match memory_limit {
        None | Some(0) => None,
        Some(limit) => {
            let max = rec.memory_max_mib.filter(|_| rec.balloon).ok_or_else(|| {
                anyhow!(
                    "cannot change the memory of container {id}: its microVM has no balloon device"
                )
            })?;
            let mib = if limit < 0 {
                max
            } else {
                u32::try_from(limit.unsigned_abs() >> 20).unwrap_or(u32::MAX)
            };
            if mib > max {
                bail!("cannot set memory limit to {limit} bytes: the microVM booted with {max} MiB and cannot grow beyond it (boot it larger, e.g. with the {ANNOTATION_MEMORY_MAX} annotation)");
            }
            let min = skiff_runtime::oci::bundle::min_memory_mib();
            if mib < min {
                bail!(
                    "cannot set memory limit to {limit} bytes: a microVM needs at least {min} MiB"
                );
            }
            Some(mib)
        }
    };

    if let Some((cg, _, new)) = &cpu_plan {
        cg.set_cpu_max(*new)?;
    }
    if let Some(mib) = memory_plan {
        if let Err(e) = vmctl::set_memory(&rec, mib) {
            if let Some((cg, old, _)) = &cpu_plan {
                let _ = cg.set_cpu_max(*old);
            }
            return Err(e.into());
        }
        rec.memory_mib = Some(mib);
        lock.save(&rec)?;
    }
    Ok(())
}

/// A size in bytes: a number with an optional k, m, g suffix (binary units, as runc).
pub(super) fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 10),
        Some((i, 'm')) => (&t[..i], 20),
        Some((i, 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    num.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| anyhow!("invalid memory size {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("256m").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64kb").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        for bad in ["", "m", "-5", "12x", "99999999999g"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
