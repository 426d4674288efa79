//! Helpers shared by the benchmark binaries in `src/bin/`: percentiles, tables, memory.

use std::time::Duration;

/// The `p`-th percentile (0-100) of `samples` by nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut v = samples.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Proportional set size of process `pid` in KiB (0 when it is gone).
pub fn pss_kib(pid: u32) -> u64 {
    skiff_sys::procfs::pss_bytes(pid) / 1024
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Prints a table with a header row, columns padded to fit.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!("{}", line(header.iter().map(|s| (*s).to_owned()).collect()));
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-|-")
    );
    for r in rows {
        println!("{}", line(r.clone()));
    }
}

/// A table row: name, sample count, p50 and p99 in ms.
pub fn latency_row(name: &str, s: &[Duration]) -> Vec<String> {
    vec![
        name.to_owned(),
        s.len().to_string(),
        ms(percentile(s, 50.0)),
        ms(percentile(s, 99.0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&s, 95.0), Duration::from_millis(19));
        assert_eq!(percentile(&s, 100.0), Duration::from_millis(20));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
