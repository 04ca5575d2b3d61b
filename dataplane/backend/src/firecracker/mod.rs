//! The Firecracker backend: each capsule is a microVM (production on KVM
//! hosts).
//!
//! A capsule is made of: a copy-on-write view of its template's ext4 image
//! grown to the capsule's disk size ([`crate::cow_disk`]), the TAP of its
//! network slot ([`SlotManager::enable_tap`], guest always 169.254.0.21),
//! and a Firecracker process started by [`vmm_api::launcher`] in the slot's
//! network namespace, configured through its API (machine, kernel and
//! command line, root drive, `eth0` with the capsule's tx rate limiter,
//! metadata service) and booted. envd is the guest's pid 1 (after Warren's
//! guest init).
//!
//! Pausing ([`PauseMode::Snapshot`]; the sandbox manager has drained the
//! capsule's connections and asked envd to prepare) pauses the vCPUs,
//! writes a snapshot into `$WARREN_DIR/snapshots/<id>/` (full the first
//! time, a diff of the dirty pages after a restore) and stops the process,
//! so the capsule's RAM is freed. Resuming starts a new process in the same
//! namespace, loads the snapshot with its memory served through
//! userfaultfd by a page server on the data-plane cores ([`pager`]),
//! prefetching what the last restore touched, puts the metadata back (it
//! is not part of a snapshot) and resumes the vCPUs; the manager then
//! re-initialises envd.
//!
//! Module map: `state` (what is persisted per capsule), [`snapshot`] (the
//! snapshot files and their commit), `vm` (the API call sequences),
//! [`pager`] (page servers), and this file (template images come from
//! [`TemplateStore::image`]): the
//! [`FirecrackerBackend`] tying them to the [`Backend`] trait.
//!
//! Files per capsule: `capsules/<id>/` holds `firecracker.json`, the disk
//! (`rootfs.ext4`, or a device-mapper cow store) and `console.log` (the
//! serial console and Firecracker's own log); `snapshots/<id>/` the
//! snapshot; the launcher's runtime directory the API socket and the page
//! server's sockets. The jailer is not used yet: Firecracker runs as root
//! in its own network and mount namespaces.

pub mod pager;
pub mod snapshot;
mod state;
mod vm;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use vmm_api::Client;
use vmm_api::boot::KernelCmdline;
use vmm_api::launcher::{Firecracker, LaunchSpec, Launcher, LauncherConfig};

use super::{
    Backend, BackendError, BackendKind, CapsuleHandle, CapsuleId, CapsuleSpec, CapsuleStatus,
    MetricsSample, PauseMode, RunState, SpecError,
};
use crate::cow_disk::{CowDisks, CowMethod};
use pager::{Pager, Serving};
use snapshot::SnapshotDir;
use state::{Persisted, Phase, Restored, STATE_FILE};
use warren_netslot::{DEFAULT_TAP_TXQUEUELEN, SlotManager, TxLimit};
use warren_runtime::Cores;
use warren_template::{IdMap, TemplateStore};

/// Settings of a Firecracker backend.
#[derive(Debug, Clone)]
pub struct FirecrackerConfig {
    /// `$WARREN_DIR`: `templates/`, `capsules/`, `snapshots/`, `cache/`.
    pub data_dir: PathBuf,
    pub firecracker_bin: PathBuf,
    /// The guest kernel (an uncompressed `vmlinux`; see images/KERNEL.md).
    pub kernel: PathBuf,
    /// Firecracker instance directories (API and page-server sockets); a
    /// tmpfs such as `/run/warren/vmm`.
    pub runtime_dir: PathBuf,
    /// The host's envd, put into every template image.
    pub envd_bin: PathBuf,
    pub envd_port: u16,
    /// Static busybox the `tiny` template is made from.
    pub busybox: PathBuf,
    pub id_map: IdMap,
    /// Transmit queue length of each capsule's TAP.
    pub tap_txqueuelen: u32,
    pub cow_method: CowMethod,
    /// The guest's command line; envd's location is added to it.
    pub cmdline: KernelCmdline,
    /// More Firecracker arguments (`--level`, `--seccomp-filter`, ...).
    pub extra_args: Vec<OsString>,
    /// Deadline of each API call (a snapshot of a large VM is one call).
    pub api_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping Firecracker.
    pub stop_grace: Duration,
}

