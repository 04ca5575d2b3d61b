//! `warren-agent`: the Warren host agent. `warren-agent [run]` runs the
//! whole agent (capsules, network slots, data plane, lifecycle RPC);
//! `warren-agent proxy --routes FILE` runs the data-plane proxy alone, fed by
//! a routes file, so it can be run and benchmarked on its own;
//! `warren-agent template build minimal` builds a built-in template ahead of
//! time (with progress), `template list` and `template image` inspect them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use warren_agent::agent::{
    self, AgentConfig, BackendChoice, MicroVmConfig,
    control_link::{ControlLink, HostAuth},
};
use warren_agent::manager::ManagerConfig;
use warren_backend::Resources;
use warren_edge::{Proxy, ProxyConfig, RouteTable, Routes, Secret};
use warren_logging::{self as logging, LogFile};
use warren_netslot::{NetConfig, SlotManager};
use warren_template::{self as template, IdMap, TemplateStore, size};

#[derive(Debug, Parser)]
#[command(
    name = "warren-agent",
    version,
    about = "The Warren host agent: capsules, network slots and the io_uring data plane"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run(RunArgs),
    /// Remove this agent's network state (pooled slots, the nftables table,
    /// the slots file). Run it with the agent stopped and no capsules left
    /// (see the Terminate RPC).
    Purge(RunArgs),
    /// Run the data plane proxy alone, routing from a JSON routes file
    /// (reloaded when it changes and on SIGHUP).
    Proxy(ProxyArgs),
    /// Build, list and inspect this host's templates.
    Template(TemplateArgs),
}

