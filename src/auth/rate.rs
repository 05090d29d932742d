//! Token-bucket rate limits (governor): one bucket per API key, sized by the key's own
//! limit or the configured default, and one per client address for requests without a key.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Requests per second and burst; `per_second = 0` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimitConfig {
    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(self.per_second)).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

/// A refusal: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// The bucket of one key.
#[derive(Debug)]
pub struct KeyBucket {
    limiter: Option<DefaultDirectRateLimiter>,
    pub config: RateLimitConfig,
}

impl KeyBucket {
    #[must_use]
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            limiter: config.quota().map(RateLimiter::direct),
            config,
        }
    }

    /// # Errors
    /// The bucket is empty.
    pub fn check(&self) -> Result<(), RateLimited> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter.check().map_err(|not_until| RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
        }
    }
}

/// Buckets per client address.
#[derive(Debug)]
pub struct AddressBuckets {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl AddressBuckets {
    #[must_use]
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            limiter: config.quota().map(RateLimiter::keyed),
        }
    }

    /// # Errors
    /// The address's bucket is empty.
    pub fn check(&self, addr: IpAddr) -> Result<(), RateLimited> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter.check_key(&addr).map_err(|not_until| RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
        }
    }

    /// Forgets addresses whose buckets are full again (bounded memory).
    pub fn shrink(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_burst_and_zero_disables() {
        let bucket = KeyBucket::new(RateLimitConfig {
            per_second: 1,
            burst: 2,
        });
        assert!(bucket.check().is_ok());
        assert!(bucket.check().is_ok());
        let refused = bucket.check().unwrap_err();
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(1)
        );
        let off = KeyBucket::new(RateLimitConfig {
            per_second: 0,
            burst: 0,
        });
        for _ in 0..1000 {
            assert!(off.check().is_ok());
        }
        let addrs = AddressBuckets::new(RateLimitConfig {
            per_second: 1,
            burst: 1,
        });
        assert!(addrs.check([1, 2, 3, 4].into()).is_ok());
        assert!(addrs.check([1, 2, 3, 4].into()).is_err());
        assert!(addrs.check([1, 2, 3, 5].into()).is_ok());
    }
}