impl FirecrackerConfig {
    pub fn new(
        data_dir: PathBuf,
        firecracker_bin: PathBuf,
        kernel: PathBuf,
        envd_bin: PathBuf,
    ) -> Self {
        Self {
            runtime_dir: PathBuf::from("/run/warren/vmm"),
            data_dir,
            firecracker_bin,
            kernel,
            envd_bin,
            envd_port: warren_proto::addr::ENVD_PORT,
            busybox: "/bin/busybox".into(),
            id_map: IdMap::default(),
            tap_txqueuelen: DEFAULT_TAP_TXQUEUELEN,
            cow_method: CowMethod::Auto,
            cmdline: KernelCmdline::default(),
            extra_args: Vec::new(),
            api_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// What runs for a capsule right now.
#[derive(Debug, Default)]
struct Live {
    firecracker: Option<Firecracker>,
    pages: Option<Serving>,
}

/// A capsule this backend is in charge of.
#[derive(Debug)]
struct Capsule {
    id: CapsuleId,
    dir: PathBuf,
    state: Mutex<Persisted>,
    live: Mutex<Live>,
}

impl Capsule {
    fn new(dir: PathBuf, state: Persisted) -> Self {
        Self {
            id: state.spec.id.clone(),
            dir,
            state: Mutex::new(state),
            live: Mutex::new(Live::default()),
        }
    }

    fn state(&self) -> Persisted {
        lock(&self.state).clone()
    }

    /// Changes the persisted state and writes it.
    fn update(&self, f: impl FnOnce(&mut Persisted)) -> Result<(), BackendError> {
        let mut state = lock(&self.state);
        f(&mut state);
        super::persist::save(&self.dir, STATE_FILE, &*state)
            .map_err(io_err(&self.id, "persist state"))
    }

    fn save(&self) -> Result<(), BackendError> {
        self.update(|_| {})
    }

    fn set_phase(&self, phase: Phase) -> Result<(), BackendError> {
        self.update(|s| s.phase = phase)
    }

    fn pid(&self) -> Option<u32> {
        lock(&self.live)
            .firecracker
            .as_ref()
            .filter(|f| f.is_running())
            .map(Firecracker::pid)
    }

    fn take_live(&self) -> Live {
        std::mem::take(&mut *lock(&self.live))
    }
}

/// Locks plain data; a panic elsewhere cannot leave it torn.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_err(id: &CapsuleId, context: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let (id, context) = (id.clone(), context.into());
    move |source| BackendError::Io {
        id,
        context,
        source,
    }
}

/// The Firecracker backend. Cheap to clone.
#[derive(Clone)]
pub struct FirecrackerBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FirecrackerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirecrackerBackend")
            .field("config", &self.inner.config)
            .field("capsules", &self.inner.table().len())
            .finish()
    }
}

struct Inner {
    config: FirecrackerConfig,
    launcher: Launcher,
    disks: CowDisks,
    templates: TemplateStore,
    slots: Arc<SlotManager>,
    pager: Pager,
    capsules: Mutex<HashMap<CapsuleId, Arc<Capsule>>>,
}

impl FirecrackerBackend {
    /// Checks the host (Firecracker, kernel, envd), prepares the data
    /// directory, and stops Firecracker processes no capsule owns. Page
    /// servers run on `cores`; TAPs are made through `slots`.
    pub async fn new(
        config: FirecrackerConfig,
        slots: Arc<SlotManager>,
        cores: Arc<dyn Cores>,
    ) -> Result<Self, BackendError> {
        let unsupported = |reason: String| BackendError::Unsupported {
            kind: BackendKind::Firecracker,
            reason,
        };
        for (what, path) in [
            ("firecracker binary", &config.firecracker_bin),
            ("guest kernel", &config.kernel),
        ] {
            if !path.is_file() {
                return Err(unsupported(format!("{what} {} not found", path.display())));
            }
        }
        if config.tap_txqueuelen == 0 {
            return Err(unsupported("the TAP txqueuelen must be at least 1".into()));
        }
        let mut launcher_config = LauncherConfig::new(&config.firecracker_bin, &config.runtime_dir);
        launcher_config.stop_grace = config.stop_grace;
        let launcher = Launcher::new(launcher_config).map_err(|e| unsupported(e.to_string()))?;
        let disks = CowDisks::new(config.data_dir.join("capsules"), config.cow_method)
            .map_err(|e| unsupported(e.to_string()))?;
        if !config.envd_bin.is_file() {
            return Err(unsupported(format!(
                "envd binary {} not found",
                config.envd_bin.display()
            )));
        }
        std::fs::create_dir_all(config.data_dir.join("snapshots"))
            .map_err(|e| unsupported(format!("snapshot directory: {e}")))?;
        let backend = Self {
            inner: Arc::new(Inner {
                templates: TemplateStore::new(
                    config.data_dir.join("templates"),
                    config.id_map,
                    config.busybox.clone(),
                )
                .with_envd(config.envd_bin.clone()),
                launcher,
                disks,
                slots,
                pager: Pager::new(cores),
                capsules: Mutex::new(HashMap::new()),
                config,
            }),
        };
        backend.clean_stale().await?;
        Ok(backend)
    }

