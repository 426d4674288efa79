//! Per-tenant limits: the request-rate token bucket, and admission of new sandboxes
//! and warm VMs against the quota (concurrent sandboxes, total memory, total vCPUs).
//!
//! Usage is what the store says (the tenant's sandboxes that have not exited) plus what
//! only this process holds (warm-pool VMs and invocations in flight). One lock
//! serialises every admission so two requests cannot both take the last slot.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Quota;
use crate::error::ApiError;

/// Resources one sandbox or warm VM holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub sandboxes: u32,
    pub memory_mib: u64,
    pub vcpus: u32,
}

impl Usage {
    pub fn one(memory_mib: u32, vcpus: u32) -> Self {
        Self {
            sandboxes: 1,
            memory_mib: u64::from(memory_mib),
            vcpus,
        }
    }

    pub fn add(&mut self, other: Usage) {
        self.sandboxes = self.sandboxes.saturating_add(other.sandboxes);
        self.memory_mib = self.memory_mib.saturating_add(other.memory_mib);
        self.vcpus = self.vcpus.saturating_add(other.vcpus);
    }

    fn sub(&mut self, other: Usage) {
        self.sandboxes = self.sandboxes.saturating_sub(other.sandboxes);
        self.memory_mib = self.memory_mib.saturating_sub(other.memory_mib);
        self.vcpus = self.vcpus.saturating_sub(other.vcpus);
    }
}

/// Why `want` does not fit next to `used` under `quota`, if it does not.
pub fn check(quota: &Quota, used: Usage, want: Usage) -> Result<(), ApiError> {
    let mut after = used;
    after.add(want);
    if after.sandboxes > quota.max_sandboxes {
        return Err(ApiError::quota(format!(
            "the tenant's quota allows {} concurrent sandboxes (warm-pool VMs included); {} in use",
            quota.max_sandboxes, used.sandboxes
        )));
    }
    if after.memory_mib > quota.max_memory_mib {
        return Err(ApiError::quota(format!(
            "the tenant's quota allows {} MiB of memory in total; {} MiB in use, {} MiB asked for",
            quota.max_memory_mib, used.memory_mib, want.memory_mib
        )));
    }
    if after.vcpus > quota.max_vcpus {
        return Err(ApiError::quota(format!(
            "the tenant's quota allows {} vCPUs in total; {} in use, {} asked for",
            quota.max_vcpus, used.vcpus, want.vcpus
        )));
    }
    Ok(())
}

/// What this process holds per tenant outside the store (warm VMs, invocations).
#[derive(Default)]
pub struct Reservations {
    held: Mutex<HashMap<String, Usage>>,
    /// Held while an admission decision and the record it admits are made.
    pub admission: Mutex<()>,
}

impl Reservations {
    pub fn held(&self, tenant: &str) -> Usage {
        self.lock().get(tenant).copied().unwrap_or_default()
    }

    pub fn reserve(&self, tenant: &str, u: Usage) {
        self.lock().entry(tenant.to_owned()).or_default().add(u);
    }

    pub fn release(&self, tenant: &str, u: Usage) {
        if let Some(h) = self.lock().get_mut(tenant) {
            h.sub(u);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Usage>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A token bucket per tenant: `burst` requests at once, refilled at the quota's rate.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes one token; `Err(seconds to wait)` when the bucket is empty.
    pub fn take(&self, tenant: &str, quota: &Quota) -> Result<(), u64> {
        let rate = quota.requests_per_second.max(0.0);
        let burst = f64::from(quota.burst.max(1));
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(tenant.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if rate > 0.0 {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        } else {
            Err(60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_count_sandboxes_memory_and_vcpus() {
        let q = Quota {
            max_sandboxes: 2,
            max_memory_mib: 512,
            max_vcpus: 2,
            ..Quota::default()
        };
        let one = Usage::one(256, 1);
        assert!(check(&q, Usage::default(), one).is_ok());
        assert!(check(&q, one, one).is_ok());
        let mut two = one;
        two.add(one);
        assert_eq!(check(&q, two, one).unwrap_err().code, "quota_exceeded");
        assert!(check(&q, Usage::default(), Usage::one(1024, 1)).is_err());
        assert!(check(&q, Usage::default(), Usage::one(64, 3)).is_err());
    }

    #[test]
    fn the_bucket_empties_and_says_how_long_to_wait() {
        let q = Quota {
            requests_per_second: 1.0,
            burst: 2,
            ..Quota::default()
        };
        let r = RateLimiter::default();
        assert!(r.take("a", &q).is_ok());
        assert!(r.take("a", &q).is_ok());
        assert_eq!(r.take("a", &q), Err(1));
        assert!(r.take("b", &q).is_ok(), "tenants have their own buckets");
    }

    #[test]
    fn reservations_add_up_and_release() {
        let r = Reservations::default();
        r.reserve("a", Usage::one(256, 1));
        r.reserve("a", Usage::one(128, 2));
        assert_eq!(
            r.held("a"),
            Usage {
                sandboxes: 2,
                memory_mib: 384,
                vcpus: 3
            }
        );
        r.release("a", Usage::one(256, 1));
        assert_eq!(r.held("a"), Usage::one(128, 2));
        assert_eq!(r.held("b"), Usage::default());
    }
}
