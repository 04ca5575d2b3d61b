//! The whole agent, in-process, measured the way the control plane sees it:
//! create-to-ready over the lifecycle RPC (network slot, namespace capsule,
//! envd answering and initialised) for `tiny`, pause and resume latency, and
//! the cost of 100 idle capsules on this machine (host memory, the capsules'
//! cgroups, the agent's own growth). Prints p50/p99 tables.
//!
//! Needs root, busybox-static, and a release `envd` beside the bench's
//! target dir (`cargo build --release -p envd`; `make bench` does it):
//! `cargo bench -p warren-benches --bench agent_capsules`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use warren_agent::agent::{self, AgentConfig, BackendChoice};
use warren_proto::{
    agent::v1::{self as pb, AgentClient},
    connect::Client,
};

const TOKEN: &str = "bench-token";
const IDLE_CAPSULES: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>, target: &str) {
    samples.sort();
    println!(
        "| {name:<28} | {:>5} | {:>9.2} | {:>9.2} | {target} |",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
    );
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .map(str::to_owned)
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn envd_bin() -> PathBuf {
    // The bench runs from <target>/release/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let release = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/release");
    release.join("envd")
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the agent needs root");
        return;
    }
    let envd = envd_bin();
    if !envd.exists() {
        eprintln!(
            "skipped: {} missing: run `cargo build --release -p envd` (make bench does)",
            envd.display()
        );
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let rpc_addr = free_addr();
    let config = AgentConfig {
        data_dir: data.path().to_path_buf(),
        rpc_listen: rpc_addr,
        proxy_listen: free_addr(),
        admin_listen: free_addr(),
        proxy_advertise: None,
        token: TOKEN.into(),
        backend: BackendChoice::Namespace,
        cores: Some(1),
        domain: None,
        envd_bin: envd,
        busybox: "/bin/busybox".into(),
        microvm: Default::default(),
        net_prefix: "wbench".into(),
        nft_table: "wbench".into(),
        slot_pool: 8,
        capsule_net: Some("10.215.0.0/22".parse().expect("net")),
        veth_net: Some("10.216.0.0/21".parse().expect("net")),
        cgroup_parent: "wbench".into(),
        reap_interval: Duration::from_secs(3600),
        manager: None,
        control: None,
    };
    let net_config = {
        let mut n = warren_netslot::NetConfig::new(data.path().join("net"));
        n.prefix = config.net_prefix.clone();
        n.table = config.nft_table.clone();
        n.capsule_net = config.capsule_net.expect("set");
        n.veth_net = config.veth_net.expect("set");
        n
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_agent = stop.clone();
    let agent_task = rt
        .spawn(async move { agent::run(config, async move { stop_agent.notified().await }).await });
    let client = AgentClient::new(
        Client::builder(format!("http://{rpc_addr}"))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {TOKEN}").parse().expect("header"),
            )
            .build()
            .expect("client"),
    );
    let _cleanup = Cleanup {
        client: client.clone(),
        net: net_config.clone(),
    };
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .list_capsules(&pb::ListCapsulesRequest {})
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "agent did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let create = |id: String| {
            let client = client.clone();
            async move {
                let started = Instant::now();
                client
                    .create_capsule(&pb::CreateCapsuleRequest {
                        capsule_id: id,
                        template: "tiny".into(),
                        vcpus: 1,
                        memory_mb: 64,
                        disk_mb: 64,
                        ..Default::default()
                    })
                    .await
                    .expect("create");
                started.elapsed()
            }
        };
        // Warm up: the template and the disk pool.
        create("warm".into()).await;
        client
            .destroy_capsule(&pb::DestroyCapsuleRequest {
                capsule_id: "warm".into(),
            })
            .await
            .expect("destroy");

        println!("\n| operation (agent RPC)        |     n |  p50 (ms) |  p99 (ms) | target |");
        println!("|---|---:|---:|---:|---|");
        let mut creates = Vec::new();
        let mut pauses = Vec::new();
        let mut resumes = Vec::new();
        for i in 0..40 {
            let id = format!("lat{i}");
            creates.push(create(id.clone()).await);
            let t = Instant::now();
            client
                .pause_capsule(&pb::PauseCapsuleRequest {
                    capsule_id: id.clone(),
                })
                .await
                .expect("pause");
            pauses.push(t.elapsed());
            let t = Instant::now();
            client
                .resume_capsule(&pb::ResumeCapsuleRequest {
                    capsule_id: id.clone(),
                    ..Default::default()
                })
                .await
                .expect("resume");
            resumes.push(t.elapsed());
            client
                .destroy_capsule(&pb::DestroyCapsuleRequest { capsule_id: id })
                .await
                .expect("destroy");
        }
        report("create → ready (tiny)", creates, "< 50 ms p50");
        report("pause", pauses, "< 10 ms");
        report("resume", resumes, "< 10 ms");

        // 100 idle capsules.
        let avail_before = mem_available_kib();
        let rss_before = rss_kib();
        let started = Instant::now();
        let mut all = Vec::new();
        for batch in (0..IDLE_CAPSULES).collect::<Vec<_>>().chunks(10) {
            all.extend(join_all(batch.iter().map(|i| create(format!("idle{i:03}")))).await);
        }
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let metrics = client
            .get_metrics(&pb::GetMetricsRequest::default())
            .await
            .expect("metrics");
        let cgroup_total: u64 = metrics.metrics.iter().map(|m| m.memory_bytes).sum();
        let running = client
            .list_capsules(&pb::ListCapsulesRequest {})
            .await
            .expect("list")
            .capsules
            .iter()
            .filter(|c| c.state == pb::CapsuleState::Running as i32)
            .count();
        let host_kib = avail_before.saturating_sub(mem_available_kib());
        let agent_kib = rss_kib().saturating_sub(rss_before);
        report("create, 10 at a time", all, "");
        println!("\n| {IDLE_CAPSULES} idle capsules | value |");
        println!("|---|---:|");
        println!("| running | {running} |");
        println!("| created in | {:.1} s |", took.as_secs_f64());
        println!(
            "| host memory per capsule (MemAvailable drop) | {:.2} MiB |",
            host_kib as f64 / 1024.0 / IDLE_CAPSULES as f64
        );
        println!(
            "| capsule cgroup memory per capsule (envd + init) | {:.2} MiB |",
            cgroup_total as f64 / (1 << 20) as f64 / IDLE_CAPSULES as f64
        );
        println!(
            "| agent (and bench) memory per capsule | {:.1} KiB |",
            agent_kib as f64 / IDLE_CAPSULES as f64
        );
    });
    // Cleanup (below) terminates the agent's capsules and purges its network.
    drop(_cleanup);
    stop.notify_one();
    let _ = rt.block_on(agent_task);
}

/// Destroys every capsule and removes the agent's network state and cgroup
/// parent, also when the bench fails half way.
struct Cleanup {
    client: AgentClient,
    net: warren_netslot::NetConfig,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let client = self.client.clone();
        let net = self.net.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // Terminate destroys every capsule and stops the agent.
                if let Err(e) = client.terminate(&pb::TerminateRequest {}).await {
                    eprintln!("cleanup: terminate: {e}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e) = warren_netslot::SlotManager::purge(&net).await {
                    eprintln!("cleanup: purge: {e}");
                }
            });
        })
        .join();
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(h.path().join("wbench"));
        }
    }
}
