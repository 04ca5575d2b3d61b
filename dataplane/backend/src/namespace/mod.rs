//! The namespace backend: capsules as process trees in their own user,
//! mount, PID, UTS, IPC and network namespaces, on an overlay of the
//! template (shared read-only lower layer, private upper layer on a
//! loop-mounted ext4 image that is the capsule's disk quota), in a cgroup
//! with CPU, memory and PID limits, under a seccomp filter with
//! no-new-privileges. Init is the host's envd, bind-mounted read-only.
//!
//! Module map: `launch` forks init and builds its namespaces, `rootfs`
//! plans its file system, `disk` makes the private disks (and keeps a
//! pool of ready ones), [`warren_template::envd`] makes the host's envd runnable inside,
//! [`seccomp`] holds the filter, `state` what is persisted for adoption,
//! [`enter`] runs a command inside a capsule. Cgroups are
//! [`crate::cgroup`], templates [`warren_template`].
//!
//! Files per capsule, in `<data_dir>/capsules/<id>/`: `backend.json`,
//! `disk.ext4` (sparse), and the empty mount points `rootfs/` and `disk/`
//! (the mounts exist only inside the capsule's mount namespace, so they
//! vanish with it and never show on the host).

mod disk;
pub mod enter;
mod launch;
mod rootfs;
pub mod seccomp;
mod state;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use seccompiler::BpfProgram;

use super::{
    Backend, BackendError, BackendKind, CapsuleHandle, CapsuleId, CapsuleSpec, CapsuleStatus,
    MetricsSample, RunState, SpecError,
};
use crate::cgroup::{Cgroup, CgroupTree, FreezeState, Hierarchy, Limits};
use state::{InitProcess, Persisted};
use warren_template::envd;
use warren_template::view::{PrivateMounts, run_logged};
use warren_template::{IdMap, TemplateStore};

/// What a capsule's init (pid 1) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitCommand {
    /// The host's envd, bind-mounted read-only into the capsule and run as
    /// `envd --port <port>`.
    Envd { binary: PathBuf, port: u16 },
    /// A command from the template (argv; the first word an absolute path
    /// inside the capsule). For templates with their own init, and tests.
    Template(Vec<String>),
}

/// Settings of a namespace backend.
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
    /// `$WARREN_DIR`: `templates/`, `capsules/` and `cache/` live here.
    pub data_dir: PathBuf,
    /// Capsule cgroups go to `<hierarchy>/<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
    pub init: InitCommand,
    pub id_map: IdMap,
    /// Static busybox the `tiny` template is made from.
    pub busybox: PathBuf,
    /// Private disks kept ready per disk size (0: make each on demand,
    /// ~10-20 ms more per start).
    pub disk_pool: usize,
    /// How long starting init, freezing and killing may take.
    pub timeout: Duration,
    /// Remount the host's cgroup2 hierarchy with `favordynmods` at start
    /// (see [`crate::cgroup::favor_dynamic_modifications`]): saves ~10 ms
    /// per capsule start.
    pub favor_dynmods: bool,
}

impl NamespaceConfig {
    pub fn new(data_dir: PathBuf, init: InitCommand) -> Self {
        Self {
            data_dir,
            cgroup_parent: "warren".into(),
            init,
            id_map: IdMap::default(),
            busybox: "/bin/busybox".into(),
            disk_pool: 2,
            timeout: Duration::from_secs(10),
            favor_dynmods: true,
        }
    }
}

/// A capsule this backend is in charge of.
#[derive(Debug)]
struct Live {
    state: Persisted,
    cgroup: Cgroup,
}

impl Live {
    fn init(&self) -> Option<InitProcess> {
        self.state.init.filter(InitProcess::alive)
    }
}

/// The namespace backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NamespaceBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NamespaceConfig,
    cgroups: CgroupTree,
    templates: TemplateStore,
    disks: Arc<disk::DiskPool>,
    filters: Vec<BpfProgram>,
    /// Set when init is envd.
    envd: Option<envd::EnvdRuntime>,
    capsules: Mutex<HashMap<CapsuleId, Arc<Live>>>,
}

