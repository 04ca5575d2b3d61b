//! The real `warren-agent` binary for end-to-end tests: one agent per test
//! with its own data directory, ports, addresses, nftables table and cgroup
//! parent, driven through the lifecycle RPC and envd's protocol relayed by
//! the proxy; everything it made is removed on drop.

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use http::{HeaderName, HeaderValue};
use warren_proto::{
    agent::v1::{self as pb, AgentClient},
    connect::Client,
    process::{ProcessClient, ProcessConfig, StartRequest, process_event},
};

pub const TOKEN: &str = "test-control-plane-token";

pub fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|v| v.trim().to_owned())
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warren-agent"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A /24 pair of address blocks nobody else on this machine is using,
/// held with an flock for the life of the test (released on crash).
pub struct Block {
    pub n: u8,
    _lock: File,
}

pub fn block() -> Block {
    let dir = PathBuf::from("/tmp/warren-agent-test-blocks");
    std::fs::create_dir_all(&dir).unwrap();
    for n in 1..=250u8 {
        let f = File::create(dir.join(format!("{n}.lock"))).unwrap();
        // SAFETY: flock on a descriptor we own; non-blocking.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Block { n, _lock: f };
        }
    }
    panic!("no free test address block");
}

/// One running agent with its own data dir, ports, addresses, nftables
/// table and cgroup parent; everything removed on drop.
pub struct Agent {
    child: Option<Child>,
    args: Vec<String>,
    pub prefix: String,
    pub rpc_addr: SocketAddr,
    pub proxy_addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    _block: Block,
}

impl Agent {
    pub fn start(extra: &[&str]) -> Agent {
        let block = block();
        let data_dir = tempfile::tempdir().unwrap();
        let prefix = format!("wt{}", block.n);
        let rpc_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::write(data_dir.path().join("token"), TOKEN).unwrap();
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            data_dir.path().display().to_string(),
            "--token-file".into(),
            data_dir.path().join("token").display().to_string(),
            "--rpc-listen".into(),
            rpc_addr.to_string(),
            "--proxy-listen".into(),
            proxy_addr.to_string(),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--net-prefix".into(),
            prefix.clone(),
            "--nft-table".into(),
            prefix.clone(),
            "--capsule-net".into(),
            format!("10.213.{}.0/24", block.n),
            "--veth-net".into(),
            format!("10.214.{}.0/24", block.n),
            "--cgroup-parent".into(),
            prefix.clone(),
            "--slot-pool".into(),
            "2".into(),
            "--cores".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut agent = Agent {
            child: None,
            args,
            prefix,
            rpc_addr,
            proxy_addr,
            data_dir,
            _block: block,
        };
        agent.spawn();
        agent
    }

