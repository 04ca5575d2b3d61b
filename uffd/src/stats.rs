//! Per-VM counters: written by the serving core, read from any thread.
//!
//! Every counter is a relaxed atomic with a single writer (the core serving the
//! VM), so reading them takes no lock and never slows the fault path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Sub-buckets per power of two: latencies are kept to within 1/8 (12.5 %).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values below this are counted exactly.
const LINEAR: u64 = 2 * SUB as u64;
const BUCKETS: usize = LINEAR as usize + (64 - SUB_BITS as usize - 1) * SUB;

/// A log-linear histogram of durations in nanoseconds.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
    LINEAR as usize + (exp - SUB_BITS - 1) as usize * SUB + sub
}

/// The smallest value that falls in bucket `i`.
fn bucket_floor(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let exp = (k / SUB) as u32 + SUB_BITS + 1;
    let sub = (k % SUB) as u64;
    (SUB as u64 + sub) << (exp - SUB_BITS)
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
    }

    /// A copy of the counts, for quantiles.
    pub fn snapshot(&self) -> Latency {
        Latency {
            counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

/// A point-in-time copy of a latency histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    counts: Vec<u64>,
}

impl Latency {
    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1), as the floor of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(bucket_floor(i)));
            }
        }
        None
    }
}

/// The live counters of one VM.
#[derive(Debug, Default)]
pub struct Counters {
    pub faults: AtomicU64,
    pub pages_copied: AtomicU64,
    pub pages_zeroed: AtomicU64,
    pub bytes_copied: AtomicU64,
    pub fault_around_pages: AtomicU64,
    pub already_present: AtomicU64,
    pub retries: AtomicU64,
    pub errors: AtomicU64,
    pub unknown_address_faults: AtomicU64,
    pub removes: AtomicU64,
    pub unmaps: AtomicU64,
    pub remaps: AtomicU64,
    pub forks: AtomicU64,
    pub prefetch_pages: AtomicU64,
    pub prefetch_late: AtomicU64,
    pub prefetch_unpredicted: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub latency: Histogram,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        let l = |c: &AtomicU64| c.load(Relaxed);
        Stats {
            faults: l(&self.faults),
            pages_copied: l(&self.pages_copied),
            pages_zeroed: l(&self.pages_zeroed),
            bytes_copied: l(&self.bytes_copied),
            fault_around_pages: l(&self.fault_around_pages),
            already_present: l(&self.already_present),
            retries: l(&self.retries),
            errors: l(&self.errors),
            unknown_address_faults: l(&self.unknown_address_faults),
            removes: l(&self.removes),
            unmaps: l(&self.unmaps),
            remaps: l(&self.remaps),
            forks: l(&self.forks),
            prefetch_hits: l(&self.prefetch_pages),
            prefetch_late: l(&self.prefetch_late),
            prefetch_unpredicted: l(&self.prefetch_unpredicted),
            handshake_failures: l(&self.handshake_failures),
            latency: self.latency.snapshot(),
        }
    }
}

/// A point-in-time copy of one VM's counters. Pages are the region's page size
/// (4 KiB or 2 MiB).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Page faults the guest raised and we served (including forked children).
    pub faults: u64,
    /// Pages filled with `UFFDIO_COPY` (faults, fault-around and prefetch).
    pub pages_copied: u64,
    /// Pages filled with zeros (holes, removed ranges).
    pub pages_zeroed: u64,
    /// Bytes copied from the snapshot files.
    pub bytes_copied: u64,
    /// Pages filled around a fault, beyond the faulting page.
    pub fault_around_pages: u64,
    /// Faults on pages that were already in place by then (woken, not filled).
    pub already_present: u64,
    /// Fills retried because the address space was changing (`EAGAIN`).
    pub retries: u64,
    /// Fills the kernel refused for another reason (the thread is woken anyway).
    pub errors: u64,
    /// Faults outside every known region (served as zero pages).
    pub unknown_address_faults: u64,
    pub removes: u64,
    pub unmaps: u64,
    pub remaps: u64,
    pub forks: u64,
    /// Pages the prefetcher put in place before the guest asked for them.
    pub prefetch_hits: u64,
    /// Demand faults on working-set pages the prefetcher had not reached yet.
    pub prefetch_late: u64,
    /// Demand faults on pages outside the working set.
    pub prefetch_unpredicted: u64,
    /// Connections refused because their handshake was invalid.
    pub handshake_failures: u64,
    /// Time from reading a fault to waking the faulting thread.
    pub latency: Latency,
}

impl Stats {
    /// Demand faults the working set did not prevent (late + unpredicted).
    pub fn prefetch_misses(&self) -> u64 {
        self.prefetch_late + self.prefetch_unpredicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            last = b;
            let floor = bucket_floor(b);
            assert!(
                floor <= v && v - floor <= v / 8,
                "{v} in bucket from {floor}"
            );
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p50 = s.quantile(0.5).expect("p50");
        let p99 = s.quantile(0.99).expect("p99");
        assert!(
            p50 >= Duration::from_micros(44) && p50 <= Duration::from_micros(50),
            "{p50:?}"
        );
        assert!(
            p99 >= Duration::from_micros(87) && p99 <= Duration::from_micros(99),
            "{p99:?}"
        );
    }
}