impl NamespaceBackend {
    /// Checks the host (cgroup hierarchy, envd binary) and prepares the
    /// data directory.
    pub fn new(config: NamespaceConfig) -> Result<Self, BackendError> {
        let unsupported = |reason: String| BackendError::Unsupported {
            kind: BackendKind::Namespace,
            reason,
        };
        let hierarchy = Hierarchy::detect()?;
        if config.favor_dynmods {
            match crate::cgroup::favor_dynamic_modifications() {
                Ok(true) => tracing::info!("remounted the cgroup2 hierarchy with favordynmods"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not enable favordynmods; capsule starts are ~10 ms slower")
                }
            }
        }
        let cgroups = CgroupTree::new(hierarchy, &config.cgroup_parent)?;
        let envd = match &config.init {
            InitCommand::Envd { binary, port } => Some(
                envd::EnvdRuntime::prepare(binary, *port, &config.data_dir.join("runtime"))
                    .map_err(|e| unsupported(format!("envd binary {}: {e}", binary.display())))?,
            ),
            InitCommand::Template(_) => None,
        };
        let capsules_dir = config.data_dir.join("capsules");
        std::fs::create_dir_all(&capsules_dir)
            .map_err(|e| unsupported(format!("create {}: {e}", capsules_dir.display())))?;
        let filters = seccomp::capsule_filters().map_err(|e| unsupported(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                templates: TemplateStore::new(
                    config.data_dir.join("templates"),
                    config.id_map,
                    config.busybox.clone(),
                ),
                disks: Arc::new(
                    disk::DiskPool::new(
                        disk::ImageCache::new(config.data_dir.join("cache")),
                        &config.data_dir.join("cache/pool"),
                        config.disk_pool,
                    )
                    .map_err(|e| unsupported(format!("prepare the disk pool: {e}")))?,
                ),
                cgroups,
                filters,
                envd,
                capsules: Mutex::new(HashMap::new()),
                config,
            }),
        })
    }

    pub fn templates(&self) -> &TemplateStore {
        &self.inner.templates
    }

    /// The cgroup version in use (1 or 2).
    pub fn cgroup_version(&self) -> u8 {
        self.inner.cgroups.hierarchy().version()
    }

    /// The capsule's directory on the host.
    pub fn capsule_dir(&self, id: &CapsuleId) -> PathBuf {
        self.inner.capsule_dir(id)
    }

    /// Host pid of the capsule's init, while it runs.
    pub fn init_pid(&self, id: &CapsuleId) -> Result<i32, BackendError> {
        let live = self.inner.live(id)?;
        live.init()
            .map(|i| i.pid)
            .ok_or(BackendError::InvalidState {
                id: id.clone(),
                state: RunState::Exited,
                op: "find init",
            })
    }

    /// The capsule's cgroup.
    pub fn cgroup(&self, id: &CapsuleId) -> Result<Cgroup, BackendError> {
        Ok(self.inner.live(id)?.cgroup.clone())
    }

    /// A command that runs `program` inside the running capsule (see
    /// [`enter::command`]).
    pub fn command(&self, id: &CapsuleId, program: &str) -> Result<Command, BackendError> {
        let pid = self.init_pid(id)?;
        let live = self.inner.live(id)?;
        enter::command(
            pid,
            &live.cgroup.procs_files(),
            &self.inner.filters,
            program,
        )
        .map_err(|e| BackendError::Io {
            id: id.clone(),
            context: "prepare a command inside the capsule".into(),
            source: e,
        })
    }

    /// [`Backend::destroy`] without a runtime (for drop guards).
    pub fn destroy_blocking(&self, id: &CapsuleId) -> Result<(), BackendError> {
        self.inner.destroy(id)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = Arc::clone(&self.inner);
        super::blocking(move || f(&inner)).await
    }
}