    /// The capsule's snapshot directory.
    pub fn snapshot_dir(&self, id: &CapsuleId) -> PathBuf {
        self.inner.snapshots(id).path().to_owned()
    }

    /// The capsule's directory on the host.
    pub fn capsule_dir(&self, id: &CapsuleId) -> PathBuf {
        self.inner.capsule_dir(id)
    }

    /// Pid of the capsule's Firecracker process, while one runs.
    pub fn firecracker_pid(&self, id: &CapsuleId) -> Option<u32> {
        self.inner.capsule(id).ok()?.pid()
    }

    /// The page server's counters, while a restored VM is served.
    pub fn page_server_stats(&self, id: &CapsuleId) -> Option<warren_uffd::Stats> {
        let capsule = self.inner.capsule(id).ok()?;
        let live = lock(&capsule.live);
        live.pages.as_ref().map(Serving::stats)
    }

    /// Stops Firecracker processes whose instance no persisted capsule
    /// names, and removes disks no capsule owns.
    async fn clean_stale(&self) -> Result<(), BackendError> {
        let inner = &self.inner;
        let mut instances = Vec::new();
        let mut ids = Vec::new();
        for id in inner.persisted_ids()? {
            if let Ok(state) = inner.load(&id) {
                instances.push(state.instance);
                ids.push(id.to_string());
            }
        }
        let report = inner
            .launcher
            .clean_stale(|instance| instances.iter().any(|i| i == instance))
            .await
            .map_err(|e| BackendError::Unsupported {
                kind: BackendKind::Firecracker,
                reason: format!("cleaning stale Firecracker processes: {e}"),
            })?;
        for (id, pid, outcome) in report.stopped {
            tracing::warn!(instance = %id, pid, ?outcome, "stopped a Firecracker no capsule owns");
        }
        let disks = inner.disks.clone();
        super::blocking(move || disks.clean_stale(|id| ids.iter().any(|i| i == id)))
            .await
            .map_err(|e| BackendError::Unsupported {
                kind: BackendKind::Firecracker,
                reason: format!("cleaning stale disks: {e}"),
            })?;
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = Arc::clone(&self.inner);
        super::blocking(move || f(&inner)).await
    }

    /// The capsule, which must be in `phase` for `op`.
    fn capsule_in(
        &self,
        id: &CapsuleId,
        phase: Phase,
        op: &'static str,
    ) -> Result<Arc<Capsule>, BackendError> {
        let capsule = self.inner.capsule(id)?;
        let status = status_of(&capsule);
        if capsule.state().phase != phase || status.state == RunState::Exited {
            return Err(BackendError::InvalidState {
                id: id.clone(),
                state: status.state,
                op,
            });
        }
        Ok(capsule)
    }

    fn client(&self, capsule: &Capsule) -> Result<Client, BackendError> {
        let live = lock(&capsule.live);
        let fc = live
            .firecracker
            .as_ref()
            .ok_or_else(|| BackendError::InvalidState {
                id: capsule.id.clone(),
                state: RunState::Exited,
                op: "call firecracker",
            })?;
        Ok(fc.client().with_timeout(self.inner.config.api_timeout))
    }

