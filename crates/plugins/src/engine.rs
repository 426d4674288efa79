//! The one wasmtime Engine of a host (pooling allocator, epoch interruption) and the
//! epoch ticker thread that turns wall-clock time into epoch deadlines.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::{PluginError, Result};

/// One epoch tick. A deadline of D fires between D and D + TICK after the call starts.
pub(crate) const TICK: Duration = Duration::from_millis(2);

/// Concurrent plugin instances the pool holds; a call beyond that fails (and the
/// failure policy applies) rather than allocating without bound.
const POOL_INSTANCES: u32 = 64;
/// Wasm stack per call: deep recursion traps instead of eating the host's stack.
const MAX_WASM_STACK: usize = 512 << 10;

/// Build the engine. `max_memory_bytes` sizes a pooling slot (the largest plugin cap).
pub(crate) fn build(max_memory_bytes: usize) -> Result<Engine> {
    let page = 64 << 10;
    let slot = max_memory_bytes.div_ceil(page) * page;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 8)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 8)
        .total_stacks(POOL_INSTANCES)
        .max_memory_size(slot)
        // Rust components have a handful of core instances (main, shims, fixups).
        .max_core_instances_per_component(16)
        .max_memories_per_component(4)
        .max_tables_per_component(16);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        // A reservation no larger than the cap: growth past it fails in the pool too.
        .memory_reservation(slot as u64)
        .memory_guard_size(page as u64)
        .memory_reservation_for_growth(0)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))
}

struct TickerState {
    /// Calls in flight; the thread sleeps (no wakeups) while this is zero.
    active: usize,
    stop: bool,
}

/// Increments the engine's epoch every [`TICK`] while any call is in flight.
pub(crate) struct EpochTicker {
    shared: Arc<(Mutex<TickerState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<TickerState>) -> MutexGuard<'_, TickerState> {
    // The state is two plain fields, valid even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Result<Self> {
        let shared = Arc::new((
            Mutex::new(TickerState {
                active: 0,
                stop: false,
            }),
            Condvar::new(),
        ));
        let (thread_shared, engine) = (Arc::clone(&shared), engine.clone());
        let thread = std::thread::Builder::new()
            .name("skiff-plugin-epoch".into())
            .spawn(move || {
                let (state, wake) = &*thread_shared;
                loop {
                    {
                        let mut s = lock(state);
                        while s.active == 0 && !s.stop {
                            s = wake.wait(s).unwrap_or_else(PoisonError::into_inner);
                        }
                        if s.stop {
                            return;
                        }
                    }
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(EpochTicker {
            shared,
            thread: Some(thread),
        })
    }

    /// Mark a call in flight for as long as the guard lives.
    pub(crate) fn activate(&self) -> ActiveCall<'_> {
        let (state, wake) = &*self.shared;
        lock(state).active += 1;
        wake.notify_all();
        ActiveCall { ticker: self }
    }
}

pub(crate) struct ActiveCall<'a> {
    ticker: &'a EpochTicker,
}

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        let (state, _) = &*self.ticker.shared;
        let mut s = lock(state);
        s.active = s.active.saturating_sub(1);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        let (state, wake) = &*self.shared;
        lock(state).stop = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Epoch ticks to allow for `deadline`: rounded up, plus one for the partial tick
/// the call starts in.
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = TICK.as_micros().max(1);
    u64::try_from(deadline.as_micros().div_ceil(tick))
        .unwrap_or(u64::MAX / 2)
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(deadline_ticks(Duration::from_millis(100)), 51);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
    }
}