impl Inner {
    fn capsule_dir(&self, id: &CapsuleId) -> PathBuf {
        self.config.data_dir.join("capsules").join(id.as_str())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<CapsuleId, Arc<Live>>> {
        // The table holds plain data; a panic elsewhere cannot leave it torn.
        self.capsules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self, id: &CapsuleId) -> Result<Arc<Live>, BackendError> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(id.clone()))
    }

    /// The capsule, which must be in `state` for `op`.
    fn live_in(
        &self,
        id: &CapsuleId,
        state: RunState,
        op: &'static str,
    ) -> Result<Arc<Live>, BackendError> {
        let live = self.live(id)?;
        let actual = status_of(&live)?.state;
        if actual != state {
            return Err(BackendError::InvalidState {
                id: id.clone(),
                state: actual,
                op,
            });
        }
        Ok(live)
    }

    fn io_err(
        id: &CapsuleId,
        context: impl Into<String>,
    ) -> impl FnOnce(io::Error) -> BackendError {
        let (id, context) = (id.clone(), context.into());
        move |source| BackendError::Io {
            id,
            context,
            source,
        }
    }

    fn create(&self, spec: &CapsuleSpec) -> Result<CapsuleHandle, BackendError> {
        spec.validate()?;
        let id = &spec.id;
        // Fails fast on an unknown template (and makes a built-in one).
        self.templates.ensure(&spec.template)?;
        let netns = open_netns(&spec.netns)?;
        if self.table().contains_key(id) {
            return Err(BackendError::AlreadyExists(id.clone()));
        }
        let dir = self.capsule_dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BackendError::AlreadyExists(id.clone()));
            }
            Err(e) => return Err(Self::io_err(id, format!("create {}", dir.display()))(e)),
        }
        // The version mounted as the lower layer stays until destroy.
        let template = match self.templates.hold(&spec.template, id.as_str()) {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e.into());
            }
        };
        let mut persisted = Persisted {
            spec: spec.clone(),
            cgroup: id.as_str().to_owned(),
            disk_image: dir.join("disk.ext4"),
            loop_device: None,
            init: None,
        };
        let started = Instant::now();
        let result = self.start(&dir, &mut persisted, &template.rootfs(), &netns);
        match result {
            Ok(live) => {
                tracing::info!(capsule = %id, pid = ?live.state.init.map(|i| i.pid),
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "capsule started");
                let live = Arc::new(live);
                // In the table before anything else can fail: from here on
                // the capsule exists and only destroy removes it.
                self.table().insert(id.clone(), Arc::clone(&live));
                let status = status_of(&live)?;
                Ok(CapsuleHandle {
                    id: id.clone(),
                    kind: BackendKind::Namespace,
                    status,
                })
            }
            Err(e) => {
                tracing::warn!(capsule = %id, error = %e, "capsule failed to start; cleaning up");
                if let Err(cleanup) = self.teardown(&dir, &persisted) {
                    tracing::error!(capsule = %id, error = %cleanup, "cleanup after a failed start");
                }
                Err(e)
            }
        }
    }

    /// Disk, cgroup, init; `persisted` records each piece as it is made so
    /// a crash at any point leaves something [`Inner::teardown`] can clean.
    fn start(
        &self,
        dir: &Path,
        persisted: &mut Persisted,
        lower: &Path,
        netns: &File,
    ) -> Result<Live, BackendError> {
        let spec = persisted.spec.clone();
        let id = &spec.id;
        let save = |p: &Persisted| state::save(dir, p).map_err(Self::io_err(id, "persist state"));
        save(persisted)?;

        let disk = self
            .disks
            .take(spec.resources.disk_mb, &persisted.disk_image)
            .map_err(Self::io_err(id, "prepare the disk"))?;
        persisted.loop_device = Some(disk.loop_number());
        save(persisted)?;

        let cgroup = self.cgroups.create(&persisted.cgroup)?;
        cgroup.set_limits(&Limits {
            cpus: spec.resources.vcpus,
            memory_bytes: u64::from(spec.resources.memory_mb) << 20,
            pids_max: spec.resources.max_pids,
        })?;
        let (new_root, disk_mount) = (dir.join("rootfs"), dir.join("disk"));
        for d in [&new_root, &disk_mount] {
            std::fs::create_dir(d).map_err(Self::io_err(id, format!("create {}", d.display())))?;
        }
        let plan = self
            .plan(&spec, lower, disk.mount_fd(), &disk_mount, &new_root)
            .map_err(|e| SpecError {
                field: "env",
                reason: e.to_string(),
            })?;
        let procs = cgroup
            .procs_files()
            .iter()
            .map(|p| std::fs::OpenOptions::new().write(true).open(p))
            .collect::<io::Result<Vec<_>>>()
            .map_err(Self::io_err(id, "open the cgroup"))?;
        let pid = launch::launch(&plan, netns, &procs, self.config.timeout).map_err(|e| {
            BackendError::Launch {
                id: id.clone(),
                step: e.step,
                source: e.source,
            }
        })?;
        // Init's namespace now holds the mount and the device; from here the
        // device auto-clears when that namespace goes away.
        drop(disk);
        persisted.init = Some(
            InitProcess::of(pid.as_raw()).map_err(Self::io_err(id, "read init's start time"))?,
        );
        // Under memory pressure the OOM killer must take the workload, not
        // init (envd): only the host's root may lower the score, and it
        // survives exec; envd raises its own children's back to 100.
        if let Err(e) = std::fs::write(format!("/proc/{}/oom_score_adj", pid.as_raw()), "-900") {
            tracing::warn!(capsule = %id, error = %e, "cannot protect init from the OOM killer");
        }
        save(persisted)?;
        Ok(Live {
            state: persisted.clone(),
            cgroup,
        })
    }

    fn plan(
        &self,
        spec: &CapsuleSpec,
        lower: &Path,
        disk: i32,
        disk_mount: &Path,
        new_root: &Path,
    ) -> Result<launch::Plan, std::ffi::NulError> {
        let (argv, runtime) = match (&self.envd, &self.config.init) {
            (Some(rt), _) => (rt.argv(), Some(rt)),
            (None, InitCommand::Template(argv)) => (argv.clone(), None),
            // `new` prepares the runtime whenever init is envd.
            (None, InitCommand::Envd { .. }) => (Vec::new(), None),
        };
        let ops = rootfs::plan(&rootfs::Params {
            lower,
            disk,
            disk_mount,
            new_root,
            id_map: self.config.id_map,
            memory_mb: spec.resources.memory_mb,
            envd: runtime.map(|e| rootfs::EnvdMounts {
                binary: &e.binary,
                binary_inside: envd::ENVD_INSIDE,
                libs: e
                    .libs
                    .as_ref()
                    .map(|(dir, _)| (dir.as_path(), envd::LIBS_INSIDE)),
            }),
        })?;
        let mut env = vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            "HOME=/root".to_owned(),
            format!("HOSTNAME={}", spec.hostname()),
            format!("WARREN_CAPSULE_ID={}", spec.id),
        ];
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        Ok(launch::Plan {
            ops,
            new_root: CString::new(new_root.as_os_str().as_bytes())?,
            hostname: CString::new(spec.hostname())?,
            workdir: CString::new("/root")?,
            log: CString::new("/run/warren-init.log")?,
            argv: argv
                .into_iter()
                .map(CString::new)
                .collect::<Result<_, _>>()?,
            envp: env
                .into_iter()
                .map(CString::new)
                .collect::<Result<_, _>>()?,
            filters: self.filters.clone(),
            id_map: self.config.id_map,
        })
    }

    /// Kills what runs, waits for the kernel to release the disk, removes
    /// the cgroup and the capsule's files. Each step tolerates pieces that
    /// were never made or are already gone.
    fn teardown(&self, dir: &Path, persisted: &Persisted) -> Result<(), BackendError> {
        let id = &persisted.spec.id;
        let timeout = self.config.timeout;
        let cgroup = self.cgroups.open(&persisted.cgroup)?;
        let init = match persisted.init {
            Some(init) => init
                .pidfd()
                .map_err(Self::io_err(id, "open init's pidfd"))?,
            None => None,
        };
        if let Some(pidfd) = &init {
            // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    0,
                    0,
                )
            };
        }
        if let Some(cgroup) = &cgroup {
            cgroup.kill_all(timeout)?;
        }
        // Init leaves its cgroup before it has finished exiting (it waits
        // for the rest of its PID namespace first).
        if let Some(pidfd) = &init
            && !state::wait_exit(pidfd, timeout).map_err(Self::io_err(id, "wait for init"))?
        {
            return Err(Self::io_err(id, "wait for init")(io::Error::new(
                io::ErrorKind::TimedOut,
                "init did not exit after SIGKILL",
            )));
        }
        if let Some(number) = persisted.loop_device {
            // The dead mount namespace's unmount finishes asynchronously.
            let start = Instant::now();
            while crate::loopdev::attached_to(number, &persisted.disk_image)
                && start.elapsed() < timeout
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            crate::loopdev::detach_if_attached(number, &persisted.disk_image)
                .map_err(Self::io_err(id, format!("detach /dev/loop{number}")))?;
        }
        if let Some(cgroup) = &cgroup {
            cgroup.remove(timeout)?;
        }
        remove_capsule_dir(dir).map_err(Self::io_err(id, format!("remove {}", dir.display())))?;
        self.templates.release(id.as_str())?;
        Ok(())
    }

    /// See [`Backend::export_rootfs`]: `cp` reads the capsule's overlay
    /// through a non-recursive clone of its root mount, taken from the
    /// capsule's own mount namespace (the overlay exists nowhere else).
    fn export_rootfs(&self, id: &CapsuleId, dest: &Path) -> Result<(), BackendError> {
        let live = self.live(id)?;
        let exited = || BackendError::InvalidState {
            id: id.clone(),
            state: RunState::Exited,
            op: "copy the filesystem",
        };
        let init = live.init().ok_or_else(exited)?;
        let ns = File::open(format!("/proc/{}/ns/mnt", init.pid))
            .map_err(Self::io_err(id, "open the capsule's mount namespace"))?;
        // Opened before checking: the descriptor pins the namespace of this
        // very init, not of a process that reused its pid.
        if !init.alive() {
            return Err(exited());
        }
        let mut cp = PrivateMounts::new()
            .cwd_in_root_of(ns)
            .command("cp")
            .map_err(Self::io_err(id, "prepare the copy"))?;
        cp.args([
            "--no-dereference",
            "--recursive",
            "--preserve=mode,ownership,timestamps,links,xattr",
            "--sparse=auto",
            "--no-target-directory",
            ".",
        ])
        .arg(dest)
        .env("LC_ALL", "C");
        let started = Instant::now();
        run_logged(&mut cp, "cp (coreutils)", None)
            .map_err(Self::io_err(id, "copy the capsule's filesystem"))?;
        tracing::info!(capsule = %id, dest = %dest.display(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "capsule filesystem copied");
        Ok(())
    }

    fn destroy(&self, id: &CapsuleId) -> Result<(), BackendError> {
        let dir = self.capsule_dir(id);
        let persisted = match self.table().get(id) {
            Some(live) => live.state.clone(),
            None => load_state(id, &dir)?,
        };
        self.teardown(&dir, &persisted)?;
        self.table().remove(id);
        tracing::info!(capsule = %id, "capsule destroyed");
        Ok(())
    }

    fn adopt(&self, id: &CapsuleId) -> Result<CapsuleHandle, BackendError> {
        if self.table().contains_key(id) {
            return Err(BackendError::AlreadyExists(id.clone()));
        }
        let dir = self.capsule_dir(id);
        let state = load_state(id, &dir)?;
        let corrupt = |reason: &str| BackendError::CorruptState {
            id: id.clone(),
            reason: reason.into(),
        };
        if &state.spec.id != id {
            return Err(corrupt("its id differs from its directory's name"));
        }
        let cgroup = self
            .cgroups
            .open(&state.cgroup)?
            .ok_or_else(|| corrupt("its cgroup is gone"))?;
        let live = Live { state, cgroup };
        let status = status_of(&live)?;
        tracing::info!(capsule = %id, state = ?status.state, "capsule adopted");
        self.table().insert(id.clone(), Arc::new(live));
        Ok(CapsuleHandle {
            id: id.clone(),
            kind: BackendKind::Namespace,
            status,
        })
    }

    fn persisted(&self) -> Result<Vec<CapsuleId>, BackendError> {
        super::persist::capsule_ids(
            &self.config.data_dir.join("capsules"),
            state::STATE_FILE,
            BackendKind::Namespace,
        )
    }
}

