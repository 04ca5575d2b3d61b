//! `warren-agent run`: wires the host agent together — backend, network
//! slots, the data-plane proxy, the sandbox manager, the lifecycle RPC and
//! the idle reaper, and the link to the control plane (registration,
//! heartbeats) — and runs it until SIGTERM (capsules keep running; a
//! restarted agent re-adopts them) or a `Terminate` call.

pub mod admin;
pub mod control_link;
pub mod rpc;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use http_body_util::BodyExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use ipnet::Ipv4Net;
use tokio::sync::Notify;
use warren_proto::{
    agent::v1::agent_router,
    connect::{ConnectError, error_response},
};

use warren_backend::{
    Backend, BackendError, BackendKind,
    firecracker::{FirecrackerBackend, FirecrackerConfig},
    namespace::{InitCommand, NamespaceBackend, NamespaceConfig},
};
use warren_edge::{Proxy, ProxyConfig, RouteTable, Routes, Secret, StartError};
use warren_netslot::{NetConfig, NetError, SlotManager};
use warren_template::{IdMap, TemplateStore};

use crate::manager::{Manager, ManagerConfig, ManagerError};

/// Which backend runs capsules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// Firecracker where KVM, a firecracker binary and a guest kernel are
    /// present; namespaces otherwise.
    Auto,
    Namespace,
    Firecracker,
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    pub rpc_listen: SocketAddr,
    pub proxy_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Where the control plane reaches the proxy (default: from proxy_listen).
    pub proxy_advertise: Option<String>,
    /// The control plane's token: RPC bearer and the relay's internal token.
    pub token: String,
    pub backend: BackendChoice,
    pub cores: Option<usize>,
    pub domain: Option<String>,
    pub envd_bin: PathBuf,
    pub busybox: PathBuf,
    pub microvm: MicroVmConfig,
    pub net_prefix: String,
    pub nft_table: String,
    pub slot_pool: usize,
    pub capsule_net: Option<Ipv4Net>,
    pub veth_net: Option<Ipv4Net>,
    pub cgroup_parent: String,
    pub reap_interval: Duration,
    pub manager: Option<ManagerConfig>,
    /// The control plane to register with and heartbeat to; without it
    /// the host is kept online by whoever registered it (`warren up`).
    pub control: Option<control_link::ControlLink>,
}

/// Settings of the Firecracker backend.
#[derive(Clone, Debug)]
pub struct MicroVmConfig {
    /// The `firecracker` binary (default: the first in `PATH`).
    pub firecracker_bin: Option<PathBuf>,
    /// The guest kernel (default: `<data_dir>/kernels/vmlinux`).
    pub kernel: Option<PathBuf>,
    /// Transmit queue length of each microVM's TAP.
    pub tap_txqueuelen: u32,
    /// Firecracker instance directories (API and page-server sockets).
    pub runtime_dir: PathBuf,
}

impl Default for MicroVmConfig {
    fn default() -> Self {
        Self {
            firecracker_bin: None,
            kernel: None,
            tap_txqueuelen: warren_netslot::DEFAULT_TAP_TXQUEUELEN,
            runtime_dir: PathBuf::from("/run/warren/vmm"),
        }
    }
}

