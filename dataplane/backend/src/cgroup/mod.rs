//! Capsule cgroups: one API over cgroup v1 (one directory per controller
//! hierarchy, as on this host) and cgroup v2 (one unified directory, as on
//! most production hosts).
//!
//! The namespace backend puts each capsule in its own cgroup under a parent
//! (default `warren/`): CPU quota from vcpus, memory limit (swap included)
//! from memory_mb, a PID limit, the freezer for pause/resume, and the
//! counters its metrics sample reads (CPU time, memory, pids, OOM kills).

mod fs;
mod mountinfo;
pub mod v1;
pub mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use v1::{CgroupV1, V1Mounts};
pub use v2::CgroupV2;

/// CPU period the quota is expressed against (the kernel's default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Errors from cgroup operations; each names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: {0}")]
    Unsupported(String),
    #[error("invalid cgroup name {0:?}")]
    InvalidName(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unexpected contents in {path}: {contents:?}")]
    Parse { path: PathBuf, contents: String },
    #[error("cgroup {path} did not become {what} within {timeout:?}")]
    Timeout {
        path: PathBuf,
        what: &'static str,
        timeout: Duration,
    },
}

/// Resource limits of one cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU bandwidth in whole CPUs (quota = cpus × period).
    pub cpus: u32,
    /// Memory limit in bytes; swap is not allowed on top of it.
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids_max: u32,
}

/// One sample of a cgroup's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Current memory usage in bytes (page cache included).
    pub memory_bytes: u64,
    /// The memory limit in force, in bytes.
    pub memory_limit_bytes: u64,
    /// Tasks currently in the cgroup.
    pub pids: u64,
    /// Processes the kernel's OOM killer killed in this cgroup.
    pub oom_kills: u64,
}

/// Whether a cgroup's tasks are frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeState {
    Thawed,
    /// Freezing requested, not every task stopped yet.
    Freezing,
    Frozen,
}

/// The cgroup hierarchy of this host.
#[derive(Debug, Clone)]
pub enum Hierarchy {
    V1(V1Mounts),
    /// The unified hierarchy's mount point (usually `/sys/fs/cgroup`).
    V2(PathBuf),
}

impl Hierarchy {
    /// Reads `/proc/self/mountinfo`: v1 when the controllers capsules need are
    /// mounted as v1 hierarchies (also on "hybrid" hosts, whose unified
    /// hierarchy then has none of them), else v2 when a cgroup2 mount offers
    /// them.
    pub fn detect() -> Result<Self, CgroupError> {
        let text = fs::read("read", Path::new("/proc/self/mountinfo"))?;
        let mounts = mountinfo::cgroup_mounts(&text);
        if let Some(v1) = V1Mounts::from_mounts(&mounts) {
            return Ok(Self::V1(v1));
        }
        for m in mounts.iter().filter(|m| m.v2) {
            let controllers = fs::read("read", &m.path.join("cgroup.controllers"))?;
            if v2::REQUIRED
                .iter()
                .all(|c| controllers.split_whitespace().any(|have| have == *c))
            {
                return Ok(Self::V2(m.path.clone()));
            }
        }
        Err(CgroupError::Unsupported(format!(
            "need the cpu, cpuacct, memory, pids and freezer controllers on v1, or cpu, memory \
             and pids on a cgroup2 mount; found {mounts:?}"
        )))
    }

    /// 1 or 2.
    pub fn version(&self) -> u8 {
        match self {
            Self::V1(_) => 1,
            Self::V2(_) => 2,
        }
    }
}

/// Remounts the host's cgroup2 hierarchy with `favordynmods` (kernel 6.0+),
/// unless it already has it. Without it, moving a process between cgroups
/// (every capsule start) waits for an RCU grace period, ~10 ms here; with it
/// that cost moves to fork and exit, which become slightly slower host-wide.
/// The effect is global, so a cgroup2 mount on a v1 ("hybrid") host serves
/// too. Returns whether it remounted; `Ok(false)` also when there is no
/// cgroup2 mount.
pub fn favor_dynamic_modifications() -> Result<bool, CgroupError> {
    let text = fs::read("read", Path::new("/proc/self/mountinfo"))?;
    let Some(m) = mountinfo::cgroup_mounts(&text).into_iter().find(|m| m.v2) else {
        return Ok(false);
    };
    if m.options.iter().any(|o| o == "favordynmods") {
        return Ok(false);
    }
    // A remount resets every cgroup2 option it does not name: keep the
    // current ones (nsdelegate, memory_recursiveprot, ...).
    let mut options: Vec<&str> = m
        .options
        .iter()
        .map(String::as_str)
        .filter(|o| *o != "rw" && *o != "ro")
        .collect();
    options.push("favordynmods");
    nix::mount::mount(
        None::<&str>,
        &m.path,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT,
        Some(options.join(",").as_str()),
    )
    .map_err(|e| CgroupError::Io {
        op: "remount with favordynmods",
        path: m.path.clone(),
        source: e.into(),
    })?;
    Ok(true)
}

/// Where capsule cgroups live: `<hierarchy>/<parent>/<name>`.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    hierarchy: Hierarchy,
    parent: PathBuf,
}