fn load_state(id: &CapsuleId, dir: &Path) -> Result<Persisted, BackendError> {
    super::persist::load_capsule(id, dir, state::STATE_FILE)
}

fn status_of(live: &Live) -> Result<CapsuleStatus, BackendError> {
    let oom_kills = live.cgroup.stats()?.oom_kills;
    let state = match live.init() {
        None => RunState::Exited,
        Some(_) => match live.cgroup.freeze_state()? {
            FreezeState::Thawed => RunState::Running,
            FreezeState::Freezing | FreezeState::Frozen => RunState::Paused,
        },
    };
    Ok(CapsuleStatus { state, oom_kills })
}

/// Opens the network namespace the caller made, refusing anything that is
/// not one (a typo'd path must not silently share the host's network).
fn open_netns(path: &Path) -> Result<File, BackendError> {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let invalid = |reason: String| {
        BackendError::InvalidSpec(SpecError {
            field: "netns",
            reason,
        })
    };
    let file = File::open(path).map_err(|e| invalid(format!("open {}: {e}", path.display())))?;
    let fs = nix::sys::statfs::fstatfs(&file)
        .map_err(|e| invalid(format!("statfs {}: {e}", path.display())))?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(invalid(format!(
            "{} is not a namespace file",
            path.display()
        )));
    }
    Ok(file)
}

