//! Firecracker-style boot timer: the guest writes to a magic MMIO address once it has
//! booted (or, for test guests, as its very first instruction) and the VMM records how
//! long that took since the VMM process started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::info;

/// Records the first guest write to the boot-timer register.
#[derive(Debug)]
pub struct BootTimer {
    start: Instant,
    report: bool,
    fired: AtomicBool,
}

/// CLOCK_MONOTONIC in nanoseconds, comparable across processes on this host.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

impl BootTimer {
    /// A timer counting from `start`; `report` prints the result on stderr.
    pub fn new(start: Instant, report: bool) -> Self {
        Self {
            start,
            report,
            fired: AtomicBool::new(false),
        }
    }

    /// Handles a guest write: only the first one counts.
    pub fn signal(&self) {
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let now = monotonic_ns();
        let us = self.start.elapsed().as_micros();
        info!("boot timer: guest signalled {us} us after VMM start");
        if self.report {
            // A fixed format that benchmarks parse.
            eprintln!("skiff-vmm: boot-timer {us} us since VMM start, monotonic {now} ns");
        }
    }

    /// Logs a guest phase marker with a CLOCK_MONOTONIC timestamp (benchmarks).
    pub fn marker(&self, value: u8) {
        if self.report {
            eprintln!("skiff-vmm: marker {value} monotonic {} ns", monotonic_ns());
        }
    }
}
