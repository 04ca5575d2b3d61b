//! Tx rate limits for namespace capsules: Firecracker's `tx_rate_limiter`
//! semantics (a bucket of `size` bytes refilled every `refill_time_ms`, plus a
//! `one_time_burst` that never refills) built with `tc` on the slot side of the
//! veth, whose egress is everything the capsule sends.
//!
//! One HTB class shapes at `size / refill_time`. It starts with a bucket of
//! `size + one_time_burst` bytes (a new HTB class starts full, like
//! Firecracker's buckets); once the qdisc has sent `one_time_burst` bytes the
//! class is changed to a bucket of `size`. HTB keeps its tokens across a
//! change and caps them at the new bucket, so the burst is spent exactly once
//! (watched by polling the qdisc's byte counter over netlink: at most one
//! extra one-time burst can slip through if the capsule idles within
//! [`POLL_MAX`] of spending it and then bursts again before the next poll).
//! Setting a new limit recreates the class, so its buckets start full, as
//! Firecracker's do after a PATCH.
//!
//! `tc` is used for changes because rtnetlink has no HTB options; netlink
//! reads the counters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SLOT_IF as NS_IF;
use crate::cmd;
use crate::error::{NetError, Result};
use crate::netlink::Netlink;

/// Smallest bucket `tc` shapes sensibly (a few full-size frames).
const MIN_SIZE: u64 = 4096;
/// HTB stores bucket sizes as 32-bit time ticks: keep the time to drain a
/// full bucket at the shaped rate well inside that range (~274 s).
const MAX_BUCKET_SECONDS: u128 = 250;
/// Per-round quantum: with a single class it only silences kernel warnings.
const QUANTUM: u64 = 60_000;
/// Byte-counter polling while the one-time burst is unspent.
const POLL_MIN: Duration = Duration::from_millis(100);
/// Polling slows down to this while the capsule sends nothing.
pub(crate) const POLL_MAX: Duration = Duration::from_secs(2);

/// A token-bucket limit on what a capsule transmits, as Firecracker's
/// `TokenBucket` (all sizes in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLimit {
    /// Bucket size: this many bytes per `refill_time_ms`, and the largest
    /// burst after the capsule idled.
    pub size: u64,
    /// Extra bytes granted once, on top of the bucket; never refilled.
    pub one_time_burst: u64,
    /// Milliseconds to refill `size` bytes.
    pub refill_time_ms: u64,
}

impl Default for TxLimit {
    /// 200 MB/s sustained, 100 MB one-time burst, 1 s refill (MB = 10^6 bytes).
    fn default() -> Self {
        Self {
            size: 200_000_000,
            one_time_burst: 100_000_000,
            refill_time_ms: 1000,
        }
    }
}

impl TxLimit {
    /// Sustained rate in bytes per second.
    pub fn bytes_per_second(&self) -> u64 {
        let rate = u128::from(self.size) * 1000 / u128::from(self.refill_time_ms.max(1));
        u64::try_from(rate).unwrap_or(u64::MAX)
    }

    /// Refuses limits `tc` cannot express faithfully.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(NetError::InvalidTxLimit(message));
        if self.refill_time_ms == 0 {
            return invalid("refill_time_ms must be at least 1".into());
        }
        if self.size < MIN_SIZE {
            return invalid(format!(
                "size {} is below the minimum of {MIN_SIZE} bytes",
                self.size
            ));
        }
        let bucket = u128::from(self.size) + u128::from(self.one_time_burst);
        if bucket > u128::from(u32::MAX) {
            return invalid(format!(
                "size + one_time_burst = {bucket} bytes exceeds {} bytes",
                u32::MAX
            ));
        }
        // Time to drain the first bucket at the shaped rate, in ms.
        let drain_ms = bucket * u128::from(self.refill_time_ms) / u128::from(self.size);
        if drain_ms > MAX_BUCKET_SECONDS * 1000 {
            return invalid(format!(
                "size + one_time_burst takes {} s to drain at the shaped rate; at most {MAX_BUCKET_SECONDS} s",
                drain_ms / 1000
            ));
        }
        Ok(())
    }

    fn class_args(&self, bucket: u64) -> String {
        let bits = self.bytes_per_second().saturating_mul(8);
        format!(
            "htb rate {bits}bit ceil {bits}bit burst {bucket} cburst {bucket} quantum {QUANTUM}"
        )
    }
}