impl CgroupTree {
    /// `parent` is relative to the hierarchy root, e.g. `warren`.
    pub fn new(hierarchy: Hierarchy, parent: &str) -> Result<Self, CgroupError> {
        let parent = PathBuf::from(parent.trim_matches('/'));
        if parent.as_os_str().is_empty()
            || parent
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(CgroupError::InvalidName(parent.display().to_string()));
        }
        Ok(Self { hierarchy, parent })
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Creates the cgroup `name` (it must not exist yet).
    pub fn create(&self, name: &str) -> Result<Cgroup, CgroupError> {
        check_name(name)?;
        Ok(match &self.hierarchy {
            Hierarchy::V1(m) => Cgroup::V1(CgroupV1::create(m, &self.parent, name)?),
            Hierarchy::V2(root) => Cgroup::V2(CgroupV2::create(root, &self.parent, name)?),
        })
    }

    /// The existing cgroup `name`, or `None` when it does not exist.
    pub fn open(&self, name: &str) -> Result<Option<Cgroup>, CgroupError> {
        check_name(name)?;
        Ok(match &self.hierarchy {
            Hierarchy::V1(m) => CgroupV1::open(m, &self.parent, name).map(Cgroup::V1),
            Hierarchy::V2(root) => CgroupV2::open(root, &self.parent, name).map(Cgroup::V2),
        })
    }
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_owned()))
    }
}

/// One capsule's cgroup, v1 or v2.
#[derive(Debug, Clone)]
pub enum Cgroup {
    V1(CgroupV1),
    V2(CgroupV2),
}

impl Cgroup {
    /// The `cgroup.procs` files a process must be written into to join this
    /// cgroup (one per v1 hierarchy, one on v2).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        match self {
            Self::V1(c) => c.dirs().iter().map(|d| d.join("cgroup.procs")).collect(),
            Self::V2(c) => vec![c.dir().join("cgroup.procs")],
        }
    }

    /// A directory naming this cgroup in logs.
    pub fn display_path(&self) -> &Path {
        match self {
            Self::V1(c) => c.freezer_dir(),
            Self::V2(c) => c.dir(),
        }
    }

    pub fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        match self {
            Self::V1(c) => c.set_limits(limits),
            Self::V2(c) => c.set_limits(limits),
        }
    }

    /// Moves process `pid` (0 = the caller) into this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        for file in self.procs_files() {
            fs::write(&file, &pid.to_string())?;
        }
        Ok(())
    }

    /// Process ids in the cgroup (host pid namespace).
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let file = match self {
            Self::V1(c) => c.freezer_dir().join("cgroup.procs"),
            Self::V2(c) => c.dir().join("cgroup.procs"),
        };
        let text = fs::read("read", &file)?;
        text.split_whitespace()
            .map(|p| {
                p.parse().map_err(|_| CgroupError::Parse {
                    path: file.clone(),
                    contents: text.clone(),
                })
            })
            .collect()
    }

    pub fn stats(&self) -> Result<Stats, CgroupError> {
        match self {
            Self::V1(c) => c.stats(),
            Self::V2(c) => c.stats(),
        }
    }

    pub fn freeze_state(&self) -> Result<FreezeState, CgroupError> {
        match self {
            Self::V1(c) => c.freeze_state(),
            Self::V2(c) => c.freeze_state(),
        }
    }

    /// Freezes every task and waits until the kernel reports the cgroup
    /// frozen.
    pub async fn freeze(&self, timeout: Duration) -> Result<(), CgroupError> {
        match self {
            Self::V1(c) => c.request_freeze(true)?,
            Self::V2(c) => c.request_freeze(true)?,
        }
        self.wait_state(FreezeState::Frozen, "frozen", timeout)
            .await
    }

    /// Thaws the cgroup and waits until the kernel reports it thawed.
    pub async fn thaw(&self, timeout: Duration) -> Result<(), CgroupError> {
        match self {
            Self::V1(c) => c.request_freeze(false)?,
            Self::V2(c) => c.request_freeze(false)?,
        }
        self.wait_state(FreezeState::Thawed, "thawed", timeout)
            .await
    }

    async fn wait_state(
        &self,
        want: FreezeState,
        what: &'static str,
        timeout: Duration,
    ) -> Result<(), CgroupError> {
        let start = Instant::now();
        // Freezing usually completes within microseconds: poll tightly first,
        // then back off.
        let mut pause = Duration::from_micros(50);
        loop {
            if self.freeze_state()? == want {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(CgroupError::Timeout {
                    path: self.display_path().to_owned(),
                    what,
                    timeout,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Kills every process in the cgroup and waits until it is empty. Works
    /// on frozen cgroups too (they are thawed so the kills land).
    pub fn kill_all(&self, timeout: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        loop {
            let procs = self.procs()?;
            if procs.is_empty() {
                return Ok(());
            }
            match self {
                Self::V1(c) => {
                    for pid in &procs {
                        // A process may exit between listing and kill: ESRCH is fine.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(*pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    // v1 frozen tasks only die once thawed.
                    c.request_freeze(false)?;
                }
                Self::V2(c) => c.kill()?,
            }
            if start.elapsed() > timeout {
                return Err(CgroupError::Timeout {
                    path: self.display_path().to_owned(),
                    what: "empty",
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Removes the cgroup's directories (it must be empty). Missing ones are
    /// fine, so removal can be retried after a crash.
    pub fn remove(&self, timeout: Duration) -> Result<(), CgroupError> {
        let dirs = match self {
            Self::V1(c) => c.dirs().to_vec(),
            Self::V2(c) => vec![c.dir().to_owned()],
        };
        let start = Instant::now();
        for dir in dirs {
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // Just-killed tasks can keep the cgroup busy for a moment.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < timeout =>
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(source) => {
                        return Err(CgroupError::Io {
                            op: "remove",
                            path: dir,
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
