//! The sandbox manager: the agent's authority over its host's capsules.
//!
//! It turns lifecycle requests into backend, network-slot and data-plane
//! actions; keeps each capsule's [`State`] (changed only through explicit
//! transitions) and persists it, so a restarted agent re-adopts every
//! running and paused capsule; serialises operations on one capsule (and
//! refuses new ones while it is pausing or stopping); publishes the routing
//! table the data plane reads; and pauses or destroys idle capsules.
//!
//! Pausing is split by the backend's [`PauseMode`]: the manager owns what
//! happens around the capsule (blocking operations, routes, draining the
//! proxy, envd's `/snapshot/prepare` and `/init`), the backend what happens
//! to it (freeze, or snapshot and stop; thaw, or restore).

mod envd;
pub mod record;
mod state;

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use envd::{EnvdClient, EnvdError};
pub use record::{EnvdDefaults, IdlePolicy, Record, TxLimitRecord};
pub use state::{Event, InvalidTransition, State};

use warren_backend::{
    Backend, BackendError, BackendKind, CapsuleId, CapsuleSpec, PauseMode, Resources, RunState,
    SpecError,
};
use warren_edge::{self as proxy, Proxy, Route, RouteTable, Secret};
use warren_netslot::{NetError, SlotManager, SlotOptions, TxLimit};
use warren_template::{
    NewTemplate, Template, TemplateDefaults, TemplateError, TemplateStore, TemplateSummary,
};

/// Everything that can go wrong, typed so the RPC layer can pick a code.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error("{0}")]
    BadRequest(String),
    #[error("capsule {0} not found")]
    NotFound(String),
    #[error("capsule {0} already exists")]
    AlreadyExists(String),
    #[error("capsule {id} is {state}: cannot {op}")]
    WrongState {
        id: String,
        state: State,
        op: &'static str,
    },
    #[error("capsule {id} is {state}: try again when that is done")]
    Busy { id: String, state: State },
    #[error("host is full: {0}")]
    Exhausted(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Envd(#[from] EnvdError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("persisting capsule {id}: {source}")]
    Persist { id: String, source: std::io::Error },
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
}

type Result<T> = std::result::Result<T, ManagerError>;

/// How the manager behaves.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// `$WARREN_DIR`.
    pub data_dir: PathBuf,
    pub envd_port: u16,
    /// How long a new capsule's envd may take to answer.
    pub envd_ready_timeout: Duration,
    pub default_disk_mb: u32,
    pub default_idle_policy: IdlePolicy,
    /// Admission: capsules' memory may add up to this many times the host's.
    pub memory_overcommit: f64,
    /// Admission: capsules' vCPUs may add up to this many times the host's cores.
    pub vcpu_overcommit: f64,
    /// Before a snapshot pause: how long proxied requests in flight may
    /// finish before their connections are closed.
    pub drain_grace: Duration,
}

impl ManagerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            envd_port: warren_proto::addr::ENVD_PORT,
            envd_ready_timeout: Duration::from_secs(10),
            default_disk_mb: 1024,
            default_idle_policy: IdlePolicy::Pause,
            memory_overcommit: 2.0,
            // Idle capsules cost no CPU; the control plane's scheduler spreads load.
            vcpu_overcommit: 64.0,
            drain_grace: Duration::from_secs(5),
        }
    }

    fn records_dir(&self) -> PathBuf {
        self.data_dir.join("agent").join("capsules")
    }
}

/// A create request, validated by [`Manager::create`].
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub id: String,
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub timeout_sec: u32,
    pub idle_policy: Option<IdlePolicy>,
    pub defaults: EnvdDefaults,
    pub metadata: BTreeMap<String, String>,
    pub egress: bool,
    pub envd_token: Option<String>,
    pub traffic_token: Option<String>,
    /// `None`: the default limit; `Some(None)`: unlimited.
    pub tx_limit: Option<Option<TxLimitRecord>>,
}

/// One sample of a capsule's use, with CPU as a rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub id: String,
    pub sampled_at_ms: i64,
    /// Percent of one CPU (100 = one core busy).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub disk_bytes: u64,
    pub disk_limit_bytes: u64,
    pub pids: u32,
    pub oom_kills: u64,
}

/// The host's capacity and what is allocated.
#[derive(Clone, Debug, PartialEq)]
pub struct HostInfo {
    pub backend: BackendKind,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub allocated_vcpus: u32,
    pub allocated_memory_mb: u64,
    pub capsules: u32,
    pub templates: Vec<TemplateSummary>,
}

