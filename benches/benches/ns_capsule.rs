//! Namespace backend latencies: create-to-running for the `tiny` template
//! (init exec'd inside all its namespaces, cgroup, overlay and private disk;
//! with `WARREN_ENVD_BIN` set, also create-to-ready: envd's `/health`
//! answering), and pause / resume (cgroup freeze and thaw, waited for).
//! Prints p50/p99 over every operation measured, besides criterion's
//! report, and (with envd) the memory an idle capsule's cgroup holds. Targets (issue 5): create-to-ready < 50 ms p50, pause/resume
//! < 10 ms.
//!
//! Needs root, busybox-static and e2fsprogs:
//! `cargo bench -p warren-benches --bench ns_capsule`

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use warren_backend::namespace::{InitCommand, NamespaceBackend, NamespaceConfig};
use warren_backend::{Backend, CapsuleId, CapsuleSpec, Resources};
use warren_proto::addr::ENVD_PORT;

/// Every latency measured, per operation, for the percentile report.
static SAMPLES: Mutex<BTreeMap<&'static str, Vec<Duration>>> = Mutex::new(BTreeMap::new());

fn record(op: &'static str, d: Duration) {
    SAMPLES
        .lock()
        .expect("samples")
        .entry(op)
        .or_default()
        .push(d);
}

/// A network namespace shared by the bench's capsules (making one per
/// capsule is the network slot pool's job, not the backend's).
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("wb-ns{}-{n}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(ok(&["netns", "add", &name]), "ip netns add");
        assert!(ok(&["-n", &name, "link", "set", "lo", "up"]), "lo up");
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

struct Bench {
    backend: NamespaceBackend,
    netns: Netns,
    _data: tempfile::TempDir,
    next: u32,
    envd: bool,
}

impl Bench {
    fn new(init: InitCommand) -> Self {
        let data = tempfile::Builder::new()
            .prefix("warren-nsbench-")
            .tempdir()
            .expect("tempdir");
        let envd = matches!(init, InitCommand::Envd { .. });
        let mut config = NamespaceConfig::new(data.path().to_owned(), init);
        config.cgroup_parent = "warren-bench".into();
        let backend = NamespaceBackend::new(config).expect("backend");
        backend.templates().ensure("tiny").expect("tiny template");
        Self {
            backend,
            netns: Netns::new(),
            _data: data,
            next: 0,
            envd,
        }
    }

    fn spec(&mut self) -> CapsuleSpec {
        self.next += 1;
        CapsuleSpec {
            id: CapsuleId::new(format!("b{}-{}", std::process::id(), self.next)).expect("id"),
            template: "tiny".into(),
            resources: Resources {
                vcpus: 1,
                memory_mb: 256,
                disk_mb: 1024,
                max_pids: 1024,
            },
            netns: PathBuf::from("/run/netns").join(&self.netns.0),
            hostname: None,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            tx_limit: None,
        }
    }
}

/// GET /health on envd inside the capsule's network namespace, retried
/// until it answers (from a thread that joins the namespace).
fn wait_health(netns: &str) {
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).expect("netns");
            // SAFETY: setns on this thread only, with a valid descriptor.
            let rc = unsafe { libc_setns(&ns) };
            assert_eq!(rc, 0, "setns");
            loop {
                if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", ENVD_PORT)) {
                    let _ = c
                        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    let mut buf = [0u8; 64];
                    if let Ok(n) = c.read(&mut buf)
                        && buf[..n].starts_with(b"HTTP/1.1 2")
                    {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
    });
}

/// # Safety
/// Changes the calling thread's network namespace.
unsafe fn libc_setns(ns: &std::fs::File) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: see the function's contract.
    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }
}

