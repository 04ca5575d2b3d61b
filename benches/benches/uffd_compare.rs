//! Side-by-side restore benchmark of the page server, in one run, with ratios.
//!
//! A restore touches a 256 MiB working set in random order (one word per 4 KiB
//! page) through: the kernel's lazy loading of a private file mapping (the
//! floor), a naive handler (one page read per fault, then copy: Firecracker's
//! example handler), and Warren's page server with the settings the agent
//! ships (64 KiB fault-around), cold and prefetching the working set that a
//! cold restore with those settings recorded. Two scenarios, one table each:
//! - dense: the working set is the whole 256 MiB of guest memory;
//! - sparse: the working set is a random quarter of 1 GiB of guest memory, so
//!   fault-around also copies pages the guest never touches.
//!
//! `cargo bench -p warren-benches --bench uffd_compare` (root: userfaultfd).
//! `UFFD_BENCH_MIB` (working set, default 256), `UFFD_BENCH_SPARSE_MIB` (guest
//! memory of the sparse scenario, default 1024) and `UFFD_BENCH_REPS` (default
//! 5 rounds, each running every contender once; the median run is shown) change
//! the sizes and repetitions.

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
    let (set_mib, sparse_mib, reps) = if quick {
        (8, 32, 1)
    } else {
        (
            env("UFFD_BENCH_MIB", 256),
            env("UFFD_BENCH_SPARSE_MIB", 1024),
            env("UFFD_BENCH_REPS", 5).max(1),
        )
    };
    let pages = (set_mib * MIB / PAGE) as usize;
    for (title, memory_mib) in [("dense", set_mib), ("sparse", sparse_mib.max(set_mib))] {
        let mem = MemFile::new(memory_mib * MIB);
        let mut order = mem.random_order();
        order.truncate(pages);
        println!(
            "\n### {title}: {set_mib} MiB working set ({pages} pages) of {memory_mib} MiB guest memory, \
             touched in random order; median of {reps} rounds\n"
        );
        table(&mem, &order, reps);
    }
    println!();
    println!(
        "vs naive: naive time / this time (higher is better); vs floor: this time / kernel time."
    );
    println!(
        "touch: one word read per page, timed in the guest; served: fault read to wake, in the page server."
    );
}

/// Runs every contender `reps` times on the same restore and prints the table.
fn table(mem: &MemFile, order: &[u64], reps: u64) {
    let (_, ws) = record_working_set(mem, order);
    let (cold, prefetched) = (agent_cold(), agent_prefetched(ws));
    let contenders: Vec<(&str, Restore)> = vec![
        (
            "kernel private mapping (floor)",
            Box::new(|| run_kernel(mem, order)),
        ),
        (
            "naive (read + copy per fault)",
            Box::new(|| run_naive(mem, order)),
        ),
        ("ours, cold", Box::new(|| run_ours(mem, order, &cold))),
        (
            "ours, prefetched",
            Box::new(|| run_ours(mem, order, &prefetched)),
        ),
    ];
    // Rounds: every contender once per round, so a change in the machine's
    // load spreads over all of them instead of landing on one.
    let mut runs: Vec<Vec<Run>> = contenders.iter().map(|_| Vec::new()).collect();
    for _ in 0..reps {
        for (i, (_, run)) in contenders.iter().enumerate() {
            runs[i].push(run());
        }
    }
    let results: Vec<(&str, Run)> = contenders
        .into_iter()
        .zip(runs)
        .map(|((name, _), mut runs)| {
            runs.sort_by_key(|r| r.total);
            let median = runs.swap_remove(runs.len() / 2);
            (name, median)
        })
        .collect();

    let floor = results[0].1.total.as_secs_f64();
    let naive = results[1].1.total.as_secs_f64();
    println!(
        "| contender | restore ms | vs naive | vs floor | first touch µs | touch p50 µs | touch p99 µs | faults | served p50 µs | served p99 µs | pages filled | prefetched |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, run) in &results {
        let t = run.total.as_secs_f64();
        let dash = || "-".to_string();
        let (faults, sp50, sp99, filled, pre) = match &run.stats {
            Some(s) => (
                s.faults.to_string(),
                s.latency.quantile(0.5).map_or_else(dash, us),
                s.latency.quantile(0.99).map_or_else(dash, us),
                (s.pages_copied + s.pages_zeroed).to_string(),
                s.prefetch_hits.to_string(),
            ),
            None => (dash(), dash(), dash(), dash(), dash()),
        };
        println!(
            "| {name} | {:.1} | {:.2}x | {:.2}x | {} | {} | {} | {faults} | {sp50} | {sp99} | {filled} | {pre} |",
            t * 1e3,
            naive / t,
            t / floor,
            us(run.first),
            us(run.touch_quantile(0.5)),
            us(run.touch_quantile(0.99)),
        );
    }
    let (cold, warm) = (&results[2].1, &results[3].1);
    let faults = |r: &Run| r.stats.as_ref().map_or(0, |s| s.faults) as f64;
    println!(
        "\nprefetched / cold: faults {:.1} %, restore time {:.1} %, time to first touch {:.1} %",
        100.0 * faults(warm) / faults(cold).max(1.0),
        100.0 * warm.total.as_secs_f64() / cold.total.as_secs_f64(),
        100.0 * warm.first.as_secs_f64() / cold.first.as_secs_f64(),
    );
}
