//! Per-capsule token buckets with Firecracker's semantics: a bucket of `size`
//! tokens that refills completely in `refill_time` ms, starts full, plus a
//! `one_time_burst` spent first and never refilled. A request for more tokens
//! than `size` (over-consumption) empties the bucket and then waits for the
//! excess to refill, so the long-run rate holds whatever the chunk sizes.
//!
//! The buckets of a capsule are shared by all cores (one mutex, touched only
//! when the capsule has limits): a limit is per capsule, not per core.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::table::{BucketConfig, Limits};
use warren_runtime as runtime;

#[derive(Debug)]
struct TokenBucket {
    config: BucketConfig,
    one_time_burst: u64,
    budget: u64,
    last_update: Instant,
}

/// What one reduction decided.
#[derive(Debug, PartialEq)]
enum Reduction {
    /// Tokens taken; go on.
    Done,
    /// Tokens taken (over-consumption): go on after this wait.
    DoneThenWait(Duration),
    /// Not enough tokens: try again after this wait.
    Wait(Duration),
}

impl TokenBucket {
    fn new(config: BucketConfig, now: Instant) -> Self {
        Self {
            config,
            one_time_burst: config.one_time_burst,
            budget: config.size,
            last_update: now,
        }
    }

    /// Time to refill `tokens` tokens.
    fn refill_time_for(&self, tokens: u64) -> Duration {
        let nanos = u128::from(tokens) * u128::from(self.config.refill_time) * 1_000_000
            / u128::from(self.config.size.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn replenish(&mut self, now: Instant) {
        if self.config.refill_time == 0 {
            self.budget = self.config.size;
            return;
        }
        let elapsed = now.saturating_duration_since(self.last_update).as_nanos();
        let tokens = elapsed * u128::from(self.config.size)
            / (u128::from(self.config.refill_time) * 1_000_000);
        if tokens > 0 {
            let tokens = u64::try_from(tokens).unwrap_or(u64::MAX);
            self.budget = self.budget.saturating_add(tokens).min(self.config.size);
            // Advance by the time those tokens took, keeping the remainder.
            self.last_update += self
                .refill_time_for(tokens)
                .min(now.saturating_duration_since(self.last_update));
            if self.budget == self.config.size {
                self.last_update = now;
            }
        }
    }

    fn reduce(&mut self, mut tokens: u64, now: Instant) -> Reduction {
        if self.one_time_burst > 0 {
            let burst = self.one_time_burst.min(tokens);
            self.one_time_burst -= burst;
            tokens -= burst;
            if tokens == 0 {
                return Reduction::Done;
            }
        }
        self.replenish(now);
        if tokens <= self.budget {
            self.budget -= tokens;
            return Reduction::Done;
        }
        if tokens > self.config.size && self.budget == self.config.size {
            self.budget = 0;
            self.last_update = now;
            return Reduction::DoneThenWait(self.refill_time_for(tokens - self.config.size));
        }
        let needed = tokens.min(self.config.size) - self.budget;
        Reduction::Wait(self.refill_time_for(needed).max(Duration::from_millis(1)))
    }
}

/// The buckets built for one set of limits.
#[derive(Debug)]
struct Buckets {
    limits: Limits,
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
}

/// A capsule's buckets.
#[derive(Debug, Default)]
pub struct RateLimiter {
    state: Mutex<Option<Buckets>>,
}

/// Which bucket.
#[derive(Debug, Clone, Copy)]
pub enum Resource {
    /// Relayed bytes.
    Bandwidth,
    /// Requests and tunnel reads.
    Ops,
}

impl RateLimiter {
    /// Takes `tokens` of `resource` under `limits`, waiting on the core's timer
    /// as long as the bucket says. Buckets are rebuilt when the limits change.
    pub async fn acquire(&self, limits: &Limits, resource: Resource, tokens: u64) {
        loop {
            let reduction = {
                let mut state = match self.state.lock() {
                    Ok(state) => state,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let now = Instant::now();
                if state.as_ref().is_none_or(|b| b.limits != *limits) {
                    *state = Some(Buckets {
                        limits: *limits,
                        bandwidth: limits.bandwidth.map(|c| TokenBucket::new(c, now)),
                        ops: limits.ops.map(|c| TokenBucket::new(c, now)),
                    });
                }
                let bucket = state.as_mut().and_then(|b| match resource {
                    Resource::Bandwidth => b.bandwidth.as_mut(),
                    Resource::Ops => b.ops.as_mut(),
                });
                match bucket {
                    Some(bucket) if bucket.config.size > 0 => bucket.reduce(tokens, now),
                    _ => Reduction::Done,
                }
            };
            match reduction {
                Reduction::Done => return,
                Reduction::DoneThenWait(wait) => {
                    runtime::sleep(wait).await;
                    return;
                }
                Reduction::Wait(wait) => runtime::sleep(wait.min(Duration::from_millis(100))).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, burst: u64, refill_ms: u64) -> (TokenBucket, Instant) {
        let now = Instant::now();
        (
            TokenBucket::new(
                BucketConfig {
                    size,
                    one_time_burst: burst,
                    refill_time: refill_ms,
                },
                now,
            ),
            now,
        )
    }

    #[test]
    fn starts_full_spends_burst_first_then_refills() {
        let (mut b, t0) = bucket(1000, 500, 1000);
        assert_eq!(b.reduce(500, t0), Reduction::Done);
        assert_eq!(b.budget, 1000);
        assert_eq!(b.reduce(1000, t0), Reduction::Done);
        assert_eq!(
            b.reduce(100, t0),
            Reduction::Wait(Duration::from_millis(100))
        );
        // 250 ms later a quarter of the bucket is back.
        assert_eq!(
            b.reduce(250, t0 + Duration::from_millis(250)),
            Reduction::Done
        );
        assert_eq!(b.budget, 0);
    }

    #[test]
    fn overconsumption_empties_then_waits_for_the_excess() {
        let (mut b, t0) = bucket(1000, 0, 1000);
        assert_eq!(
            b.reduce(3000, t0),
            Reduction::DoneThenWait(Duration::from_secs(2))
        );
        assert_eq!(b.budget, 0);
        assert_eq!(b.reduce(3000, t0), Reduction::Wait(Duration::from_secs(1)));
    }
}
