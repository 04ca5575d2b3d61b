//! The whole agent, as the control plane drives it: the real `warren-agent`
//! binary (namespace backend, network slots, data-plane proxy) with real
//! envd inside `tiny` capsules, called through the lifecycle RPC and envd's
//! own protocol relayed by the proxy. Needs root, `busybox-static`, and
//! `envd` built beside `warren-agent` (`cargo build -p envd`; `make test`
//! builds every binary first).

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod agent_support;

use std::{
    collections::HashSet,
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use agent_support::*;
use futures_util::{StreamExt, future::join_all};
use warren_proto::{
    agent::v1::{self as pb, AgentClient},
    connect::{Client, Code},
    process::{ProcessConfig, StartRequest, process_event},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_capsules_created_concurrently_each_run_a_command() {
    require_root!();
    let agent = Agent::start(&[]);
    let ids: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
    let created = join_all(ids.iter().map(|id| agent.create(id, 64, |_| {}))).await;
    for (id, c) in ids.iter().zip(&created) {
        let c = c
            .as_ref()
            .unwrap_or_else(|e| panic!("create {id}: {e}\n{}", agent.log()));
        assert_eq!(
            pb::CapsuleState::try_from(c.state).unwrap(),
            pb::CapsuleState::Running
        );
    }
    let outputs = join_all(ids.iter().map(|id| agent.sh(id, "hostname; echo $((6*7))"))).await;
    for (id, (out, code)) in ids.iter().zip(outputs) {
        assert_eq!((out.as_str(), code), (format!("{id}\n42\n").as_str(), 0));
    }
    let addresses: HashSet<String> = created
        .iter()
        .map(|c| c.as_ref().unwrap().address.clone())
        .collect();
    assert_eq!(addresses.len(), 20, "every capsule has its own address");
    let rpc = agent.rpc();
    join_all(ids.iter().map(|id| {
        let rpc = rpc.clone();
        async move {
            rpc.destroy_capsule(&pb::DestroyCapsuleRequest {
                capsule_id: id.clone(),
            })
            .await
            .unwrap()
        }
    }))
    .await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(agent.leftovers(&refs), Vec::<String>::new());
    assert!(agent.netns_count() <= 2 + 1, "only the slot pool remains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capsules_cannot_see_or_reach_each_other_or_the_host() {
    require_root!();
    let agent = Agent::start(&[]);
    let a = agent.create("iso-a", 64, |_| {}).await.unwrap();
    let b = agent.create("iso-b", 64, |_| {}).await.unwrap();
    // A host service on every address, on a port the capsules might try.
    let host = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host.local_addr().unwrap().port();

    agent
        .sh(
            "iso-a",
            "echo secret > /tmp/only-a; sleep 300 >/dev/null 2>&1 &",
        )
        .await;
    let (ps, _) = agent.sh("iso-b", "ps; ls /tmp").await;
    assert!(!ps.contains("sleep 300") && !ps.contains("only-a"), "{ps}");
    let (ps, _) = agent.sh("iso-a", "ps").await;
    assert!(ps.contains("sleep 300"), "{ps}");

    // B cannot reach A's envd; nobody reaches the host.
    let (_, code) = agent
        .sh("iso-b", &format!("nc -w 2 {} 49983 </dev/null", a.address))
        .await;
    assert_ne!(code, 0, "capsule B reached capsule A");
    let veth_gw = "$(ip route | awk '/default/ {print $3}')";
    let (_, code) = agent
        .sh(
            "iso-b",
            &format!("nc -w 2 {veth_gw} {host_port} </dev/null"),
        )
        .await;
    assert_ne!(code, 0, "capsule B reached a host service");
    let (_, code) = agent
        .sh("iso-a", "nc -w 2 169.254.169.254 80 </dev/null")
        .await;
    assert_ne!(code, 0, "capsule A reached link-local metadata");
    // The host reaches both (the agent's own path into capsules).
    let (out, code) = agent.sh("iso-b", "echo ok").await;
    assert_eq!((out.as_str(), code), ("ok\n", 0));
    drop(host);
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_limit_is_enforced_and_the_oom_is_reported() {
    require_root!();
    let agent = Agent::start(&[]);
    agent.create("oom", 32, |_| {}).await.unwrap();
    let (_, code) = agent
        .sh(
            "oom",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
        )
        .await;
    assert_ne!(code, 0, "a 100 MB string fit in a 32 MB capsule");
    let metrics = agent
        .rpc()
        .get_metrics(&pb::GetMetricsRequest {
            capsule_id: "oom".into(),
        })
        .await
        .unwrap();
    assert!(metrics.metrics[0].oom_kills >= 1, "{metrics:?}");
    assert!(metrics.metrics[0].memory_limit_bytes <= 32 << 20);
    // envd survived its capsule's OOM and still answers: init is the OOM
    // killer's last choice, the workload its first.
    assert_eq!(agent.sh("oom", "echo alive").await, ("alive\n".into(), 0));
    // Lowering init's score needs CAP_SYS_RESOURCE, which a real host's root
    // has (and this test machine's root lacks): check it where it can hold.
    let scores = agent
        .sh("oom", "cat /proc/1/oom_score_adj /proc/self/oom_score_adj")
        .await;
    let expected_init = if has_cap_sys_resource() { "-900" } else { "0" };
    assert_eq!(scores, (format!("{expected_init}\n100\n"), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_stops_progress_and_resume_continues_it() {
    require_root!();
    let agent = Agent::start(&[]);
    agent.create("pz", 64, |_| {}).await.unwrap();
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done".into(),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut events = agent.process("pz").start(&req).await.unwrap();
    let last_number = |buf: &str| {
        buf.lines()
            .rev()
            .find_map(|l| l.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut buf = String::new();
    let mut read_for = async |d: Duration, buf: &mut String| {
        let until = tokio::time::Instant::now() + d;
        while let Ok(Some(ev)) = tokio::time::timeout_at(until, events.next()).await {
            if let Some(process_event::Event::Data(d)) = ev.unwrap().event.and_then(|e| e.event) {
                if let Some(process_event::data_event::Output::Stdout(b)) = d.output {
                    buf.push_str(&String::from_utf8_lossy(&b));
                }
            }
        }
    };
    read_for(Duration::from_millis(500), &mut buf).await;
    let before = last_number(&buf);
    assert!(before > 0);
    agent
        .rpc()
        .pause_capsule(&pb::PauseCapsuleRequest {
            capsule_id: "pz".into(),
        })
        .await
        .unwrap();
    read_for(Duration::from_millis(300), &mut buf).await; // what was in flight
    let at_pause = last_number(&buf);
    read_for(Duration::from_secs(1), &mut buf).await;
    assert_eq!(
        last_number(&buf),
        at_pause,
        "the loop progressed while paused"
    );
    assert_eq!(agent.state("pz").await, pb::CapsuleState::Paused);

    let err = agent
        .rpc()
        .pause_capsule(&pb::PauseCapsuleRequest {
            capsule_id: "pz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);

    agent
        .rpc()
        .resume_capsule(&pb::ResumeCapsuleRequest {
            capsule_id: "pz".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    read_for(Duration::from_millis(700), &mut buf).await;
    assert!(
        last_number(&buf) > at_pause + 3,
        "the loop did not continue after resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_with_sigkill_readopts_its_capsules() {
    require_root!();
    let mut agent = Agent::start(&[]);
    agent.create("keep-running", 64, |_| {}).await.unwrap();
    agent.create("keep-paused", 64, |_| {}).await.unwrap();
    agent.sh("keep-running", "echo before > /tmp/mark").await;
    agent
        .rpc()
        .pause_capsule(&pb::PauseCapsuleRequest {
            capsule_id: "keep-paused".into(),
        })
        .await
        .unwrap();

    agent.kill();
    agent.spawn();

    assert_eq!(agent.state("keep-running").await, pb::CapsuleState::Running);
    assert_eq!(agent.state("keep-paused").await, pb::CapsuleState::Paused);
    assert_eq!(
        agent.sh("keep-running", "cat /tmp/mark").await,
        ("before\n".into(), 0)
    );
    agent
        .rpc()
        .resume_capsule(&pb::ResumeCapsuleRequest {
            capsule_id: "keep-paused".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        agent.sh("keep-paused", "echo back").await,
        ("back\n".into(), 0)
    );
    for id in ["keep-running", "keep-paused"] {
        agent
            .rpc()
            .destroy_capsule(&pb::DestroyCapsuleRequest {
                capsule_id: id.into(),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        agent.leftovers(&["keep-running", "keep-paused"]),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_typed_errors_and_leave_nothing() {
    require_root!();
    let agent = Agent::start(&[]);
    let code =
        |r: Result<pb::CapsuleInfo, warren_proto::connect::ConnectError>| r.unwrap_err().code;
    assert_eq!(
        code(
            agent
                .create("bad1", 64, |r| r.template = "no-such-template".into())
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(agent.create("bad2", 0, |_| {}).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(agent.create("bad3", 64, |r| r.vcpus = 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(agent.create("../etc", 64, |_| {}).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(agent.create("bad4", 64, |r| r.memory_mb = u32::MAX).await),
        Code::InvalidArgument
    );
    agent.create("dup", 64, |_| {}).await.unwrap();
    assert_eq!(
        code(agent.create("dup", 64, |_| {}).await),
        Code::AlreadyExists
    );
    let rpc = agent.rpc();
    let err = rpc
        .destroy_capsule(&pb::DestroyCapsuleRequest {
            capsule_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    let err = rpc
        .resume_capsule(&pb::ResumeCapsuleRequest {
            capsule_id: "dup".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);
    let wrong = AgentClient::new(
        Client::builder(format!("http://{}", agent.rpc_addr))
            .build()
            .unwrap(),
    );
    let err = wrong
        .list_capsules(&pb::ListCapsulesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unauthenticated);
    let list = rpc
        .list_capsules(&pb::ListCapsulesRequest {})
        .await
        .unwrap();
    assert_eq!(
        list.capsules
            .iter()
            .map(|c| c.capsule_id.as_str())
            .collect::<Vec<_>>(),
        ["dup"]
    );
    assert_eq!(
        agent.leftovers(&["bad1", "bad2", "bad3", "bad4"]),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_capsules_are_paused_and_proxied_traffic_counts_as_activity() {
    require_root!();
    let agent = Agent::start(&["--reap-interval", "0.2"]);
    agent
        .create("idle", 64, |r| r.timeout_sec = 2)
        .await
        .unwrap();
    agent
        .create("busy", 64, |r| r.timeout_sec = 2)
        .await
        .unwrap();
    let http = reqwest_lite(agent.proxy_addr);
    let started = Instant::now();
    let mut paused_ids = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        http("busy").await; // user traffic through the proxy
        let list = agent
            .rpc()
            .list_capsules(&pb::ListCapsulesRequest {})
            .await
            .unwrap();
        paused_ids.extend(list.auto_paused_ids);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(agent.state("idle").await, pb::CapsuleState::Paused);
    assert_eq!(agent.state("busy").await, pb::CapsuleState::Running);
    assert_eq!(paused_ids, ["idle"]);
}

/// GET envd's /health of a capsule through the public side of the proxy.
fn reqwest_lite(
    proxy: SocketAddr,
) -> impl Fn(&'static str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    move |id| {
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
            let req = format!(
                "GET /health HTTP/1.1\r\nhost: x\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: 49983\r\nconnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            assert!(
                out.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&out)
            );
        })
    }
}