    pub fn spawn(&mut self) {
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn try_spawn(&mut self) -> Result<(), String> {
        if !bin_dir().join("envd").exists() {
            return Err("envd is not built beside warren-agent: run `cargo build -p envd`".into());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join("agent.stderr"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_warren-agent"))
            .args(&self.args)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.rpc_addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("agent did not start:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("agent.stderr")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn rpc(&self) -> AgentClient {
        AgentClient::new(
            Client::builder(format!("http://{}", self.rpc_addr))
                .header(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
                )
                .build()
                .unwrap(),
        )
    }

    /// envd of capsule `id`, through the data plane's internal relay.
    pub fn process(&self, id: &str) -> ProcessClient {
        let h = |n: &'static str| HeaderName::from_static(n);
        ProcessClient::new(
            Client::builder(format!("http://{}", self.proxy_addr))
                .header(h("e2b-sandbox-id"), HeaderValue::from_str(id).unwrap())
                .header(h("e2b-sandbox-port"), HeaderValue::from_static("49983"))
                .header(h("x-warren-agent-token"), HeaderValue::from_static(TOKEN))
                .build()
                .unwrap(),
        )
    }

    pub async fn create(
        &self,
        id: &str,
        memory_mb: u32,
        extra: impl FnOnce(&mut pb::CreateCapsuleRequest),
    ) -> Result<pb::CapsuleInfo, warren_proto::connect::ConnectError> {
        let mut req = pb::CreateCapsuleRequest {
            capsule_id: id.into(),
            template: "tiny".into(),
            vcpus: 1,
            memory_mb,
            disk_mb: 64,
            ..Default::default()
        };
        extra(&mut req);
        self.rpc()
            .create_capsule(&req)
            .await
            .map(|r| r.capsule.unwrap())
    }

    /// Runs `sh -c script` in a capsule; returns (stdout, exit code).
    pub async fn sh(&self, id: &str, script: &str) -> (String, i32) {
        let req = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut events = self.process(id).start(&req).await.unwrap();
        let mut out = Vec::new();
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap_or_else(|e| {
                panic!(
                    "stream of {script:?} in {id} broke: {e}\nagent log:\n{}",
                    self.log()
                )
            });
            match ev.event.and_then(|e| e.event) {
                Some(process_event::Event::Data(d)) => {
                    if let Some(process_event::data_event::Output::Stdout(b)) = d.output {
                        out.extend_from_slice(&b);
                    }
                }
                Some(process_event::Event::End(end)) => {
                    return (String::from_utf8_lossy(&out).into_owned(), end.exit_code);
                }
                _ => {}
            }
        }
        panic!("stream ended without an end event");
    }

    pub async fn state(&self, id: &str) -> pb::CapsuleState {
        let list = self
            .rpc()
            .list_capsules(&pb::ListCapsulesRequest {})
            .await
            .unwrap();
        let c = list.capsules.iter().find(|c| c.capsule_id == id).unwrap();
        pb::CapsuleState::try_from(c.state).unwrap()
    }

    /// Names of this agent's leftovers on the host: namespaces, links,
    /// cgroups and nft set elements that are not the idle pool's.
    pub fn leftovers(&self, ids: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            for id in ids {
                let p = hierarchy.path().join(&self.prefix).join(id);
                if p.exists() {
                    found.push(format!("cgroup {}", p.display()));
                }
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for id in ids {
            if mounts
                .lines()
                .any(|l| l.contains(&format!("/capsules/{id}/")))
            {
                found.push(format!("mount of {id}"));
            }
            if self.data_dir.path().join("capsules").join(id).exists() {
                found.push(format!("capsule dir of {id}"));
            }
            if self
                .data_dir
                .path()
                .join("agent/capsules")
                .join(format!("{id}.json"))
                .exists()
            {
                found.push(format!("record of {id}"));
            }
        }
        let loops = Command::new("losetup").arg("-a").output().unwrap();
        let loops = String::from_utf8_lossy(&loops.stdout);
        for id in ids {
            if loops.contains(&format!("/capsules/{id}/")) {
                found.push(format!("loop device of {id}"));
            }
        }
        found
    }

    pub fn netns_count(&self) -> usize {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("{}-ns-", self.prefix)))
            .count()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Destroy every capsule through the agent (restarting it if a test
        // killed it), then remove its network state and cgroup parents.
        if self.child.is_none() && self.try_spawn().is_err() {
            return;
        }
        let rpc = self.rpc();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move { rpc.terminate(&pb::TerminateRequest {}).await })
        })
        .join();
        self.kill();
        let mut purge = vec!["purge".to_string()];
        purge.extend(self.args.iter().cloned());
        let _ = Command::new(env!("CARGO_BIN_EXE_warren-agent"))
            .args(&purge)
            .stderr(Stdio::null())
            .status();
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.prefix));
            }
        }
    }
}

#[macro_export]
macro_rules! require_root {
    () => {
        if !warren_testkit::need_root("the agent makes namespaces, cgroups, nftables tables") {
            return;
        }
    };
}