#[derive(Debug, clap::Args)]
struct TemplateArgs {
    #[command(subcommand)]
    action: TemplateAction,
    /// Data directory (templates live in its `templates/`).
    #[arg(
        long,
        env = "WARREN_DIR",
        default_value = "/var/lib/warren",
        global = true
    )]
    data_dir: PathBuf,
    /// Static busybox the `tiny` template is made from.
    #[arg(
        long,
        env = "WARREN_BUSYBOX",
        default_value = "/bin/busybox",
        global = true
    )]
    busybox: PathBuf,
    /// envd binary copied into ext4 images (default: beside this binary).
    #[arg(long, env = "WARREN_ENVD_BIN", global = true)]
    envd_bin: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TemplateAction {
    /// Build a built-in template (`tiny`, or `minimal`: Debian bookworm from
    /// this host's apt mirror, a few minutes) unless it is already built.
    Build {
        name: String,
        /// Build it again and replace the current version.
        #[arg(long)]
        force: bool,
    },
    /// Make (once) and print the template's ext4 image (the microVM root drive).
    Image { name: String },
    /// List the templates with their sizes and defaults.
    List,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Data directory: templates, capsules, network state, logs.
    #[arg(long, env = "WARREN_DIR", default_value = "/var/lib/warren")]
    data_dir: PathBuf,
    /// Lifecycle RPC address (Connect over HTTP/1.1, bearer token).
    #[arg(long, env = "WARREN_AGENT_RPC_LISTEN", default_value = "0.0.0.0:5006")]
    rpc_listen: SocketAddr,
    /// Data-plane proxy address (user traffic and the envd relay).
    #[arg(long, env = "WARREN_PROXY_LISTEN", default_value = "0.0.0.0:5007")]
    proxy_listen: SocketAddr,
    /// Admin address: Prometheus metrics at /metrics.
    #[arg(long, env = "WARREN_ADMIN_LISTEN", default_value = "127.0.0.1:5008")]
    admin_listen: SocketAddr,
    /// Proxy address to advertise to the control plane (default: from --proxy-listen).
    #[arg(long, env = "WARREN_PROXY_ADVERTISE")]
    proxy_advertise: Option<String>,
    /// File holding the control plane's token (or set WARREN_AGENT_TOKEN).
    #[arg(long, env = "WARREN_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Capsule backend.
    #[arg(long, env = "WARREN_BACKEND", value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Data-plane cores (one io_uring runtime each); default: all.
    #[arg(long, env = "WARREN_PROXY_CORES")]
    cores: Option<usize>,
    /// Domain for host routing ({port}-{id}.{domain}).
    #[arg(long, env = "WARREN_DOMAIN")]
    domain: Option<String>,
    /// envd binary run inside capsules (default: beside this binary).
    #[arg(long, env = "WARREN_ENVD_BIN")]
    envd_bin: Option<PathBuf>,
    /// Static busybox the `tiny` template is made from.
    #[arg(long, env = "WARREN_BUSYBOX", default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// The firecracker binary (default: `firecracker` in PATH).
    #[arg(long, env = "FIRECRACKER_BIN")]
    firecracker_bin: Option<PathBuf>,
    /// microVM guest kernel, an uncompressed vmlinux (default:
    /// <data-dir>/kernels/vmlinux; see images/KERNEL.md).
    #[arg(long, env = "WARREN_KERNEL")]
    kernel: Option<PathBuf>,
    /// Transmit queue length of each microVM's TAP.
    #[arg(long, env = "WARREN_TAP_TXQUEUELEN", default_value_t = 5000)]
    tap_txqueuelen: u32,
    /// Firecracker API and page-server sockets (a tmpfs).
    #[arg(
        long,
        env = "WARREN_VMM_RUNTIME_DIR",
        default_value = "/run/warren/vmm"
    )]
    vmm_runtime_dir: PathBuf,
    /// Prefix of network namespaces and links (`<prefix>-ns-N`).
    #[arg(long, env = "WARREN_NET_PREFIX", default_value = "warren")]
    net_prefix: String,
    /// nftables table holding isolation and NAT rules.
    #[arg(long, env = "WARREN_NFT_TABLE", default_value = "warren")]
    nft_table: String,
    /// Network slots kept ready.
    #[arg(long, env = "WARREN_SLOT_POOL", default_value_t = 4)]
    slot_pool: usize,
    /// Capsule addresses (host-reachable), e.g. 10.11.0.0/16.
    #[arg(long, env = "WARREN_CAPSULE_NET")]
    capsule_net: Option<ipnet::Ipv4Net>,
    /// Host-side veth addresses, e.g. 10.12.0.0/16.
    #[arg(long, env = "WARREN_VETH_NET")]
    veth_net: Option<ipnet::Ipv4Net>,
    /// Parent of capsule cgroups.
    #[arg(long, env = "WARREN_CGROUP_PARENT", default_value = "warren")]
    cgroup_parent: String,
    /// Seconds between idle-reaper passes.
    #[arg(long, env = "WARREN_REAP_INTERVAL", default_value_t = 1.0)]
    reap_interval: f64,
    /// The control plane (`http://host:port`) to register with and send
    /// heartbeats to. Needs --host-id and --host-token, or
    /// --registration-token.
    #[arg(long, env = "WARREN_CONTROL_URL")]
    control_url: Option<String>,
    /// This host's id at the control plane (already registered).
    #[arg(long, env = "WARREN_HOST_ID", requires = "host_token")]
    host_id: Option<String>,
    /// This host's heartbeat token (already registered).
    #[arg(
        long,
        env = "WARREN_HOST_TOKEN",
        hide_env_values = true,
        requires = "host_id"
    )]
    host_token: Option<String>,
    /// One-time registration token from `POST /v1/hosts` (used once; the
    /// host's credentials are then kept in <data-dir>/agent/host.json).
    #[arg(
        long,
        env = "WARREN_REGISTRATION_TOKEN",
        hide_env_values = true,
        conflicts_with = "host_id"
    )]
    registration_token: Option<String>,
    /// The RPC address the control plane should use for this host
    /// (default: --rpc-listen, loopback when that is unspecified).
    #[arg(long, env = "WARREN_RPC_ADVERTISE")]
    rpc_advertise: Option<String>,
    /// Seconds between heartbeats to the control plane.
    #[arg(long, env = "WARREN_HEARTBEAT_INTERVAL", default_value_t = 10.0)]
    heartbeat_interval: f64,
    /// Default disk of a capsule whose create request names none: its
    /// private writable layer (namespace backend) or the size its root
    /// drive is grown to (microVMs). E.g. 5G, 2Gi, 1000M, 512Mi (G = 10^9
    /// bytes, Gi = 2^30).
    #[arg(long, env = "WARREN_DEFAULT_ROOTFS_SIZE", value_parser = disk_size)]
    default_rootfs_size: Option<u32>,
    /// Log as JSON lines.
    #[arg(long, env = "WARREN_LOG_JSON")]
    log_json: bool,
}