    /// Starts a Firecracker process for the capsule in its slot's namespace.
    async fn launch(&self, capsule: &Capsule) -> Result<Client, BackendError> {
        let state = capsule.state();
        let mut spec = LaunchSpec::new(&state.instance, capsule.dir.join("console.log"));
        spec.netns = Some(state.spec.netns.clone());
        spec.extra_args = self.inner.config.extra_args.clone();
        let fc =
            self.inner
                .launcher
                .launch(&spec)
                .await
                .map_err(|source| BackendError::Process {
                    id: capsule.id.clone(),
                    source,
                })?;
        let client = fc.client().with_timeout(self.inner.config.api_timeout);
        lock(&capsule.live).firecracker = Some(fc);
        Ok(client)
    }

    /// Stops what runs for the capsule: Firecracker (its CPU time is kept),
    /// then its page server.
    async fn stop(&self, capsule: &Capsule) -> Result<(), BackendError> {
        let live = capsule.take_live();
        if let Some(fc) = live.firecracker {
            if let Some(ns) = cpu_ns(fc.pid()) {
                capsule.update(|s| s.cpu_ns_before += ns)?;
            }
            fc.stop(self.inner.config.stop_grace)
                .await
                .map_err(|source| BackendError::Process {
                    id: capsule.id.clone(),
                    source,
                })?;
        }
        if let Some(pages) = live.pages {
            pages.finish().await;
        }
        Ok(())
    }

    fn vmm_err(id: &CapsuleId) -> impl FnOnce(vm::StepError) -> BackendError {
        let id = id.clone();
        move |(step, source)| BackendError::Vmm { id, step, source }
    }

    async fn boot(&self, capsule: &Capsule) -> Result<(), BackendError> {
        let inner = &self.inner;
        let id = capsule.id.clone();
        let spec = capsule.state().spec;
        let template = spec.template.clone();
        let image = self
            .blocking(move |inner| {
                let template = inner.templates.ensure(&template)?;
                Ok(inner.templates.image(&template)?)
            })
            .await?;
        let size = u64::from(spec.resources.disk_mb) << 20;
        let disk_id = id.clone();
        let disk = self
            .blocking(move |inner| {
                inner
                    .disks
                    .create(disk_id.as_str(), &image, Some(size))
                    .map_err(|source| BackendError::Disk {
                        id: disk_id,
                        source,
                    })
            })
            .await?;
        capsule.update(|s| s.disk = Some(disk.path.clone()))?;

        let net = |source| BackendError::Net {
            id: id.clone(),
            source,
        };
        let slot = inner
            .slots
            .get(id.as_str())
            .await
            .filter(|slot| slot.netns_path() == spec.netns)
            .ok_or_else(|| {
                BackendError::InvalidSpec(SpecError {
                    field: "netns",
                    reason: format!(
                        "{} is not the network slot of capsule {id}",
                        spec.netns.display()
                    ),
                })
            })?;
        inner
            .slots
            .enable_tap(&slot, inner.config.tap_txqueuelen)
            .await
            .map_err(net)?;

        let client = self.launch(capsule).await?;
        let mut cmdline = inner.config.cmdline.clone();
        cmdline.hostname = spec.hostname().to_owned();
        let plan = vm::BootPlan {
            // validate() keeps vcpus within Firecracker's 1-32.
            vcpus: u8::try_from(spec.resources.vcpus).unwrap_or(u8::MAX),
            memory_mib: u64::from(spec.resources.memory_mb),
            kernel: &inner.config.kernel,
            boot_args: cmdline.render(),
            disk: &disk.path,
            tx_limit: spec.tx_limit,
            metadata: vm::metadata(&spec),
        };
        vm::boot(&client, &plan).await.map_err(Self::vmm_err(&id))
    }