/// A capsule the manager holds.
#[derive(Debug)]
struct Entry {
    /// Serialises operations on this capsule.
    op: tokio::sync::Mutex<()>,
    record: StdMutex<Record>,
    /// (when, CPU ns) of the previous metrics sample.
    last_cpu: StdMutex<Option<(Instant, u64)>>,
}

impl Entry {
    fn new(record: Record) -> Arc<Self> {
        Arc::new(Self {
            op: tokio::sync::Mutex::new(()),
            record: StdMutex::new(record),
            last_cpu: StdMutex::new(None),
        })
    }

    fn record(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut self.record.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn state(&self) -> State {
        self.update(|r| r.state)
    }
}

/// Ids the reaper acted on since the last [`Manager::list`].
#[derive(Debug, Default)]
struct Reaped {
    paused: Vec<String>,
    destroyed: Vec<String>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The sandbox manager. Share it as `Arc<Manager>`.
pub struct Manager {
    config: ManagerConfig,
    backend: Arc<dyn Backend>,
    slots: Arc<SlotManager>,
    proxy: Arc<Proxy>,
    templates: TemplateStore,
    envd: EnvdClient,
    capsules: StdMutex<BTreeMap<String, Arc<Entry>>>,
    reaped: StdMutex<Reaped>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("config", &self.config)
            .field(
                "capsules",
                &self.capsules.lock().map(|c| c.len()).unwrap_or(0),
            )
            .finish()
    }
}

impl Manager {
    /// Starts the manager and re-adopts what a previous agent left: running
    /// and paused capsules come back; half-made and half-destroyed ones are
    /// cleaned up; leftovers nobody owns are removed.
    pub async fn open(
        config: ManagerConfig,
        backend: Arc<dyn Backend>,
        slots: Arc<SlotManager>,
        proxy: Arc<Proxy>,
        templates: TemplateStore,
    ) -> Result<Arc<Self>> {
        let envd = EnvdClient::new(config.envd_port);
        let manager = Arc::new(Self {
            config,
            backend,
            slots,
            proxy,
            templates,
            envd,
            capsules: StdMutex::default(),
            reaped: StdMutex::default(),
        });
        manager.adopt_all().await;
        Ok(manager)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.capsules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(id.to_owned()))
    }

    fn persist(&self, record: &Record) -> Result<()> {
        record::save(&self.config.records_dir(), record).map_err(|source| ManagerError::Persist {
            id: record.id.clone(),
            source,
        })
    }

    /// Applies `event` to the capsule's state and persists the result.
    fn transition(&self, entry: &Entry, event: Event) -> Result<State> {
        let record = entry.update(|r| -> Result<Record> {
            r.state = r.state.on(event)?;
            Ok(r.clone())
        })?;
        self.persist(&record)?;
        self.publish_routes();
        Ok(record.state)
    }

    /// Moves the capsule to Error with `why`, persisted.
    fn fail(&self, entry: &Entry, why: &ManagerError) {
        let record = entry.update(|r| {
            if let Ok(next) = r.state.on(Event::Failed) {
                r.state = next;
            }
            r.error = Some(why.to_string());
            r.clone()
        });
        if let Err(e) = self.persist(&record) {
            tracing::error!(capsule = %record.id, error = %e, "cannot persist the error state");
        }
        self.publish_routes();
    }

