//! Firecracker's I/O rate limiter: two independent token buckets, one for
//! bytes (`bandwidth`) and one for operations (`ops`).
//!
//! A bucket holds `size` tokens and refills `size` tokens every
//! `refill_time` milliseconds (rate = size / refill_time); it starts full.
//! `one_time_burst` is an extra budget spent before the bucket itself and
//! never refilled. In a live update (`PATCH`), an absent bucket keeps the
//! current one and [`TokenBucket::REMOVE`] (size 0) removes the limit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// One token bucket (`TokenBucket` in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Capacity, in tokens (bytes or operations).
    pub size: u64,
    /// Extra tokens available once, before the bucket is drawn from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill `size` tokens from empty.
    pub refill_time: u64,
}

impl TokenBucket {
    /// In a `PATCH`, removes the limit this bucket stands for. (Firecracker
    /// treats a bucket of size 0 or refill time 0 as "no limit".)
    pub const REMOVE: TokenBucket = TokenBucket {
        size: 0,
        one_time_burst: None,
        refill_time: 0,
    };

    /// A bucket allowing `per_second` tokens a second on average, with
    /// `size = per_second` refilled every second, and an optional one-time burst.
    pub fn per_second(per_second: u64, one_time_burst: Option<u64>) -> Self {
        Self {
            size: per_second,
            one_time_burst,
            refill_time: 1000,
        }
    }

    /// Whether this bucket actually limits anything.
    pub fn is_limit(&self) -> bool {
        self.size > 0 && self.refill_time > 0
    }

    /// Sustained rate in tokens per second (0 when it is not a limit).
    pub fn rate_per_second(&self) -> f64 {
        if self.is_limit() {
            self.size as f64 * 1000.0 / self.refill_time as f64
        } else {
            0.0
        }
    }

    /// The most tokens a consumer can take within `elapsed` starting from a
    /// fresh bucket: burst + full bucket + what refills meanwhile.
    /// `None` when the bucket does not limit.
    pub fn max_tokens_within(&self, elapsed: Duration) -> Option<u64> {
        if !self.is_limit() {
            return None;
        }
        let refilled = (self.size as u128 * elapsed.as_millis()) / self.refill_time as u128;
        let total = self.one_time_burst.unwrap_or(0) as u128 + self.size as u128 + refilled;
        Some(u64::try_from(total).unwrap_or(u64::MAX))
    }

    /// A bucket with a size but no refill time would silently mean
    /// "unlimited" to Firecracker; refuse it. `REMOVE` is fine.
    pub(crate) fn validate(&self, field: &'static str) -> Result<(), InvalidInput> {
        if self.size > 0 && self.refill_time == 0 {
            return Err(InvalidInput::new(
                field,
                "refill_time is 0, which Firecracker reads as \"no limit\"; use TokenBucket::REMOVE to remove a limit",
            ));
        }
        // Firecracker stores these as i64 (`format: int64`).
        let too_big = |v: u64| v > i64::MAX as u64;
        if too_big(self.size)
            || too_big(self.refill_time)
            || self.one_time_burst.is_some_and(too_big)
        {
            return Err(InvalidInput::new(field, "value exceeds int64"));
        }
        Ok(())
    }
}

/// A rate limiter (`RateLimiter` in the spec). Both buckets are optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiter {
    /// Token bucket with bytes as tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Token bucket with operations as tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// Warren's default egress limit for a capsule: 200 MB/s sustained
    /// (refilled every second) with a 100 MB one-time burst.
    pub const DEFAULT_TX: RateLimiter = RateLimiter {
        bandwidth: Some(TokenBucket {
            size: 200_000_000,
            one_time_burst: Some(100_000_000),
            refill_time: 1000,
        }),
        ops: None,
    };

    /// A bandwidth-only limiter.
    pub fn bandwidth(bucket: TokenBucket) -> Self {
        Self {
            bandwidth: Some(bucket),
            ops: None,
        }
    }

    /// For a live update: remove both limits.
    pub fn remove_all() -> Self {
        Self {
            bandwidth: Some(TokenBucket::REMOVE),
            ops: Some(TokenBucket::REMOVE),
        }
    }

    pub(crate) fn validate(&self, field: &'static str) -> Result<(), InvalidInput> {
        if let Some(b) = &self.bandwidth {
            b.validate(field)?;
        }
        if let Some(o) = &self.ops {
            o.validate(field)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_budget_follow_firecracker_semantics() {
        let b = TokenBucket {
            size: 1_000_000,
            one_time_burst: Some(500_000),
            refill_time: 500,
        };
        assert_eq!(b.rate_per_second(), 2_000_000.0);
        // burst + full bucket + 2 s of refill at 2 MB/s
        assert_eq!(b.max_tokens_within(Duration::from_secs(2)), Some(5_500_000));
        assert_eq!(
            TokenBucket::REMOVE.max_tokens_within(Duration::from_secs(1)),
            None
        );
        assert!(!TokenBucket::REMOVE.is_limit());
    }

    #[test]
    fn a_bucket_without_refill_time_is_refused() {
        let b = TokenBucket {
            size: 10,
            one_time_burst: None,
            refill_time: 0,
        };
        assert!(b.validate("x").is_err());
        assert!(TokenBucket::REMOVE.validate("x").is_ok());
        assert!(RateLimiter::DEFAULT_TX.validate("x").is_ok());
    }

    #[test]
    fn optional_fields_are_omitted() {
        let json = serde_json::to_string(&RateLimiter::bandwidth(TokenBucket::per_second(5, None)))
            .expect("serialise");
        assert_eq!(json, r#"{"bandwidth":{"size":5,"refill_time":1000}}"#);
    }
}