/// A disk size in MiB, for clap.
fn disk_size(s: &str) -> Result<u32, String> {
    size::parse_disk_mib(s, Resources::MIN_DISK_MB).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
struct ProxyArgs {
    /// Routes file: {"capsules": {"<id>": {"address": "10.11.0.2", "state": "running",
    /// "access_token": null, "envd_access_token": null,
    /// "limits": {"bandwidth": {"size": 1048576, "one_time_burst": 0, "refill_time": 1000}}}}}
    #[arg(long, env = "WARREN_ROUTES")]
    routes: PathBuf,
    /// Address the proxy listens on (every core binds it with SO_REUSEPORT).
    #[arg(long, default_value = "0.0.0.0:5007", env = "WARREN_PROXY_LISTEN")]
    listen: SocketAddr,
    /// Admin address serving Prometheus metrics at /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:5008", env = "WARREN_ADMIN_LISTEN")]
    admin: SocketAddr,
    /// Cores (one io_uring runtime each); default: all available.
    #[arg(long, env = "WARREN_PROXY_CORES")]
    cores: Option<usize>,
    /// Domain for host routing ({port}-{id}.{domain}).
    #[arg(long, env = "WARREN_DOMAIN")]
    domain: Option<String>,
    /// File holding the agent's internal token (X-Warren-Agent-Token);
    /// without it (or WARREN_AGENT_TOKEN) no request is internal.
    #[arg(long, env = "WARREN_AGENT_TOKEN_FILE")]
    agent_token_file: Option<PathBuf>,
    /// Time allowed for a request head, in seconds.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Keep-alive and relay idle timeout, in seconds.
    #[arg(long, default_value_t = 620.0)]
    idle_timeout: f64,
    /// Largest request head accepted, in bytes (431 beyond).
    #[arg(long, default_value_t = 32 * 1024)]
    max_head_bytes: usize,
    /// X-Forwarded-Proto sent upstream (https behind a TLS terminator).
    #[arg(long, default_value = "http")]
    forwarded_proto: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Proxy(args)) => {
            logging::init(false, None);
            run_proxy(args)
        }
        Some(Command::Run(args)) => run_agent(args),
        Some(Command::Purge(args)) => {
            logging::init(args.log_json, None);
            purge(args)
        }
        Some(Command::Template(args)) => {
            logging::init(false, None);
            template(args)
        }
        None => run_agent(cli.run),
    }
}

fn run_agent(args: RunArgs) -> anyhow::Result<()> {
    let log_file = LogFile::open(&args.data_dir.join("logs").join("agent.log"))
        .with_context(|| format!("opening the log file under {}", args.data_dir.display()))?;
    logging::init(args.log_json, Some(log_file.clone()));
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?,
        None => std::env::var("WARREN_AGENT_TOKEN").unwrap_or_default(),
    };
    let envd_bin = envd_beside_me(args.envd_bin.clone())?;
    let manager = args.default_rootfs_size.map(|mb| ManagerConfig {
        default_disk_mb: mb,
        ..ManagerConfig::new(args.data_dir.clone())
    });
    let control = control_link(&args)?;
    let config = AgentConfig {
        data_dir: args.data_dir,
        rpc_listen: args.rpc_listen,
        proxy_listen: args.proxy_listen,
        admin_listen: args.admin_listen,
        proxy_advertise: args.proxy_advertise,
        token,
        backend: args.backend,
        cores: args.cores,
        domain: args.domain,
        envd_bin,
        busybox: args.busybox,
        microvm: MicroVmConfig {
            firecracker_bin: args.firecracker_bin,
            kernel: args.kernel,
            tap_txqueuelen: args.tap_txqueuelen,
            runtime_dir: args.vmm_runtime_dir,
        },
        net_prefix: args.net_prefix,
        nft_table: args.nft_table,
        slot_pool: args.slot_pool,
        capsule_net: args.capsule_net,
        veth_net: args.veth_net,
        cgroup_parent: args.cgroup_parent,
        reap_interval: seconds(args.reap_interval, "reap-interval")?,
        manager,
        control,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("warren-agent")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match log_file.reopen() {
                    Ok(()) => tracing::info!("log file reopened"),
                    Err(e) => tracing::error!(error = %e, "cannot reopen the log file"),
                }
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        agent::run(config, shutdown)
            .await
            .map_err(anyhow::Error::from)
    })
}

fn envd_beside_me(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => Ok(std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("envd")),
    }
}

fn template(args: TemplateArgs) -> anyhow::Result<()> {
    let mut store = TemplateStore::new(
        args.data_dir.join("templates"),
        IdMap::default(),
        args.busybox,
    );
    let envd = envd_beside_me(args.envd_bin)?;
    if envd.exists() {
        store = store.with_envd(envd);
    }
    match args.action {
        TemplateAction::Build { name, force } => {
            anyhow::ensure!(
                template::is_builtin(&name),
                "only the built-in templates can be built here ({}, {})",
                template::TINY,
                template::MINIMAL
            );
            let started = std::time::Instant::now();
            let t = if force {
                store.rebuild(&name)?
            } else {
                store.ensure(&name)?
            };
            println!(
                "{name}: {} MiB in {} ({:.1} s)",
                t.meta.rootfs_bytes >> 20,
                t.dir().display(),
                started.elapsed().as_secs_f64()
            );
        }
        TemplateAction::Image { name } => {
            let started = std::time::Instant::now();
            let t = store.get(&name)?;
            let image = store.image(&t)?;
            let bytes = std::fs::metadata(&image)?.len();
            println!(
                "{}: {} MiB ({:.1} s)",
                image.display(),
                bytes >> 20,
                started.elapsed().as_secs_f64()
            );
        }
        TemplateAction::List => {
            println!(
                "{:<24} {:>10} {:>10}  {:<8} defaults",
                "NAME", "ROOTFS", "IMAGE", "KIND"
            );
            for s in store.list() {
                let m = &s.template.meta;
                println!(
                    "{:<24} {:>8}Mi {:>8}  {:<8} {}",
                    m.name,
                    m.rootfs_bytes >> 20,
                    s.template
                        .image_bytes()
                        .map_or("-".into(), |b| format!("{}Mi", b >> 20)),
                    if m.builtin { "built-in" } else { "custom" },
                    serde_json::to_string(&m.defaults)?
                );
            }
        }
    }
    Ok(())
}