    /// Takes the capsule's operation lock; refused while it is pausing or
    /// stopping (those must not be queued behind).
    async fn lock<'a>(
        &self,
        id: &str,
        entry: &'a Entry,
    ) -> Result<tokio::sync::MutexGuard<'a, ()>> {
        match entry.state() {
            state @ (State::Pausing | State::Stopping) => Err(ManagerError::Busy {
                id: id.to_owned(),
                state,
            }),
            _ => Ok(entry.op.lock().await),
        }
    }

    /// [`Manager::lock`], for an operation that needs the capsule in `state`.
    async fn lock_in<'a>(
        &self,
        id: &str,
        entry: &'a Entry,
        state: State,
        op: &'static str,
    ) -> Result<tokio::sync::MutexGuard<'a, ()>> {
        let guard = self.lock(id, entry).await?;
        match entry.state() {
            s if s == state => Ok(guard),
            s => Err(ManagerError::WrongState {
                id: id.to_owned(),
                state: s,
                op,
            }),
        }
    }

    /// Publishes the routing table the data plane reads.
    fn publish_routes(&self) {
        let routes: Vec<(String, Route)> = self
            .table()
            .values()
            .filter_map(|e| {
                let r = e.record();
                let address = r.address?;
                let state = match r.state {
                    State::Running => proxy::CapsuleState::Running,
                    State::Paused | State::Pausing => proxy::CapsuleState::Paused,
                    _ => proxy::CapsuleState::Unavailable,
                };
                Some((
                    r.id.clone(),
                    Route {
                        address: IpAddr::V4(address),
                        state,
                        access_token: r.traffic_token.clone().map(Secret::new),
                        envd_access_token: r.envd_token.clone().map(Secret::new),
                        limits: Default::default(),
                    },
                ))
            })
            .collect();
        self.proxy.routes().publish(RouteTable::new(routes));
    }

    fn host_memory_mb() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }

    fn host_vcpus() -> u32 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    }

    /// Refuses a capsule the host cannot hold.
    fn admit(&self, vcpus: u32, memory_mb: u32) -> Result<()> {
        let (cpus, mem) = self
            .table()
            .values()
            .map(|e| e.record())
            .filter(|r| r.state != State::Stopped)
            .fold((0u64, 0u64), |(c, m), r| {
                (c + u64::from(r.vcpus), m + u64::from(r.memory_mb))
            });
        let cpu_cap = (f64::from(Self::host_vcpus()) * self.config.vcpu_overcommit) as u64;
        let mem_cap = (Self::host_memory_mb() as f64 * self.config.memory_overcommit) as u64;
        if cpus + u64::from(vcpus) > cpu_cap {
            return Err(ManagerError::Exhausted(format!(
                "{cpus} of {cpu_cap} vCPUs allocated, {vcpus} more requested"
            )));
        }
        if mem + u64::from(memory_mb) > mem_cap {
            return Err(ManagerError::Exhausted(format!(
                "{mem} of {mem_cap} MiB allocated, {memory_mb} more requested"
            )));
        }
        Ok(())
    }

    /// Runs a blocking template-store call off the async threads.
    async fn with_templates<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TemplateStore) -> std::result::Result<T, TemplateError> + Send + 'static,
    ) -> Result<T> {
        let store = self.templates.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            .map_err(ManagerError::from)
    }

    /// Creates a capsule and returns once its envd answers and has its
    /// defaults (the template's, under the request's). On any failure
    /// nothing of it is left behind.
    pub async fn create(&self, mut req: CreateRequest) -> Result<Record> {
        let id = CapsuleId::new(req.id.clone())?;
        if req.template.is_empty() {
            return Err(ManagerError::BadRequest("template is required".into()));
        }
        // Makes a built-in template on first use (`minimal`: minutes).
        let name = req.template.clone();
        let template = self.with_templates(move |t| t.ensure(&name)).await?;
        let template_defaults = template.meta.defaults.clone();
        req.defaults = merge_defaults(&template_defaults, &req.defaults);
        if req.vcpus == 0 {
            req.vcpus = template_defaults.vcpus.unwrap_or(0);
        }
        if req.memory_mb == 0 {
            req.memory_mb = template_defaults.memory_mb.unwrap_or(0);
        }
        let resources = Resources {
            vcpus: req.vcpus,
            memory_mb: req.memory_mb,
            disk_mb: if req.disk_mb == 0 {
                self.config.default_disk_mb
            } else {
                req.disk_mb
            },
            max_pids: Resources::DEFAULT_MAX_PIDS,
        };
        if req.vcpus == 0 {
            return Err(ManagerError::BadRequest("vcpus must be at least 1".into()));
        }
        if req.memory_mb < Resources::MIN_MEMORY_MB {
            return Err(ManagerError::BadRequest(format!(
                "memory_mb must be at least {}",
                Resources::MIN_MEMORY_MB
            )));
        }
        if req.vcpus > Self::host_vcpus() {
            return Err(ManagerError::BadRequest(format!(
                "vcpus {} exceeds this host's {} cores",
                req.vcpus,
                Self::host_vcpus()
            )));
        }
        if u64::from(req.memory_mb) > Self::host_memory_mb() {
            return Err(ManagerError::BadRequest(format!(
                "memory_mb {} exceeds this host's {} MiB",
                req.memory_mb,
                Self::host_memory_mb()
            )));
        }
        let tx_limit = match req.tx_limit {
            None => Some(TxLimit::default()),
            Some(limit) => limit.map(TxLimit::from),
        };
        let now = now_ms();
        let record = Record {
            id: id.to_string(),
            template: req.template.clone(),
            vcpus: resources.vcpus,
            memory_mb: resources.memory_mb,
            disk_mb: resources.disk_mb,
            timeout_sec: req.timeout_sec,
            idle_policy: req.idle_policy.unwrap_or(self.config.default_idle_policy),
            defaults: req.defaults.clone(),
            metadata: req.metadata.clone(),
            egress: req.egress,
            envd_token: req.envd_token.clone().filter(|t| !t.is_empty()),
            traffic_token: req.traffic_token.clone().filter(|t| !t.is_empty()),
            tx_limit: tx_limit.map(TxLimitRecord::from),
            backend: self.backend.kind(),
            state: State::Creating,
            error: None,
            address: None,
            created_at_ms: now,
            last_active_ms: now,
            envd_version: None,
        };
        let entry = {
            let mut table = self.table();
            if table.contains_key(id.as_str()) {
                return Err(ManagerError::AlreadyExists(id.to_string()));
            }
            drop(table);
            self.admit(resources.vcpus, resources.memory_mb)?;
            table = self.table();
            if table.contains_key(id.as_str()) {
                return Err(ManagerError::AlreadyExists(id.to_string()));
            }
            let entry = Entry::new(record.clone());
            table.insert(id.to_string(), entry.clone());
            entry
        };
        let _guard = entry.op.lock().await;
        let started = Instant::now();
        let made = async {
            self.persist(&record)?;
            let slot = self
                .slots
                .acquire(
                    id.as_str(),
                    SlotOptions {
                        egress: req.egress,
                        // Shaped once: by the backend, or else by the slot.
                        tx_limit: tx_limit.filter(|_| !self.backend.shapes_egress()),
                    },
                )
                .await?;
            let addr = slot.capsule_addr();
            entry.update(|r| r.address = Some(addr));
            self.persist(&entry.record())?;
            let spec = CapsuleSpec {
                id: id.clone(),
                template: req.template.clone(),
                resources,
                netns: slot.netns_path(),
                hostname: None,
                env: BTreeMap::new(),
                metadata: req.metadata.clone(),
                tx_limit,
            };
            self.backend.create(&spec).await?;
            let version = self
                .envd
                .wait_ready(IpAddr::V4(addr), self.config.envd_ready_timeout)
                .await?;
            self.envd
                .init(
                    IpAddr::V4(addr),
                    None,
                    &req.defaults,
                    record.envd_token.as_deref(),
                )
                .await?;
            if let Some(cmd) = &template_defaults.start_cmd {
                self.envd
                    .start_daemon(IpAddr::V4(addr), record.envd_token.as_deref(), cmd)
                    .await?;
            }
            Ok::<_, ManagerError>(version)
        }
        .await;
        match made {
            Ok(version) => {
                entry.update(|r| {
                    r.envd_version = Some(version);
                    r.last_active_ms = now_ms();
                });
                self.transition(&entry, Event::Created)?;
                tracing::info!(capsule = %id, took_ms = started.elapsed().as_millis() as u64, "capsule created");
                Ok(entry.record())
            }
            Err(e) => {
                tracing::warn!(capsule = %id, error = %e, "create failed; removing what was made");
                self.teardown(&id).await;
                self.table().remove(id.as_str());
                self.publish_routes();
                Err(e)
            }
        }
    }

    /// Removes everything a capsule has on the host (idempotent: missing
    /// parts are fine).
    async fn teardown(&self, id: &CapsuleId) -> Option<ManagerError> {
        self.proxy.evict(id.as_str()).await;
        let mut failure = None;
        match self.backend.destroy(id).await {
            Ok(()) | Err(BackendError::NotFound(_)) => {}
            Err(e) => failure = Some(ManagerError::Backend(e)),
        }
        if let Some(slot) = self.slots.get(id.as_str()).await {
            if let Err(e) = self.slots.release(&slot).await {
                failure.get_or_insert(ManagerError::Net(e));
            }
        }
        if failure.is_none() {
            if let Err(source) = record::remove(&self.config.records_dir(), id.as_str()) {
                failure = Some(ManagerError::Persist {
                    id: id.to_string(),
                    source,
                });
            }
        }
        failure
    }

    /// Stops a capsule and removes everything it owns.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        let entry = self.entry(id)?;
        let _guard = self.lock(id, &entry).await?;
        self.transition(&entry, Event::Stop)?;
        let cid = CapsuleId::new(id.to_owned())?;
        if let Some(e) = self.teardown(&cid).await {
            self.fail(&entry, &e);
            return Err(e);
        }
        entry.update(|r| r.state.on(Event::Stopped).map(|s| r.state = s))?;
        self.table().remove(id);
        self.publish_routes();
        tracing::info!(capsule = id, "capsule destroyed");
        Ok(())
    }

    /// Pauses a running capsule: new public traffic is refused, then the
    /// backend pauses it. For a snapshot pause the capsule's proxied
    /// connections are drained first (requests in flight get
    /// [`ManagerConfig::drain_grace`]) and envd is asked to prepare.
    pub async fn pause(&self, id: &str) -> Result<Record> {
        let entry = self.entry(id)?;
        let _guard = self.lock_in(id, &entry, State::Running, "pause").await?;
        self.transition(&entry, Event::Pause)?;
        let cid = CapsuleId::new(id.to_owned())?;
        let snapshot = self.backend.pause_mode() == PauseMode::Snapshot;
        if snapshot {
            self.proxy.drain(id, self.config.drain_grace).await;
            let record = entry.record();
            if let Some(addr) = record.address
                && let Err(e) = self
                    .envd
                    .prepare_snapshot(IpAddr::V4(addr), record.envd_token.as_deref())
                    .await
            {
                // Preparing only closes idle connections: not worth failing for.
                tracing::warn!(capsule = id, error = %e, "envd did not prepare for the snapshot; pausing anyway");
            }
        }
        match self.backend.pause(&cid).await {
            Ok(()) => {
                self.transition(&entry, Event::Paused)?;
                Ok(entry.record())
            }
            Err(e) => {
                let still_running = self.backend_state(&cid).await == Some(RunState::Running);
                let e = ManagerError::Backend(e);
                if still_running {
                    tracing::warn!(capsule = id, error = %e, "pause failed; the capsule runs on");
                    self.transition(&entry, Event::PauseFailed)?;
                    if snapshot {
                        self.proxy.reopen(id);
                    }
                } else {
                    self.fail(&entry, &e);
                }
                Err(e)
            }
        }
    }

    /// What the backend sees of a capsule, if it can tell.
    async fn backend_state(&self, id: &CapsuleId) -> Option<RunState> {
        self.backend.status(id).await.ok().map(|s| s.state)
    }

    /// Resumes a paused capsule and re-applies envd's defaults (always after
    /// a snapshot pause: envd's clock and connections must be renewed).
    pub async fn resume(
        &self,
        id: &str,
        timeout_sec: Option<u32>,
        defaults: Option<EnvdDefaults>,
    ) -> Result<Record> {
        let entry = self.entry(id)?;
        let _guard = self.lock_in(id, &entry, State::Paused, "resume").await?;
        self.transition(&entry, Event::Resume)?;
        let cid = CapsuleId::new(id.to_owned())?;
        if let Err(e) = self.backend.resume(&cid).await {
            let e = ManagerError::Backend(e);
            if self.backend_state(&cid).await == Some(RunState::Paused) {
                tracing::warn!(capsule = id, error = %e, "resume failed; the capsule stays paused");
                self.transition(&entry, Event::ResumeFailed)?;
            } else {
                self.fail(&entry, &e);
            }
            return Err(e);
        }
        let snapshot = self.backend.pause_mode() == PauseMode::Snapshot;
        let record = entry.record();
        // The request's defaults over the capsule's own (which already hold
        // its template's). A frozen namespace capsule's envd kept its
        // defaults; a restored microVM's is re-initialised (clock, defaults).
        let defaults = defaults.map(|d| merge_envd_defaults(&record.defaults, &d));
        let reinit = defaults
            .clone()
            .or_else(|| snapshot.then(|| record.defaults.clone()));
        if let (Some(defaults), Some(addr)) = (&reinit, record.address) {
            let addr = IpAddr::V4(addr);
            let token = record.envd_token.as_deref();
            let initialised = async {
                if snapshot {
                    self.envd
                        .wait_ready(addr, self.config.envd_ready_timeout)
                        .await?;
                }
                self.envd.init(addr, token, defaults, token).await
            }
            .await;
            if let Err(e) = initialised {
                let e = ManagerError::Envd(e);
                self.fail(&entry, &e);
                return Err(e);
            }
        }
        entry.update(|r| {
            r.last_active_ms = now_ms();
            if let Some(t) = timeout_sec {
                r.timeout_sec = t;
            }
            if let Some(d) = defaults {
                r.defaults = d;
            }
        });
        self.transition(&entry, Event::Resumed)?;
        if snapshot {
            self.proxy.reopen(id);
        }
        Ok(entry.record())
    }

    /// Changes a running capsule's egress limit live (`None`: unlimited),
    /// where the backend or else the network slot enforces it.
    pub async fn set_tx_limit(&self, id: &str, limit: Option<TxLimitRecord>) -> Result<Record> {
        let entry = self.entry(id)?;
        let _guard = self
            .lock_in(id, &entry, State::Running, "change the egress limit")
            .await?;
        let tx = limit.map(TxLimit::from);
        if self.backend.shapes_egress() {
            self.backend
                .set_tx_limit(&CapsuleId::new(id.to_owned())?, tx)
                .await?;
        } else {
            let slot = self
                .slots
                .get(id)
                .await
                .ok_or_else(|| ManagerError::NotFound(format!("network slot of {id}")))?;
            self.slots.set_tx_limit(&slot, tx).await?;
        }
        let record = entry.update(|r| {
            r.tx_limit = limit;
            r.clone()
        });
        self.persist(&record)?;
        Ok(record)
    }

    /// Marks a capsule active now.
    pub fn ping(&self, id: &str) -> Result<()> {
        self.entry(id)?.update(|r| r.last_active_ms = now_ms());
        Ok(())
    }

    /// Every capsule, and the ids the reaper paused and destroyed since the
    /// previous call.
    pub fn list(&self) -> (Vec<Record>, Vec<String>, Vec<String>) {
        let records = self
            .table()
            .values()
            .map(|e| self.with_activity(e.record()))
            .collect();
        let reaped = std::mem::take(&mut *self.reaped.lock().unwrap_or_else(|p| p.into_inner()));
        (records, reaped.paused, reaped.destroyed)
    }

    pub fn get(&self, id: &str) -> Result<Record> {
        Ok(self.with_activity(self.entry(id)?.record()))
    }

    /// The record with its last activity including proxied traffic.
    fn with_activity(&self, mut r: Record) -> Record {
        if let Some(stats) = self.proxy.stats(&r.id) {
            let proxied = stats
                .last_activity
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
            r.last_active_ms = r.last_active_ms.max(proxied);
        }
        r
    }

    /// Samples one capsule (or every running one).
    pub async fn metrics(&self, id: Option<&str>) -> Result<Vec<Metrics>> {
        let single = id.is_some();
        let entries: Vec<(String, Arc<Entry>)> = match id {
            Some(id) => vec![(id.to_owned(), self.entry(id)?)],
            None => self
                .table()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let mut out = Vec::new();
        for (id, entry) in entries {
            if !matches!(entry.state(), State::Running | State::Paused) {
                continue;
            }
            let sample = match self.backend.metrics(&CapsuleId::new(id.clone())?).await {
                Ok(s) => s,
                Err(e) if single => return Err(e.into()),
                Err(_) => continue,
            };
            let now = Instant::now();
            let cpu_percent = {
                let mut last = entry.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
                let pct = match *last {
                    Some((at, ns)) if now > at => {
                        100.0 * sample.cpu_usage_ns.saturating_sub(ns) as f64
                            / now.duration_since(at).as_nanos() as f64
                    }
                    _ => 0.0,
                };
                *last = Some((now, sample.cpu_usage_ns));
                pct
            };
            out.push(Metrics {
                id,
                sampled_at_ms: sample
                    .at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0)),
                cpu_percent,
                memory_bytes: sample.memory_bytes,
                memory_limit_bytes: sample.memory_limit_bytes,
                disk_bytes: sample.disk_used_bytes,
                disk_limit_bytes: sample.disk_total_bytes,
                pids: u32::try_from(sample.pids).unwrap_or(u32::MAX),
                oom_kills: sample.oom_kills,
            });
        }
        Ok(out)
    }

    pub async fn host_info(&self) -> HostInfo {
        let records: Vec<Record> = self.table().values().map(|e| e.record()).collect();
        let disk_mb = nix::sys::statvfs::statvfs(&self.config.data_dir)
            .map_or(0, |s| s.blocks() * s.fragment_size() / (1 << 20));
        let templates = self
            .with_templates(|t| Ok(t.list()))
            .await
            .unwrap_or_default();
        HostInfo {
            backend: self.backend.kind(),
            vcpus: Self::host_vcpus(),
            memory_mb: Self::host_memory_mb(),
            disk_mb,
            allocated_vcpus: records.iter().map(|r| r.vcpus).sum(),
            allocated_memory_mb: records.iter().map(|r| u64::from(r.memory_mb)).sum(),
            capsules: records.len() as u32,
            templates,
        }
    }

    /// Turns capsule `id`'s filesystem into template `name` with the
    /// source template's defaults under `defaults`. A running capsule is
    /// paused while its files are copied and resumed after (its processes
    /// just stop for that long; its state stays Running); a paused one stays
    /// paused. The new template appears atomically, or not at all.
    pub async fn snapshot(
        &self,
        id: &str,
        name: &str,
        overwrite: bool,
        defaults: TemplateDefaults,
    ) -> Result<Template> {
        let entry = self.entry(id)?;
        let _guard = self.lock(id, &entry).await?;
        let record = entry.record();
        let running = match record.state {
            State::Running => true,
            State::Paused => false,
            state => {
                return Err(ManagerError::WrongState {
                    id: id.to_owned(),
                    state,
                    op: "snapshot",
                });
            }
        };
        let (target, source_name) = (name.to_owned(), record.template.clone());
        let (staged, source) = self
            .with_templates(move |t| {
                if !overwrite && t.exists(&target) {
                    return Err(TemplateError::AlreadyExists(target));
                }
                // The source may be gone meanwhile (replaced and deleted).
                let source = t.get(&source_name).map(|s| s.meta.defaults).ok();
                Ok((t.begin()?, source))
            })
            .await?;
        let cid = CapsuleId::new(id.to_owned())?;
        if running {
            if let Err(e) = self.backend.pause(&cid).await {
                let e = ManagerError::Backend(e);
                self.fail(&entry, &e);
                return Err(e);
            }
        }
        let copied = self.backend.export_rootfs(&cid, &staged.rootfs()).await;
        if running {
            if let Err(e) = self.backend.resume(&cid).await {
                let e = ManagerError::Backend(e);
                self.fail(&entry, &e);
                return Err(e);
            }
        }
        copied?;
        let new = NewTemplate {
            defaults: source.unwrap_or_default().overlaid(&defaults),
            origin: Some(format!(
                "snapshot of capsule {id} (template {})",
                record.template
            )),
            overwrite,
        };
        let name = name.to_owned();
        let template = self
            .with_templates(move |t| t.commit(staged, &name, new))
            .await?;
        tracing::info!(capsule = id, template = %template.meta.name, bytes = template.meta.rootfs_bytes, "snapshot taken");
        Ok(template)
    }

    /// Removes template `name` from this host; refused while a capsule
    /// runs on it.
    pub async fn delete_template(&self, name: &str) -> Result<()> {
        let users: Vec<String> = self
            .table()
            .values()
            .map(|e| e.record())
            .filter(|r| r.template == name && r.state != State::Stopped)
            .map(|r| r.id)
            .collect();
        if !users.is_empty() {
            return Err(TemplateError::InUse {
                name: name.to_owned(),
                capsules: users,
            }
            .into());
        }
        let name = name.to_owned();
        self.with_templates(move |t| t.delete(&name)).await
    }

    /// Destroys every capsule (the host is being removed).
    pub async fn destroy_all(&self) -> Vec<(String, ManagerError)> {
        let ids: Vec<String> = self.table().keys().cloned().collect();
        let mut failures = Vec::new();
        for id in ids {
            if let Err(e) = self.destroy(&id).await {
                failures.push((id, e));
            }
        }
        failures
    }

    /// One pass of the idle reaper: capsules idle past their timeout are
    /// paused or destroyed, per their policy.
    pub async fn reap_idle(self: &Arc<Self>) {
        let now = now_ms();
        let idle: Vec<Record> = self
            .table()
            .values()
            .map(|e| self.with_activity(e.record()))
            .filter(|r| r.state == State::Running && r.timeout_sec > 0)
            .filter(|r| now - r.last_active_ms >= i64::from(r.timeout_sec) * 1000)
            .collect();
        for r in idle {
            let manager = self.clone();
            tokio::spawn(async move {
                let outcome = match r.idle_policy {
                    IdlePolicy::Pause => manager.pause(&r.id).await.map(|_| ()),
                    IdlePolicy::Destroy => manager.destroy(&r.id).await,
                };
                let mut reaped = manager.reaped.lock().unwrap_or_else(|p| p.into_inner());
                match (outcome, r.idle_policy) {
                    (Ok(()), IdlePolicy::Pause) => {
                        tracing::info!(capsule = %r.id, idle_s = r.timeout_sec, "idle: paused");
                        reaped.paused.push(r.id);
                    }
                    (Ok(()), IdlePolicy::Destroy) => {
                        tracing::info!(capsule = %r.id, idle_s = r.timeout_sec, "idle: destroyed");
                        reaped.destroyed.push(r.id);
                    }
                    (Err(e), _) => {
                        tracing::debug!(capsule = %r.id, error = %e, "idle capsule left as is")
                    }
                }
            });
        }
    }

    /// Re-adopts what a previous agent process left behind.
    async fn adopt_all(&self) {
        let dir = self.config.records_dir();
        let (records, broken) = record::load_all(&dir);
        for (file, why) in broken {
            tracing::error!(file, why, "unreadable capsule record left in place");
        }
        let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        for mut r in records {
            let Ok(id) = CapsuleId::new(r.id.clone()) else {
                continue;
            };
            match r.state {
                State::Creating | State::Stopping | State::Stopped => {
                    tracing::info!(capsule = %id, state = %r.state, "finishing what a previous agent started: removing");
                    if let Some(e) = self.teardown(&id).await {
                        tracing::error!(capsule = %id, error = %e, "cleanup failed");
                    }
                    continue;
                }
                _ => {}
            }
            match self.backend.adopt(&id).await {
                Ok(handle) => {
                    r.state = match handle.status.state {
                        RunState::Running => State::Running,
                        RunState::Paused => State::Paused,
                        RunState::Exited => {
                            r.error =
                                Some("the capsule's init exited while the agent was away".into());
                            State::Error
                        }
                    };
                }
                Err(e) => {
                    r.error = Some(format!("cannot re-adopt: {e}"));
                    r.state = State::Error;
                }
            }
            if r.address.is_none() {
                r.address = self.slots.get(id.as_str()).await.map(|s| s.capsule_addr());
            }
            tracing::info!(capsule = %id, state = %r.state, "re-adopted");
            if let Err(e) = self.persist(&r) {
                tracing::error!(capsule = %id, error = %e, "cannot persist the adopted state");
            }
            self.table().insert(r.id.clone(), Entry::new(r));
        }
        // The backend's leftovers and slots that no record owns.
        if let Ok(ids) = self.backend.persisted().await {
            for id in ids.into_iter().filter(|id| !known.contains(id.as_str())) {
                tracing::warn!(capsule = %id, "removing a capsule no record owns");
                let _ = self.backend.destroy(&id).await;
            }
        }
        for info in self.slots.list().await {
            if !self.table().contains_key(info.slot.capsule_id()) {
                tracing::warn!(
                    capsule = info.slot.capsule_id(),
                    "releasing a network slot no capsule owns"
                );
                let _ = self.slots.release(&info.slot).await;
            }
        }
        self.publish_routes();
    }
}

