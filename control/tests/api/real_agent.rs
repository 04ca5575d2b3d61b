//! The real `warren-agent` (namespace backend, network slots, data plane)
//! for the tests that need capsules that run: builds, snapshots. It runs
//! from the cargo target directory (`make test` builds every binary
//! first), as root, with its own data directory, ports, address block
//! (shared with the agent's own tests through `/tmp/warren-agent-test-blocks`
//! locks), nftables table and cgroup parent, all removed on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use warren_proto::agent::v1 as pb;
use warren_proto::connect::Client as RpcClient;

use crate::common::*;

pub const TOKEN: &str = "real-agent-test-token-0123456789";

/// The workspace binary `name` built beside this test (see
/// `warren_testkit::built_bin`).
pub fn binary(name: &str) -> PathBuf {
    warren_testkit::built_bin(name, None)
}

/// Whether the real agent can run here: a non-root user skips, with the
/// reason; as root (CI) a missing tool or binary fails the test.
pub fn available() -> bool {
    warren_testkit::need_root_and_tools("namespaces, cgroups, nftables", &[("nft", "nftables")])
}

/// Returns from the test when the real agent cannot run here.
#[macro_export]
macro_rules! require_real_agent {
    () => {
        if !$crate::real_agent::available() {
            return;
        }
    };
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// An address block nobody else on this machine uses, held while alive.
struct Block {
    n: u8,
    _lock: File,
}

fn block() -> Block {
    let dir = PathBuf::from("/tmp/warren-agent-test-blocks");
    std::fs::create_dir_all(&dir).expect("block dir");
    for n in 1..=250u8 {
        let f = File::create(dir.join(format!("{n}.lock"))).expect("lock file");
        // SAFETY: flock on a descriptor we own; non-blocking.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Block { n, _lock: f };
        }
    }
    panic!("no free test address block");
}

/// One running agent; everything it made is removed on drop.
pub struct RealAgent {
    child: Option<Child>,
    args: Vec<String>,
    /// Flags of `run` only (not of `purge`).
    run_args: Vec<String>,
    prefix: String,
    pub rpc_addr: SocketAddr,
    pub proxy_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    _block: Block,
}

impl RealAgent {
    pub fn start() -> RealAgent {
        Self::start_with(&[])
    }

    /// An agent run with more flags (`run` ones only).
    pub fn start_with(run_args: &[&str]) -> RealAgent {
        let block = block();
        let dir = tempfile::tempdir().expect("agent dir");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod agent dir");
        let prefix = format!("wc{}", block.n);
        let rpc_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
        let d = dir.path().display().to_string();
        let args: Vec<String> = [
            "--data-dir",
            &d,
            "--token-file",
            &format!("{d}/token"),
            "--rpc-listen",
            &rpc_addr.to_string(),
            "--proxy-listen",
            &proxy_addr.to_string(),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--net-prefix",
            &prefix,
            "--nft-table",
            &prefix,
            "--capsule-net",
            &format!("10.213.{}.0/24", block.n),
            "--veth-net",
            &format!("10.214.{}.0/24", block.n),
            "--cgroup-parent",
            &prefix,
            "--slot-pool",
            "2",
            "--cores",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut agent = RealAgent {
            child: None,
            args,
            run_args: run_args.iter().map(|s| s.to_string()).collect(),
            prefix,
            rpc_addr,
            proxy_addr,
            dir,
            _block: block,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.stderr"))
            .expect("agent log");
        let child = Command::new(binary("warren-agent"))
            .args(&self.args)
            .args(&self.run_args)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start warren-agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.rpc_addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "agent did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the agent (SIGKILL) and starts it again with the same flags.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.stderr")).unwrap_or_default()
    }

    pub fn rpc(&self) -> pb::AgentClient {
        pb::AgentClient::new(
            RpcClient::builder(format!("http://{}", self.rpc_addr))
                .header(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("header"),
                )
                .build()
                .expect("client"),
        )
    }

    /// Templates the agent holds.
    pub async fn templates(&self) -> Vec<String> {
        let info = self
            .rpc()
            .get_host_info(&pb::GetHostInfoRequest {})
            .await
            .expect("host info");
        let mut names: Vec<String> = info.templates.into_iter().map(|t| t.name).collect();
        names.sort();
        names
    }

    /// Capsules the agent runs.
    pub async fn capsules(&self) -> Vec<String> {
        self.rpc()
            .list_capsules(&pb::ListCapsulesRequest {})
            .await
            .expect("list capsules")
            .capsules
            .into_iter()
            .map(|c| c.capsule_id)
            .collect()
    }

    /// Registers this agent as a regular host of `c` (through an
    /// administrator's session) and pulls its state once; the host id.
    pub async fn register(&self, c: &Control, admin_token: &str) -> String {
        let http = c.client().with(admin_token);
        let (_, created) = http.post("/v1/hosts", json!({ "type": "regular" })).await;
        let (st, reg) = c
            .client()
            .post(
                "/v1/hosts/register",
                json!({
                    "token": created["registration_token"],
                    "address": self.rpc_addr.to_string(),
                    "proxy_address": self.proxy_addr.to_string(),
                    "agent_token": TOKEN,
                }),
            )
            .await;
        assert_eq!(st, 201, "{reg}");
        let id = reg["host"]["id"].as_str().expect("host id").to_string();
        sync(c, &id).await;
        id
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        // Every capsule destroyed through the agent, then its network state
        // and cgroup parents removed.
        let rpc = self.rpc();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(async move { rpc.terminate(&pb::TerminateRequest {}).await })
        })
        .join();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        {
            let bin = binary("warren-agent");
            let mut purge = vec!["purge".to_string()];
            purge.extend(self.args.iter().cloned());
            let _ = Command::new(bin)
                .args(&purge)
                .stderr(Stdio::null())
                .status();
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.prefix));
            }
        }
    }
}

/// A control plane with build workers, a real agent registered as its
/// host, an administrator and an API key: (control, agent, admin, key).
pub async fn warren_with_real_agent(workers: usize) -> (Control, RealAgent, User, String) {
    let db = fresh_db().await;
    let mut cfg = config(&db);
    cfg.build_workers = workers;
    cfg.agent_timeout_secs = 120;
    let c = Control::start(cfg).await;
    let agent = RealAgent::start();
    let http = c.client();
    let admin = signup(&http, "builder@example.com").await;
    make_admin(&c.app, &admin).await;
    let key = api_key(&http, &admin).await;
    agent.register(&c, &admin.token).await;
    (c, agent, admin, key)
}
