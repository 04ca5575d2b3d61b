//! Criterion benchmarks of the page server's hot paths.
//!
//! - `uffd_fault`: one demand fault served (a fresh page touched, no
//!   fault-around), for ours, the naive handler and the kernel floor.
//! - `uffd_restore_16MiB`: a whole 16 MiB restore touched in random order, for
//!   every contender, ours with the agent's settings, cold and prefetched
//!   (the 256 MiB side-by-side table is `uffd_compare`).
//! - `uffd_handshake`: parsing and validating Firecracker's handshake.

mod uffd_support;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use uffd_support::*;
use warren_uffd::handshake::{self, PageSize, Region};

/// Pages per guest when measuring single faults: each chunk is a fresh restore.
const CHUNK_PAGES: u64 = 4096;

fn fault(c: &mut Criterion) {
    let mem = MemFile::new(CHUNK_PAGES * PAGE);
    let order: Vec<u64> = (0..CHUNK_PAGES).map(|p| p * PAGE).collect();
    let mut group = c.benchmark_group("uffd_fault");
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    type Partial<'a> = &'a dyn Fn(&[u64]) -> Run;
    let contenders: [(&str, Partial); 3] = [
        ("ours", &|o| {
            run_ours(
                &mem,
                o,
                &Ours {
                    fault_around: PAGE,
                    ..Ours::default()
                },
            )
        }),
        ("naive", &|o| run_naive(&mem, o)),
        ("kernel", &|o| run_kernel(&mem, o)),
    ];
    for (name, run) in contenders {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // Sum only the touches; each chunk of pages is a new restore.
                let mut left = iters;
                let mut total = Duration::ZERO;
                while left > 0 {
                    let n = left.min(CHUNK_PAGES) as usize;
                    let r = run(&order[..n]);
                    total += r
                        .touches
                        .iter()
                        .map(|&ns| Duration::from_nanos(ns.into()))
                        .sum::<Duration>();
                    left -= n as u64;
                }
                total
            })
        });
    }
    group.finish();
}

fn restore(c: &mut Criterion) {
    let mem = MemFile::new(16 * MIB);
    let order = mem.random_order();
    let (_, ws) = record_working_set(&mem, &order);
    let mut group = c.benchmark_group("uffd_restore_16MiB");
    group.throughput(Throughput::Bytes(mem.len));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    let (cold, prefetched) = (agent_cold(), agent_prefetched(ws));
    let contenders: [(&str, Restore); 4] = [
        ("kernel", Box::new(|| run_kernel(&mem, &order))),
        ("naive", Box::new(|| run_naive(&mem, &order))),
        ("ours_cold", Box::new(|| run_ours(&mem, &order, &cold))),
        (
            "ours_prefetched",
            Box::new(|| run_ours(&mem, &order, &prefetched)),
        ),
    ];
    for (name, run) in contenders {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run().total).sum())
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let regions = [
        Region {
            base: 0x7f00_0000_0000,
            size: 3 << 30,
            offset: 0,
            page_size: PageSize::Base,
        },
        Region {
            base: 0x7f10_0000_0000,
            size: 1 << 30,
            offset: 3 << 30,
            page_size: PageSize::Base,
        },
    ];
    let json = handshake::encode(&regions);
    c.bench_function("uffd_handshake_parse", |b| {
        b.iter(|| handshake::parse(std::hint::black_box(&json), 4 << 30).expect("valid"))
    });
}

criterion_group!(benches, fault, restore, parse);
criterion_main!(benches);
