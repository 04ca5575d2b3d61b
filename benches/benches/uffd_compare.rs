//! Side-by-side restore benchmark of the page server, in one run, with ratios.
//!
//! Touches a 256 MiB working set in random order (one word per 4 KiB page)
//! through: the kernel's lazy loading of a private file mapping (the floor), a
//! naive handler (one page read per fault, then copy: Firecracker's example
//! handler), and Warren's page server plain, with fault-around, and with a
//! working set recorded by an earlier restore prefetched. Prints a table.
//!
//! `cargo bench -p warren-benches --bench uffd_compare` (root: userfaultfd).
//! `UFFD_BENCH_MIB` (default 256) and `UFFD_BENCH_REPS` (default 3; the median
//! run is shown) change the size and repetitions.

mod uffd_support;

use std::time::Duration;

use uffd_support::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    // `cargo test --benches` runs bench targets with no "--bench": stay quick there.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mib = if quick { 8 } else { env("UFFD_BENCH_MIB", 256) };
    let reps = if quick {
        1
    } else {
        env("UFFD_BENCH_REPS", 3).max(1)
    };
    let mem = MemFile::new(mib * MIB);
    let order = mem.random_order();
    println!(
        "uffd restore: {mib} MiB, {} pages touched in random order, median of {reps} runs",
        order.len()
    );

    let ws = record_working_set(&mem, &order);
    let (mem, order) = (&mem, &order);
    let around = |fault_around: u64| Ours {
        fault_around,
        ..Ours::default()
    };
    let mut contenders: Vec<(String, Restore)> = vec![
        (
            "kernel private mapping (floor)".into(),
            Box::new(|| run_kernel(mem, order)),
        ),
        (
            "naive (read + copy per fault)".into(),
            Box::new(|| run_naive(mem, order)),
        ),
    ];
    let ours = [
        ("ours, plain", around(PAGE)),
        ("ours, fault-around 16 KiB", around(16 << 10)),
        ("ours, fault-around 64 KiB", around(64 << 10)),
        ("ours, fault-around 256 KiB", around(256 << 10)),
        (
            "ours, recorded working set",
            Ours {
                prefetch: Some(ws),
                ..around(64 << 10)
            },
        ),
    ];
    for (name, options) in ours {
        contenders.push((
            name.into(),
            Box::new(move || run_ours(mem, order, &options)),
        ));
    }
    let results: Vec<(String, Run)> = contenders
        .into_iter()
        .map(|(name, run)| {
            let mut runs: Vec<Run> = (0..reps).map(|_| run()).collect();
            runs.sort_by_key(|r| r.total);
            let median = runs.swap_remove(runs.len() / 2);
            (name, median)
        })
        .collect();

    let naive = results[1].1.total.as_secs_f64();
    let floor = results[0].1.total.as_secs_f64();
    println!();
    println!(
        "| contender | restore ms | vs naive | vs floor | touch p50 µs | touch p99 µs | faults | served p50 µs | served p99 µs | prefetched |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, run) in &results {
        let t = run.total.as_secs_f64();
        let (faults, sp50, sp99, pre) = match &run.stats {
            Some(s) => (
                s.faults.to_string(),
                s.latency.quantile(0.5).map_or("-".into(), us),
                s.latency.quantile(0.99).map_or("-".into(), us),
                s.prefetch_hits.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {name} | {:.1} | {:.2}x | {:.2}x | {} | {} | {faults} | {sp50} | {sp99} | {pre} |",
            t * 1e3,
            naive / t,
            t / floor,
            us(run.touch_quantile(0.5)),
            us(run.touch_quantile(0.99)),
        );
    }
    println!();
    println!(
        "vs naive: naive time / this time (higher is better); vs floor: this time / kernel time."
    );
    println!(
        "touch: one word read per page, timed in the guest; served: fault read to wake, in the page server."
    );
}