    /// Pauses the vCPUs, writes the snapshot and stops the process.
    async fn snapshot_and_stop(&self, capsule: &Capsule) -> Result<(), BackendError> {
        let id = &capsule.id;
        let snapshots = self.inner.snapshots(id);
        let client = self.client(capsule)?;
        let diff = capsule.state().restored.is_some() && snapshots.is_committed();
        capsule.set_phase(Phase::Pausing)?;
        client.pause().await.map_err(|source| BackendError::Vmm {
            id: id.clone(),
            step: "pause vCPUs",
            source,
        })?;
        let request = snapshots
            .request(diff)
            .map_err(io_err(id, "prepare the snapshot directory"))?;
        if let Err(source) = client.create_snapshot(&request).await {
            let _ = snapshots.discard_pending();
            return Err(BackendError::Vmm {
                id: id.clone(),
                step: if diff {
                    "diff snapshot"
                } else {
                    "full snapshot"
                },
                source,
            });
        }
        capsule.set_phase(Phase::Captured)?;
        self.stop(capsule).await?;
        self.commit(capsule)
    }

    /// Makes the captured snapshot the capsule's state.
    fn commit(&self, capsule: &Capsule) -> Result<(), BackendError> {
        self.inner
            .snapshots(&capsule.id)
            .commit()
            .map_err(io_err(&capsule.id, "commit the snapshot"))?;
        capsule.update(|s| {
            s.phase = Phase::Paused;
            s.restored = None;
        })
    }

    /// A new process, the snapshot loaded through a page server, metadata
    /// back, vCPUs running.
    async fn restore(&self, capsule: &Capsule) -> Result<(), BackendError> {
        let id = &capsule.id;
        let snapshots = self.inner.snapshots(id);
        let page_err = |reason: String| BackendError::PageServer {
            id: id.clone(),
            reason,
        };
        let client = self.launch(capsule).await?;
        let socket = self
            .inner
            .launcher
            .instance_dir(&capsule.state().instance)
            .join("uffd.sock");
        let pending = self
            .inner
            .pager
            .prepare(&snapshots.memory(), &socket)
            .await
            .map_err(page_err)?;
        // The load returns once the first fault is served, which needs the
        // handshake taken and handed over meanwhile.
        let vmstate = snapshots.vmstate();
        let loaded = async {
            let accept = pending.accept();
            let load = vm::load(&client, &vmstate, &socket);
            tokio::pin!(accept, load);
            let (pages, regions) = tokio::select! {
                accepted = &mut accept => accepted.map_err(page_err)?,
                loaded = &mut load => {
                    // Only a load that failed before Firecracker connected
                    // ends first.
                    loaded.map_err(Self::vmm_err(id))?;
                    accept.await.map_err(page_err)?
                }
            };
            lock(&capsule.live).pages = Some(pages);
            load.await.map_err(Self::vmm_err(id))?;
            Ok::<_, BackendError>(regions)
        }
        .await;
        let regions = match loaded {
            Ok(regions) => regions,
            Err(e) => {
                pending.abandon();
                return Err(e);
            }
        };
        capsule.update(|s| s.restored = Some(Restored { regions }))?;
        let spec = capsule.state().spec;
        vm::resume_restored(&client, &vm::metadata(&spec))
            .await
            .map_err(Self::vmm_err(id))
    }

    /// Brings a capsule found on disk back under management (after an
    /// agent restart), finishing or undoing what was under way.
    async fn take_over(&self, capsule: &Capsule) -> Result<RunState, BackendError> {
        let inner = &self.inner;
        let state = capsule.state();
        let found = inner
            .launcher
            .find_running()
            .map_err(|source| BackendError::Process {
                id: capsule.id.clone(),
                source,
            })?
            .into_iter()
            .find(|f| f.id == state.instance);
        if let Some(found) = &found {
            let fc = inner
                .launcher
                .adopt(found)
                .map_err(|source| BackendError::Process {
                    id: capsule.id.clone(),
                    source,
                })?;
            lock(&capsule.live).firecracker = Some(fc);
        }
        let alive = found.is_some();
        let snapshots = inner.snapshots(&capsule.id);
        match state.phase {
            Phase::Running | Phase::Pausing if alive => {
                if let (Some(restored), Some(found)) = (&state.restored, &found) {
                    let socket = inner
                        .launcher
                        .instance_dir(&state.instance)
                        .join("uffd.sock");
                    let pages = inner
                        .pager
                        .reattach(found.pid, &restored.regions, &snapshots.memory(), &socket)
                        .await
                        .map_err(|reason| BackendError::PageServer {
                            id: capsule.id.clone(),
                            reason,
                        })?;
                    lock(&capsule.live).pages = Some(pages);
                }
                if state.phase == Phase::Pausing {
                    // The pause did not finish: undo it, the VM runs on.
                    self.undo_pause(capsule).await?;
                }
                Ok(RunState::Running)
            }
            Phase::Creating | Phase::Running | Phase::Pausing => Ok(RunState::Exited),
            // The snapshot is complete: finish the pause.
            Phase::Captured => {
                self.stop(capsule).await?;
                self.commit(capsule)?;
                Ok(RunState::Paused)
            }
            // The snapshot is the state; a half-made restore is dropped.
            Phase::Paused | Phase::Resuming => {
                self.stop(capsule).await?;
                capsule.update(|s| {
                    s.phase = Phase::Paused;
                    s.restored = None;
                })?;
                Ok(RunState::Paused)
            }
        }
    }