fn create_to_running(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    mut b: Bench,
    name: &'static str,
) {
    let mut group = c.benchmark_group("ns_capsule");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function(name, |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let spec = b.spec();
                let start = Instant::now();
                rt.block_on(b.backend.create(&spec)).expect("create");
                if b.envd {
                    // Every capsule shares the bench's namespace: one at a time.
                    wait_health(&b.netns.0);
                }
                let took = start.elapsed();
                record(name, took);
                total += took;
                rt.block_on(b.backend.destroy(&spec.id)).expect("destroy");
            }
            total
        });
    });
    group.finish();
}

fn pause_resume(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut b = Bench::new(InitCommand::Template(vec![
        "/bin/sh".into(),
        "-c".into(),
        "while :; do sleep 3600; done".into(),
    ]));
    let spec = b.spec();
    rt.block_on(b.backend.create(&spec)).expect("create");
    let mut group = c.benchmark_group("ns_capsule");
    group.sample_size(50);
    for (name, pause) in [("pause", true), ("resume", false)] {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Put the capsule in the opposite state, untimed.
                    if pause {
                        let start = Instant::now();
                        rt.block_on(b.backend.pause(&spec.id)).expect("pause");
                        let took = start.elapsed();
                        record(name, took);
                        total += took;
                        rt.block_on(b.backend.resume(&spec.id)).expect("resume");
                    } else {
                        rt.block_on(b.backend.pause(&spec.id)).expect("pause");
                        let start = Instant::now();
                        rt.block_on(b.backend.resume(&spec.id)).expect("resume");
                        let took = start.elapsed();
                        record(name, took);
                        total += took;
                    }
                }
                total
            });
        });
    }
    group.finish();
    rt.block_on(b.backend.destroy(&spec.id)).expect("destroy");
}

/// Memory charged to idle envd capsules (envd's heap, page cache of its
/// binary and libraries, kernel objects), averaged over a few.
fn idle_memory(rt: &tokio::runtime::Runtime, mut b: Bench) {
    const N: usize = 8;
    let nets: Vec<Netns> = (0..N).map(|_| Netns::new()).collect();
    let mut ids = Vec::new();
    for net in &nets {
        let mut spec = b.spec();
        spec.netns = PathBuf::from("/run/netns").join(&net.0);
        rt.block_on(b.backend.create(&spec)).expect("create");
        wait_health(&net.0);
        ids.push(spec.id);
    }
    std::thread::sleep(Duration::from_secs(1));
    let total: u64 = ids
        .iter()
        .map(|id| {
            rt.block_on(b.backend.metrics(id))
                .expect("metrics")
                .memory_bytes
        })
        .sum();
    println!(
        "ns_capsule idle envd capsule memory (cgroup, incl. page cache): {:.2} MiB mean over {N}",
        total as f64 / N as f64 / f64::from(1u32 << 20)
    );
    for id in &ids {
        rt.block_on(b.backend.destroy(id)).expect("destroy");
    }
}

fn report() {
    println!("\nns_capsule latency over every operation measured:");
    for (op, samples) in SAMPLES.lock().expect("samples").iter_mut() {
        samples.sort();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        println!(
            "  {op:<24} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms",
            samples.len(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3
        );
    }
}

fn benches(c: &mut Criterion) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping ns_capsule: the namespace backend needs root");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stand_in = Bench::new(InitCommand::Template(vec![
        "/bin/sh".into(),
        "-c".into(),
        "while :; do sleep 3600; done".into(),
    ]));
    create_to_running(c, &rt, stand_in, "create_to_running");
    match std::env::var_os("WARREN_ENVD_BIN") {
        Some(bin) => {
            let envd = || {
                Bench::new(InitCommand::Envd {
                    binary: bin.clone().into(),
                    port: ENVD_PORT,
                })
            };
            create_to_running(c, &rt, envd(), "create_to_envd_health");
            idle_memory(&rt, envd());
        }
        None => eprintln!("create_to_envd_health skipped: set WARREN_ENVD_BIN to an envd binary"),
    }
    pause_resume(c, &rt);
    report();
}

criterion_group!(ns, benches);
criterion_main!(ns);