impl MicroVmConfig {
    /// The `firecracker` binary: as configured, else the first in `PATH`.
    fn firecracker_bin(&self) -> Option<PathBuf> {
        self.firecracker_bin.clone().or_else(|| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| std::path::Path::new(dir).join("firecracker"))
                .find(|p| p.is_file())
        })
    }

    fn kernel(&self, data_dir: &std::path::Path) -> PathBuf {
        self.kernel
            .clone()
            .unwrap_or_else(|| data_dir.join("kernels").join("vmlinux"))
    }
}

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    #[error("network slots: {0}")]
    Net(#[from] NetError),
    #[error("proxy: {0}")]
    Proxy(#[from] StartError),
    #[error("sandbox manager: {0}")]
    Manager(#[from] ManagerError),
    #[error("control plane: {0}")]
    Control(#[from] control_link::LinkError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

/// Why this host cannot run microVMs, if it cannot.
fn firecracker_missing(config: &AgentConfig) -> Option<String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm is missing".into());
    }
    if config.microvm.firecracker_bin().is_none() {
        return Some("no firecracker binary (--firecracker-bin, FIRECRACKER_BIN or PATH)".into());
    }
    let kernel = config.microvm.kernel(&config.data_dir);
    if !kernel.is_file() {
        return Some(format!(
            "no guest kernel at {} (--kernel, WARREN_KERNEL; see images/KERNEL.md)",
            kernel.display()
        ));
    }
    None
}

/// The backend this host runs: as chosen, or for `auto` Firecracker where
/// `/dev/kvm`, a firecracker binary and a guest kernel are present.
async fn choose_backend(
    config: &AgentConfig,
    slots: &Arc<SlotManager>,
    proxy: &Arc<Proxy>,
) -> Result<Arc<dyn Backend>, AgentError> {
    let missing = firecracker_missing(config);
    match (config.backend, missing) {
        (BackendChoice::Firecracker, Some(reason)) => {
            Err(AgentError::Backend(BackendError::Unsupported {
                kind: BackendKind::Firecracker,
                reason,
            }))
        }
        (BackendChoice::Firecracker | BackendChoice::Auto, None) => {
            firecracker_backend(config, slots, proxy).await
        }
        (BackendChoice::Auto, Some(reason)) => {
            tracing::info!(%reason, "no microVMs on this host: using namespaces");
            namespace_backend(config)
        }
        (BackendChoice::Namespace, _) => namespace_backend(config),
    }
}

async fn firecracker_backend(
    config: &AgentConfig,
    slots: &Arc<SlotManager>,
    proxy: &Arc<Proxy>,
) -> Result<Arc<dyn Backend>, AgentError> {
    let vm = &config.microvm;
    let mut fc = FirecrackerConfig::new(
        config.data_dir.clone(),
        vm.firecracker_bin().unwrap_or_default(),
        vm.kernel(&config.data_dir),
        config.envd_bin.clone(),
    );
    fc.busybox = config.busybox.clone();
    fc.tap_txqueuelen = vm.tap_txqueuelen;
    fc.runtime_dir = vm.runtime_dir.clone();
    let cores: Arc<dyn warren_runtime::Cores> = proxy.clone();
    Ok(Arc::new(
        FirecrackerBackend::new(fc, slots.clone(), cores).await?,
    ))
}

fn namespace_backend(config: &AgentConfig) -> Result<Arc<dyn Backend>, AgentError> {
    let mut ns = NamespaceConfig::new(
        config.data_dir.clone(),
        InitCommand::Envd {
            binary: config.envd_bin.clone(),
            port: warren_proto::addr::ENVD_PORT,
        },
    );
    ns.busybox = config.busybox.clone();
    ns.cgroup_parent = config.cgroup_parent.clone();
    Ok(Arc::new(NamespaceBackend::new(ns)?))
}

/// Serves the lifecycle RPC until `stop` is notified.
async fn serve_rpc(
    listener: tokio::net::TcpListener,
    router: warren_proto::connect::Router,
    token: Arc<Secret>,
    stop: Arc<Notify>,
) {
    let router = Arc::new(router);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "rpc accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.notified() => return,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    let token = token.clone();
                    async move {
                        if req.uri().path() == "/healthz" {
                            let body =
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok\n"))
                                    .map_err(|never| match never {})
                                    .boxed_unsync();
                            return Ok::<_, std::convert::Infallible>(http::Response::new(body));
                        }
                        let presented = req
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or_default();
                        if !token.matches(presented.as_bytes()) {
                            return Ok(error_response(&ConnectError::unauthenticated(
                                "missing or wrong control-plane token (Authorization: Bearer)",
                            )));
                        }
                        Ok(router.call(req).await)
                    }
                });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Runs the agent until `shutdown` resolves or `Terminate` is called.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    if config.token.trim().is_empty() {
        return Err(AgentError::Config(
            "the control plane's token is required (--token-file or WARREN_AGENT_TOKEN)".into(),
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io(format!("creating {}", config.data_dir.display())))?;
    let mut net = NetConfig::new(config.data_dir.join("net"));
    net.prefix = config.net_prefix.clone();
    net.table = config.nft_table.clone();
    net.pool_size = config.slot_pool;
    if let Some(n) = config.capsule_net {
        net.capsule_net = n;
    }
    if let Some(n) = config.veth_net {
        net.veth_net = n;
    }
    let slots = Arc::new(SlotManager::open(net).await?);

    let token = Arc::new(Secret::new(config.token.trim()));
    let mut proxy_config = ProxyConfig {
        listen: config.proxy_listen,
        domain: config.domain.clone(),
        agent_token: Some(Secret::new(config.token.trim())),
        ..ProxyConfig::default()
    };
    if let Some(cores) = config.cores {
        proxy_config.cores = cores.max(1);
    }
    let proxy = Arc::new(Proxy::start(
        proxy_config,
        Arc::new(Routes::new(RouteTable::default())),
    )?);
    let proxy_address = config.proxy_advertise.clone().unwrap_or_else(|| {
        let addr = proxy.local_addr();
        if addr.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), addr.port()).to_string()
        } else {
            addr.to_string()
        }
    });
    let admin = std::net::TcpListener::bind(config.admin_listen).map_err(io(format!(
        "binding the admin address {}",
        config.admin_listen
    )))?;
    let for_admin = proxy.clone();
    admin::spawn(admin, Arc::new(move || for_admin.render_metrics()))
        .map_err(io("serving admin metrics"))?;

    let backend = choose_backend(&config, &slots, &proxy).await?;
    tracing::info!(backend = ?backend.kind(), "backend ready");

    let manager_config = config
        .manager
        .clone()
        .unwrap_or_else(|| ManagerConfig::new(config.data_dir.clone()));
    let templates = TemplateStore::new(
        config.data_dir.join("templates"),
        IdMap::default(),
        config.busybox.clone(),
    )
    .with_envd(config.envd_bin.clone());
    let manager = Manager::open(manager_config, backend, slots, proxy.clone(), templates).await?;

    let rpc_listener = tokio::net::TcpListener::bind(config.rpc_listen)
        .await
        .map_err(io(format!("binding the RPC address {}", config.rpc_listen)))?;
    let terminate = Arc::new(Notify::new());
    let router = agent_router(Arc::new(rpc::Rpc {
        manager: manager.clone(),
        terminate: terminate.clone(),
        proxy_address: proxy_address.clone(),
    }));
    let stop_rpc = Arc::new(Notify::new());
    let rpc_task = tokio::spawn(serve_rpc(rpc_listener, router, token, stop_rpc.clone()));
    tracing::info!(
        rpc = %config.rpc_listen,
        proxy = %proxy_address,
        admin = %config.admin_listen,
        data_dir = %config.data_dir.display(),
        "warren-agent running"
    );

    // Registered (when asked to) only once the RPC serves, so the control
    // plane's first pull finds it.
    let heartbeats = match config.control.clone() {
        Some(link) => {
            let creds = link
                .credentials(&config.data_dir, config.token.trim(), &proxy_address)
                .await?;
            Some(tokio::spawn(link.heartbeat(creds)))
        }
        None => None,
    };

    let reaper_manager = manager.clone();
    let every = config.reap_interval;
    let reaper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            reaper_manager.reap_idle().await;
        }
    });

    tokio::select! {
        () = shutdown => tracing::info!("stopping (capsules keep running)"),
        () = terminate.notified() => tracing::info!("terminated by the control plane: every capsule destroyed"),
    }
    reaper.abort();
    if let Some(h) = heartbeats {
        h.abort();
    }
    stop_rpc.notify_one();
    let _ = rpc_task.await;
    let proxy_for_shutdown = proxy.clone();
    let _ = tokio::task::spawn_blocking(move || proxy_for_shutdown.shutdown()).await;
    Ok(())
}