    /// Lets a VM whose pause stopped half-way run on: drops the partial
    /// snapshot and resumes its vCPUs if they were paused.
    async fn undo_pause(&self, capsule: &Capsule) -> Result<(), BackendError> {
        let id = &capsule.id;
        self.inner
            .snapshots(id)
            .discard_pending()
            .map_err(io_err(id, "discard a partial snapshot"))?;
        let client = self.client(capsule)?;
        let vmm = |step| {
            let id = id.clone();
            move |source| BackendError::Vmm { id, step, source }
        };
        let info = client.describe_instance().await.map_err(vmm("describe"))?;
        if info.state == vmm_api::model::InstanceState::Paused {
            client.resume().await.map_err(vmm("resume vCPUs"))?;
        }
        capsule.set_phase(Phase::Running)
    }
}

impl Inner {
    fn capsule_dir(&self, id: &CapsuleId) -> PathBuf {
        self.config.data_dir.join("capsules").join(id.as_str())
    }

    fn snapshots(&self, id: &CapsuleId) -> SnapshotDir {
        SnapshotDir::new(self.config.data_dir.join("snapshots").join(id.as_str()))
    }

    fn table(&self) -> MutexGuard<'_, HashMap<CapsuleId, Arc<Capsule>>> {
        lock(&self.capsules)
    }

    fn capsule(&self, id: &CapsuleId) -> Result<Arc<Capsule>, BackendError> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(id.clone()))
    }

    fn load(&self, id: &CapsuleId) -> Result<Persisted, BackendError> {
        super::persist::load_capsule(id, &self.capsule_dir(id), STATE_FILE)
    }

    fn persisted_ids(&self) -> Result<Vec<CapsuleId>, BackendError> {
        super::persist::capsule_ids(
            &self.config.data_dir.join("capsules"),
            STATE_FILE,
            BackendKind::Firecracker,
        )
    }

    /// Removes the capsule's disk and files (its processes must be gone).
    fn remove_files(&self, id: &CapsuleId, instance: &str) -> Result<(), BackendError> {
        self.disks
            .destroy(id.as_str())
            .map_err(|source| BackendError::Disk {
                id: id.clone(),
                source,
            })?;
        self.snapshots(id)
            .remove()
            .map_err(io_err(id, "remove the snapshot"))?;
        for dir in [self.launcher.instance_dir(instance), self.capsule_dir(id)] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(id, format!("remove {}", dir.display()))(e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Firecracker's instance id for a capsule: the capsule id where it fits
/// Firecracker's rule (letters, digits, `-`), else a stable hash of it.
fn instance_id(id: &CapsuleId) -> String {
    let s = id.as_str();
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return s.to_owned();
    }
    let hash = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("c-{hash:016x}")
}

fn status_of(capsule: &Capsule) -> CapsuleStatus {
    let running = capsule.pid().is_some();
    let state = match capsule.state().phase {
        Phase::Paused | Phase::Captured => RunState::Paused,
        Phase::Pausing | Phase::Running | Phase::Resuming if running => RunState::Running,
        _ => RunState::Exited,
    };
    CapsuleStatus {
        state,
        oom_kills: 0,
    }
}

/// CPU time (user + system) of process `pid`, in nanoseconds.
fn cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces); utime and
    // stime are fields 14 and 15, i.e. the 12th and 13th after it.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&hz| hz > 0)?;
    Some(ticks * 1_000_000_000 / hz)
}

/// (resident bytes, threads) of process `pid`.
fn memory_and_threads(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")? * 1024, field("Threads:")?))
}