/// Removes a capsule directory, refusing to descend into a mount point (the
/// capsule's mounts live in its own namespace; one visible here is a bug
/// that must not cost the template its files).
fn remove_capsule_dir(dir: &Path) -> io::Result<()> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for sub in ["rootfs", "disk"] {
        if let Ok(m) = std::fs::metadata(dir.join(sub))
            && m.dev() != meta.dev()
        {
            return Err(io::Error::other(format!(
                "{} is a mount point on the host",
                dir.join(sub).display()
            )));
        }
    }
    std::fs::remove_dir_all(dir)
}

#[async_trait]
impl Backend for NamespaceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Namespace
    }

    async fn create(&self, spec: &CapsuleSpec) -> Result<CapsuleHandle, BackendError> {
        let spec = spec.clone();
        self.blocking(move |inner| inner.create(&spec)).await
    }

    async fn pause(&self, id: &CapsuleId) -> Result<(), BackendError> {
        let live = self.inner.live_in(id, RunState::Running, "pause")?;
        live.cgroup.freeze(self.inner.config.timeout).await?;
        Ok(())
    }

    async fn resume(&self, id: &CapsuleId) -> Result<(), BackendError> {
        let live = self.inner.live_in(id, RunState::Paused, "resume")?;
        live.cgroup.thaw(self.inner.config.timeout).await?;
        Ok(())
    }

    async fn destroy(&self, id: &CapsuleId) -> Result<(), BackendError> {
        let id = id.clone();
        self.blocking(move |inner| inner.destroy(&id)).await
    }

    async fn persisted(&self) -> Result<Vec<CapsuleId>, BackendError> {
        self.blocking(|inner| inner.persisted()).await
    }

    async fn adopt(&self, id: &CapsuleId) -> Result<CapsuleHandle, BackendError> {
        let id = id.clone();
        self.blocking(move |inner| inner.adopt(&id)).await
    }

    async fn status(&self, id: &CapsuleId) -> Result<CapsuleStatus, BackendError> {
        status_of(&*self.inner.live(id)?)
    }

    async fn export_rootfs(&self, id: &CapsuleId, dest: &Path) -> Result<(), BackendError> {
        let (id, dest) = (id.clone(), dest.to_owned());
        self.blocking(move |inner| inner.export_rootfs(&id, &dest))
            .await
    }

    async fn metrics(&self, id: &CapsuleId) -> Result<MetricsSample, BackendError> {
        let live = self.inner.live(id)?;
        let init = live.init().ok_or(BackendError::InvalidState {
            id: id.clone(),
            state: RunState::Exited,
            op: "sample metrics",
        })?;
        let stats = live.cgroup.stats()?;
        // The overlay reports its upper layer's file system: the capsule's disk.
        let root = format!("/proc/{}/root", init.pid);
        let fs = nix::sys::statvfs::statvfs(root.as_str())
            .map_err(|e| Inner::io_err(id, format!("statvfs {root}"))(e.into()))?;
        let block = fs.fragment_size();
        Ok(MetricsSample {
            at: SystemTime::now(),
            cpu_usage_ns: stats.cpu_usage_ns,
            memory_bytes: stats.memory_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            disk_used_bytes: (fs.blocks() - fs.blocks_free()) * block,
            disk_total_bytes: fs.blocks() * block,
            pids: stats.pids,
            oom_kills: stats.oom_kills,
        })
    }
}