/// envd's defaults for a capsule of a template: the request's fields where
/// it sets them, the template's otherwise; env merged (the request wins).
fn merge_defaults(template: &TemplateDefaults, request: &EnvdDefaults) -> EnvdDefaults {
    let base = EnvdDefaults {
        env: template.env.clone(),
        user: template.user.clone().unwrap_or_default(),
        workdir: template.workdir.clone().unwrap_or_default(),
    };
    merge_envd_defaults(&base, request)
}

/// `over`'s non-empty fields over `base`; env merged.
fn merge_envd_defaults(base: &EnvdDefaults, over: &EnvdDefaults) -> EnvdDefaults {
    let pick = |o: &String, b: &String| if o.is_empty() { b.clone() } else { o.clone() };
    let mut env = base.env.clone();
    env.extend(over.env.clone());
    EnvdDefaults {
        env,
        user: pick(&over.user, &base.user),
        workdir: pick(&over.workdir, &base.workdir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_defaults_win_per_field_and_env_merges() {
        let template = TemplateDefaults {
            user: Some("user".into()),
            workdir: Some("/home/user".into()),
            env: [("A".into(), "1".into()), ("B".into(), "2".into())].into(),
            ..Default::default()
        };
        let request = EnvdDefaults {
            env: [("B".into(), "3".into()), ("C".into(), "4".into())].into(),
            user: "root".into(),
            workdir: String::new(),
        };
        let d = merge_defaults(&template, &request);
        assert_eq!(d.user, "root");
        assert_eq!(d.workdir, "/home/user");
        assert_eq!(
            d.env,
            [
                ("A".into(), "1".into()),
                ("B".into(), "3".into()),
                ("C".into(), "4".into())
            ]
            .into()
        );
        assert_eq!(
            merge_defaults(&TemplateDefaults::default(), &EnvdDefaults::default()),
            EnvdDefaults::default()
        );
    }
}