#[async_trait]
impl Backend for FirecrackerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    fn pause_mode(&self) -> PauseMode {
        PauseMode::Snapshot
    }

    fn shapes_egress(&self) -> bool {
        true
    }

    async fn set_tx_limit(
        &self,
        id: &CapsuleId,
        limit: Option<TxLimit>,
    ) -> Result<(), BackendError> {
        if let Some(l) = &limit {
            l.validate().map_err(|e| SpecError {
                field: "tx_limit",
                reason: e.to_string(),
            })?;
        }
        let capsule = self.capsule_in(id, Phase::Running, "change the egress limit")?;
        let client = self.client(&capsule)?;
        vm::set_tx_limit(&client, limit)
            .await
            .map_err(Self::vmm_err(id))?;
        capsule.update(|s| s.spec.tx_limit = limit)
    }

    async fn create(&self, spec: &CapsuleSpec) -> Result<CapsuleHandle, BackendError> {
        spec.validate()?;
        if spec.resources.vcpus > 32 {
            return Err(SpecError {
                field: "vcpus",
                reason: "a microVM has at most 32 vCPUs".into(),
            }
            .into());
        }
        let id = &spec.id;
        let dir = self.inner.capsule_dir(id);
        if self.inner.table().contains_key(id) {
            return Err(BackendError::AlreadyExists(id.clone()));
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BackendError::AlreadyExists(id.clone()));
            }
            Err(e) => return Err(io_err(id, format!("create {}", dir.display()))(e)),
        }
        let capsule = Arc::new(Capsule::new(
            dir,
            Persisted {
                spec: spec.clone(),
                instance: instance_id(id),
                disk: None,
                phase: Phase::Creating,
                restored: None,
                cpu_ns_before: 0,
            },
        ));
        let made = async {
            capsule.save()?;
            self.boot(&capsule).await?;
            capsule.set_phase(Phase::Running)
        }
        .await;
        if let Err(e) = made {
            tracing::warn!(capsule = %id, error = %e, "microVM failed to start; cleaning up");
            let instance = capsule.state().instance;
            let cleanup = async {
                self.stop(&capsule).await?;
                let id = id.clone();
                self.blocking(move |inner| inner.remove_files(&id, &instance))
                    .await
            };
            if let Err(cleanup) = cleanup.await {
                tracing::error!(capsule = %id, error = %cleanup, "cleanup after a failed start");
            }
            return Err(e);
        }
        tracing::info!(capsule = %id, pid = ?capsule.pid(), "microVM started");
        self.inner.table().insert(id.clone(), Arc::clone(&capsule));
        Ok(CapsuleHandle {
            id: id.clone(),
            kind: BackendKind::Firecracker,
            status: status_of(&capsule),
        })
    }

    async fn pause(&self, id: &CapsuleId) -> Result<(), BackendError> {
        let capsule = self.capsule_in(id, Phase::Running, "pause")?;
        if let Err(e) = self.snapshot_and_stop(&capsule).await {
            // Before the snapshot was complete the VM is still there: let
            // it run on. After, the pause finishes at the next adoption.
            if capsule.state().phase == Phase::Pausing
                && let Err(undo) = self.undo_pause(&capsule).await
            {
                tracing::error!(capsule = %id, error = %undo, "could not let the VM run on");
            }
            tracing::warn!(capsule = %id, error = %e, state = ?status_of(&capsule).state, "pause failed");
            return Err(e);
        }
        tracing::info!(capsule = %id, "microVM paused (snapshot taken, process stopped)");
        Ok(())
    }

    async fn resume(&self, id: &CapsuleId) -> Result<(), BackendError> {
        let capsule = self.capsule_in(id, Phase::Paused, "resume")?;
        capsule.set_phase(Phase::Resuming)?;
        match self.restore(&capsule).await {
            Ok(()) => {
                capsule.set_phase(Phase::Running)?;
                tracing::info!(capsule = %id, pid = ?capsule.pid(), "microVM resumed");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(capsule = %id, error = %e, "resume failed; the capsule stays paused");
                if let Err(cleanup) = self.stop(&capsule).await {
                    tracing::error!(capsule = %id, error = %cleanup, "stopping the failed restore");
                }
                capsule.update(|s| {
                    s.phase = Phase::Paused;
                    s.restored = None;
                })?;
                Err(e)
            }
        }
    }

    async fn destroy(&self, id: &CapsuleId) -> Result<(), BackendError> {
        let capsule = match self.inner.capsule(id) {
            Ok(c) => c,
            Err(_) => {
                // Not adopted (a previous agent's leftover): stop whatever
                // still runs for it first.
                let state = self.inner.load(id)?;
                let capsule = Arc::new(Capsule::new(self.inner.capsule_dir(id), state));
                if let Some(found) = self
                    .inner
                    .launcher
                    .find_running()
                    .map_err(|source| BackendError::Process {
                        id: id.clone(),
                        source,
                    })?
                    .into_iter()
                    .find(|f| f.id == capsule.state().instance)
                {
                    let fc = self.inner.launcher.adopt(&found).map_err(|source| {
                        BackendError::Process {
                            id: id.clone(),
                            source,
                        }
                    })?;
                    lock(&capsule.live).firecracker = Some(fc);
                }
                capsule
            }
        };
        self.stop(&capsule).await?;
        let instance = capsule.state().instance;
        let cid = id.clone();
        self.blocking(move |inner| inner.remove_files(&cid, &instance))
            .await?;
        self.inner.table().remove(id);
        tracing::info!(capsule = %id, "microVM destroyed");
        Ok(())
    }

    async fn persisted(&self) -> Result<Vec<CapsuleId>, BackendError> {
        self.inner.persisted_ids()
    }

    async fn adopt(&self, id: &CapsuleId) -> Result<CapsuleHandle, BackendError> {
        if self.inner.table().contains_key(id) {
            return Err(BackendError::AlreadyExists(id.clone()));
        }
        let state = self.inner.load(id)?;
        if &state.spec.id != id {
            return Err(BackendError::CorruptState {
                id: id.clone(),
                reason: "its id differs from its directory's name".into(),
            });
        }
        let capsule = Arc::new(Capsule::new(self.inner.capsule_dir(id), state));
        let state = self.take_over(&capsule).await?;
        tracing::info!(capsule = %id, ?state, "microVM adopted");
        self.inner.table().insert(id.clone(), Arc::clone(&capsule));
        Ok(CapsuleHandle {
            id: id.clone(),
            kind: BackendKind::Firecracker,
            status: CapsuleStatus {
                state,
                oom_kills: 0,
            },
        })
    }

    async fn status(&self, id: &CapsuleId) -> Result<CapsuleStatus, BackendError> {
        Ok(status_of(&*self.inner.capsule(id)?))
    }

    async fn metrics(&self, id: &CapsuleId) -> Result<MetricsSample, BackendError> {
        let capsule = self.inner.capsule(id)?;
        let state = capsule.state();
        let pid = capsule.pid();
        let (memory_bytes, pids) = pid.and_then(memory_and_threads).unwrap_or((0, 0));
        let cpu = pid.and_then(cpu_ns).unwrap_or(0);
        let disk_used_bytes = self.inner.disks.allocated_bytes(id.as_str()).unwrap_or(0);
        Ok(MetricsSample {
            at: SystemTime::now(),
            cpu_usage_ns: state.cpu_ns_before + cpu,
            memory_bytes,
            memory_limit_bytes: u64::from(state.spec.resources.memory_mb) << 20,
            disk_used_bytes,
            disk_total_bytes: u64::from(state.spec.resources.disk_mb) << 20,
            pids,
            oom_kills: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_follow_firecrackers_rule() {
        let plain = CapsuleId::new("cap-1").unwrap();
        assert_eq!(instance_id(&plain), "cap-1");
        let underscore = CapsuleId::new("cap_1").unwrap();
        let i = instance_id(&underscore);
        assert!(i.starts_with("c-") && i.len() == 18, "{i}");
        assert_ne!(i, instance_id(&CapsuleId::new("cap_2").unwrap()));
    }

    #[test]
    fn own_cpu_time_and_memory_are_read() {
        let me = std::process::id();
        assert!(cpu_ns(me).is_some());
        let (rss, threads) = memory_and_threads(me).unwrap();
        assert!(rss > 0 && threads >= 1);
    }
}
