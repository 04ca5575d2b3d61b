//! cgroup v2: one unified directory per capsule. Controllers must be enabled
//! in every ancestor's `cgroup.subtree_control`; freezing is built in
//! (`cgroup.freeze`, reported in `cgroup.events`), and so is killing a whole
//! cgroup (`cgroup.kill`).

use std::path::{Path, PathBuf};

use super::{CPU_PERIOD_US, CgroupError, FreezeState, Limits, Stats, fs};

/// Controllers a capsule's v2 cgroup needs.
pub(super) const REQUIRED: [&str; 3] = ["cpu", "memory", "pids"];

/// A capsule's v2 cgroup.
#[derive(Debug, Clone)]
pub struct CgroupV2 {
    dir: PathBuf,
}

impl CgroupV2 {
    /// A cgroup at an existing directory (for tests against plain files and
    /// for callers that manage the tree themselves).
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Creates `<root>/<parent>/<name>`, enabling the controllers the
    /// ancestors offer in their `cgroup.subtree_control` on the way down.
    pub(super) fn create(root: &Path, parent: &Path, name: &str) -> Result<Self, CgroupError> {
        let mut dir = root.to_owned();
        enable_controllers(&dir)?;
        for part in parent.components() {
            dir.push(part);
            fs::mkdir_all(&dir)?;
            enable_controllers(&dir)?;
        }
        dir.push(name);
        fs::mkdir(&dir)?;
        Ok(Self { dir })
    }

    pub(super) fn open(root: &Path, parent: &Path, name: &str) -> Option<Self> {
        let dir = root.join(parent).join(name);
        dir.is_dir().then_some(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        fs::write(
            &self.dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", u64::from(limits.cpus) * CPU_PERIOD_US),
        )?;
        fs::write(
            &self.dir.join("memory.max"),
            &limits.memory_bytes.to_string(),
        )?;
        // Only present when the kernel accounts swap.
        let swap = self.dir.join("memory.swap.max");
        if swap.exists() {
            fs::write(&swap, "0")?;
        }
        fs::write(&self.dir.join("pids.max"), &limits.pids_max.to_string())
    }

    pub(super) fn stats(&self) -> Result<Stats, CgroupError> {
        let usage_usec = fs::read_keyed(&self.dir.join("cpu.stat"), "usage_usec")?;
        Ok(Stats {
            cpu_usage_ns: usage_usec.saturating_mul(1000),
            memory_bytes: fs::read_u64(&self.dir.join("memory.current"))?,
            memory_limit_bytes: fs::read_u64(&self.dir.join("memory.max"))?,
            pids: fs::read_u64(&self.dir.join("pids.current"))?,
            oom_kills: fs::read_keyed(&self.dir.join("memory.events"), "oom_kill")?,
        })
    }

    pub(super) fn freeze_state(&self) -> Result<FreezeState, CgroupError> {
        let requested = fs::read_u64(&self.dir.join("cgroup.freeze"))? == 1;
        let frozen = fs::read_keyed(&self.dir.join("cgroup.events"), "frozen")? == 1;
        Ok(match (requested, frozen) {
            (true, true) => FreezeState::Frozen,
            (true, false) => FreezeState::Freezing,
            // Thawing is immediate; "frozen 1" lingering after a thaw request
            // is reported as not yet thawed.
            (false, true) => FreezeState::Freezing,
            (false, false) => FreezeState::Thawed,
        })
    }

    pub(super) fn request_freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        fs::write(
            &self.dir.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
    }

    /// SIGKILLs every process in the cgroup (kernel 5.14+; frozen ones too).
    pub(super) fn kill(&self) -> Result<(), CgroupError> {
        fs::write(&self.dir.join("cgroup.kill"), "1")
    }
}

/// Enables in `dir`'s `cgroup.subtree_control` whichever required
/// controllers `dir` itself offers.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let offered = fs::read("read", &dir.join("cgroup.controllers"))?;
    let enabled = fs::read("read", &dir.join("cgroup.subtree_control"))?;
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|c| offered.split_whitespace().any(|o| o == **c))
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(&dir.join("cgroup.subtree_control"), &missing.join(" "))
}