/// Shaping of one slot: its namespace and the slot side of its veth.
pub(crate) struct Shaper {
    netns: PathBuf,
    netlink: Netlink,
    ifindex: u32,
}

impl Shaper {
    /// The shaper of the slot whose namespace is at `netns`.
    pub async fn open(netns: &Path) -> Result<Self> {
        let netlink = Netlink::in_netns(netns).await?;
        let ifindex = netlink.require_link(NS_IF).await?;
        Ok(Self {
            netns: netns.to_owned(),
            netlink,
            ifindex,
        })
    }

    /// Installs `limit` with full buckets (replacing any earlier limit).
    pub async fn install(&self, limit: &TxLimit) -> Result<()> {
        let mut batch = self.clear_line().await?;
        batch.push_str(&format!(
            "qdisc add dev {NS_IF} root handle 1: htb default 1\n"
        ));
        batch.push_str(&format!(
            "class add dev {NS_IF} parent 1: classid 1:1 {}\n",
            limit.class_args(limit.size + limit.one_time_burst)
        ));
        self.tc(&batch).await
    }

    /// Shrinks the bucket to `size` once the one-time burst is spent.
    pub async fn spend_burst(&self, limit: &TxLimit) -> Result<()> {
        self.tc(&format!(
            "class change dev {NS_IF} parent 1: classid 1:1 {}\n",
            limit.class_args(limit.size)
        ))
        .await
    }

    /// Removes any limit.
    pub async fn remove(&self) -> Result<()> {
        let batch = self.clear_line().await?;
        if batch.is_empty() {
            Ok(())
        } else {
            self.tc(&batch).await
        }
    }

    /// Whether a limit is installed (an HTB root qdisc).
    pub async fn installed(&self) -> Result<bool> {
        Ok(self
            .netlink
            .root_qdisc(self.ifindex)
            .await?
            .is_some_and(|q| q.kind == "htb"))
    }

    /// Returns once the qdisc has sent `burst` bytes (its counter starts at
    /// zero when [`Self::install`] recreates it).
    pub async fn burst_spent(&self, burst: u64) -> Result<()> {
        let mut interval = POLL_MIN;
        let mut last = None;
        loop {
            let sent = self
                .netlink
                .root_qdisc(self.ifindex)
                .await?
                .map_or(0, |q| q.bytes);
            if sent >= burst {
                return Ok(());
            }
            interval = if last == Some(sent) {
                (interval * 2).min(POLL_MAX)
            } else {
                POLL_MIN
            };
            last = Some(sent);
            tokio::time::sleep(interval).await;
        }
    }

    /// A batch line deleting the current root qdisc, if there is one.
    async fn clear_line(&self) -> Result<String> {
        let current = self.netlink.root_qdisc(self.ifindex).await?;
        Ok(match current {
            Some(q) if q.kind != "noqueue" => format!("qdisc del dev {NS_IF} root\n"),
            _ => String::new(),
        })
    }

    async fn tc(&self, batch: &str) -> Result<()> {
        cmd::run("tc", &["-batch", "-"], batch, Some(&self.netns))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_200_mb_per_second() {
        let limit = TxLimit::default();
        assert_eq!(limit.bytes_per_second(), 200_000_000);
        limit.validate().expect("the default is valid");
        assert_eq!(
            limit.class_args(300_000_000),
            "htb rate 1600000000bit ceil 1600000000bit burst 300000000 cburst 300000000 quantum 60000"
        );
    }

    #[test]
    fn rate_follows_refill_time() {
        let limit = TxLimit {
            size: 200_000,
            one_time_burst: 0,
            refill_time_ms: 100,
        };
        assert_eq!(limit.bytes_per_second(), 2_000_000);
    }

    #[test]
    fn inexpressible_limits_are_refused() {
        for limit in [
            TxLimit {
                size: 1_000_000,
                one_time_burst: 0,
                refill_time_ms: 0,
            },
            TxLimit {
                size: 100,
                one_time_burst: 0,
                refill_time_ms: 1000,
            },
            TxLimit {
                size: 4_000_000_000,
                one_time_burst: 1_000_000_000,
                refill_time_ms: 1000,
            },
            TxLimit {
                size: 10_000,
                one_time_burst: 10_000_000,
                refill_time_ms: 1000,
            },
        ] {
            let err = limit.validate().expect_err("refused");
            assert!(
                matches!(err, NetError::InvalidTxLimit(_)),
                "{limit:?}: {err}"
            );
        }
    }
}