fn purge(args: RunArgs) -> anyhow::Result<()> {
    let mut net = NetConfig::new(args.data_dir.join("net"));
    net.prefix = args.net_prefix;
    net.table = args.nft_table;
    if let Some(n) = args.capsule_net {
        net.capsule_net = n;
    }
    if let Some(n) = args.veth_net {
        net.veth_net = n;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(SlotManager::purge(&net))?;
    tracing::info!(prefix = %net.prefix, table = %net.table, "network state purged");
    Ok(())
}

/// The control plane link the flags describe, if any.
fn control_link(args: &RunArgs) -> anyhow::Result<Option<ControlLink>> {
    let Some(url) = args.control_url.clone() else {
        anyhow::ensure!(
            args.host_id.is_none() && args.registration_token.is_none(),
            "--host-id and --registration-token need --control-url"
        );
        return Ok(None);
    };
    anyhow::ensure!(
        url.starts_with("http://"),
        "--control-url {url}: only http:// is supported (put a TLS terminator on this host for https)"
    );
    let host = match (&args.host_id, &args.host_token, &args.registration_token) {
        (Some(host_id), Some(host_token), _) => HostAuth::Known {
            host_id: host_id.clone(),
            host_token: host_token.clone(),
        },
        (_, _, Some(token)) => HostAuth::Register {
            token: token.clone(),
        },
        _ => anyhow::bail!(
            "--control-url needs --host-id with --host-token, or --registration-token"
        ),
    };
    let rpc_advertise = args.rpc_advertise.clone().unwrap_or_else(|| {
        let addr = args.rpc_listen;
        if addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()).to_string()
        } else {
            addr.to_string()
        }
    });
    Ok(Some(ControlLink {
        url,
        host,
        rpc_advertise,
        heartbeat_every: seconds(args.heartbeat_interval, "heartbeat-interval")?
            .max(Duration::from_millis(100)),
    }))
}

fn seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{what} must be a non-negative number of seconds"))
}

fn agent_token(file: Option<&Path>) -> anyhow::Result<Option<Secret>> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading agent token file {}", path.display()))?,
        None => match std::env::var("WARREN_AGENT_TOKEN") {
            Ok(token) => token,
            Err(_) => return Ok(None),
        },
    };
    let token = token.trim();
    anyhow::ensure!(!token.is_empty(), "the agent token is empty");
    Ok(Some(Secret::new(token)))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let table = RouteTable::from_file(&args.routes)?;
    tracing::info!(capsules = table.len(), routes = %args.routes.display(), "routes loaded");
    let mut config = ProxyConfig {
        listen: args.listen,
        domain: args.domain,
        agent_token: agent_token(args.agent_token_file.as_deref())?,
        header_timeout: seconds(args.header_timeout, "header-timeout")?,
        idle_timeout: seconds(args.idle_timeout, "idle-timeout")?,
        max_head_bytes: args.max_head_bytes,
        forwarded_proto: args.forwarded_proto,
        ..ProxyConfig::default()
    };
    if let Some(cores) = args.cores {
        anyhow::ensure!(cores > 0, "--cores must be at least 1");
        config.cores = cores;
    }
    let proxy = Arc::new(Proxy::start(config, Arc::new(Routes::new(table)))?);
    let admin = TcpListener::bind(args.admin)
        .with_context(|| format!("binding admin address {}", args.admin))?;
    let for_admin = Arc::clone(&proxy);
    agent::admin::spawn(admin, Arc::new(move || for_admin.render_metrics()))?;
    tracing::info!(listen = %proxy.local_addr(), admin = %args.admin, "warren-agent proxy running");

    let reload = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGHUP, Arc::clone(&reload))?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(SIGINT, Arc::clone(&stop))?;
    let mut seen = modified(&args.routes);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let now = modified(&args.routes);
        if reload.swap(false, Ordering::Relaxed) || now != seen {
            seen = now;
            match RouteTable::from_file(&args.routes) {
                Ok(table) => {
                    tracing::info!(capsules = table.len(), "routes reloaded");
                    proxy.routes().publish(table);
                }
                Err(error) => tracing::error!(%error, "keeping the previous routes"),
            }
        }
    }
    tracing::info!("shutting down");
    proxy.shutdown();
    Ok(())
}
