//! What every request handler shares: the store, the container records, the
//! configuration and the daemon's own bookkeeping (events, metrics, limits, pools).

use std::path::PathBuf;

use skiff_image::Store;
use skiff_runtime::container::Containers;

use crate::config::Config;
use crate::events::Bus;
use crate::metrics::Metrics;
use crate::pool::Pools;
use crate::snapshots::Snapshots;
use crate::tenants::{RateLimiter, Reservations};

pub struct Daemon {
    pub root: PathBuf,
    pub containers: Containers,
    pub store: Store,
    pub config: Config,
    /// skiffd's own executable, whose hidden `supervise` command runs each sandbox.
    pub exe: PathBuf,
    pub log_level: String,
    pub events: Bus,
    pub metrics: Metrics,
    pub rate: RateLimiter,
    pub reservations: Reservations,
    pub pools: Pools,
    pub snapshots: Snapshots,
}
