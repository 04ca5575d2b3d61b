//! Request-rate limits per API key on the API passthrough: each key gets a
//! token bucket (`per_second` sustained, `burst` at once, over the whole
//! edge). Buckets live on each core (no lock): a core holds `1/cores` of the
//! rate. Keys are kept as hashes, never as secrets; the table is bounded
//! (buckets that refilled are dropped first), so a flood of made-up keys
//! cannot grow it. Requests without a key (sign-in, the console's files)
//! pass: the control plane limits those itself.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use warren_relay::head::Head;
use warren_relay::{ErrorCode, ProxyError};

/// A per-key request rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiRateConfig {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests at once after a quiet period.
    pub burst: f64,
}

impl Default for ApiRateConfig {
    fn default() -> Self {
        Self {
            per_second: 100.0,
            burst: 200.0,
        }
    }
}

/// Most keys tracked per core.
const MAX_KEYS: usize = 16_384;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One core's buckets.
pub(crate) struct ApiRate {
    rate: Option<ApiRateConfig>,
    buckets: HashMap<u64, Bucket>,
    hasher: std::collections::hash_map::RandomState,
}

/// The key a request is limited under: `X-API-Key`, else a bearer token.
fn key_of(head: &Head) -> Option<&[u8]> {
    head.header("x-api-key").or_else(|| {
        let auth = head.header("authorization")?;
        (auth.len() > 7 && auth[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &auth[7..])
    })
}

impl ApiRate {
    /// `rate` over the whole edge, shared by `cores` cores.
    pub(crate) fn new(rate: Option<ApiRateConfig>, cores: usize) -> Self {
        let cores = cores.max(1) as f64;
        Self {
            rate: rate.map(|r| ApiRateConfig {
                per_second: r.per_second / cores,
                burst: (r.burst / cores).max(1.0),
            }),
            buckets: HashMap::new(),
            hasher: Default::default(),
        }
    }

    /// Takes a token for `head`'s key, or answers 429 with `Retry-After`.
    pub(crate) fn admit(&mut self, head: &Head, now: Instant) -> Result<(), ProxyError> {
        let (Some(rate), Some(key)) = (self.rate, key_of(head)) else {
            return Ok(());
        };
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        let key = hasher.finish();
        if self.buckets.len() >= MAX_KEYS && !self.buckets.contains_key(&key) {
            self.evict(rate, now);
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate.per_second).ceil().max(1.0);
        Err(ProxyError::new(
            ErrorCode::RateLimited,
            format!(
                "too many requests with this API key (at most {:.0} per second); retry later",
                rate.per_second
            ),
        )
        .retry_after(wait as u64))
    }

    /// Drops buckets that are full again; all of them if none is.
    fn evict(&mut self, rate: ApiRateConfig, now: Instant) {
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate.per_second
                < rate.burst
        });
        if self.buckets.len() >= MAX_KEYS {
            self.buckets.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn head(key: &str) -> Head {
        let raw = format!("GET /v1/capsules HTTP/1.1\r\nX-API-Key: {key}\r\n\r\n");
        Head::parse_request(raw.as_bytes())
            .expect("parse")
            .expect("complete")
            .0
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let mut rate = ApiRate::new(
            Some(ApiRateConfig {
                per_second: 10.0,
                burst: 5.0,
            }),
            1,
        );
        let t0 = Instant::now();
        let a = head("key-a");
        for _ in 0..5 {
            rate.admit(&a, t0).expect("within the burst");
        }
        let refused = rate.admit(&a, t0).expect_err("over the burst");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after, Some(1));
        // Another key is not affected; the first refills at its rate.
        rate.admit(&head("key-b"), t0).expect("other key");
        rate.admit(&a, t0 + Duration::from_millis(150))
            .expect("refilled one");
        // No key: not limited here.
        let anonymous = Head::parse_request(b"GET /health HTTP/1.1\r\n\r\n")
            .expect("parse")
            .expect("complete")
            .0;
        for _ in 0..100 {
            rate.admit(&anonymous, t0).expect("no key");
        }
    }

    #[test]
    fn made_up_keys_cannot_grow_the_table() {
        let mut rate = ApiRate::new(Some(ApiRateConfig::default()), 1);
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 100) {
            let _ = rate.admit(&head(&format!("k{i}")), t0);
        }
        assert!(rate.buckets.len() <= MAX_KEYS);
    }
}
