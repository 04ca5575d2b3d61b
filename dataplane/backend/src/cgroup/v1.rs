//! cgroup v1: each controller is its own hierarchy (or a few share one), so a
//! capsule's cgroup is one directory per hierarchy with the same relative
//! path. Freezing goes through the `freezer` controller.

use std::path::{Path, PathBuf};

use super::mountinfo::CgroupMount;
use super::{CPU_PERIOD_US, CgroupError, FreezeState, Limits, Stats, fs};

/// Mount points of the v1 controllers capsules use (equal when co-mounted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mounts {
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub memory: PathBuf,
    pub pids: PathBuf,
    pub freezer: PathBuf,
}

impl V1Mounts {
    pub(super) fn from_mounts(mounts: &[CgroupMount]) -> Option<Self> {
        let find = |name: &str| {
            mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == name))
                .map(|m| m.path.clone())
        };
        Some(Self {
            cpu: find("cpu")?,
            cpuacct: find("cpuacct")?,
            memory: find("memory")?,
            pids: find("pids")?,
            freezer: find("freezer")?,
        })
    }

    /// The distinct hierarchy roots, in a fixed order.
    fn roots(&self) -> Vec<&Path> {
        let mut roots: Vec<&Path> = Vec::new();
        for p in [
            &self.freezer,
            &self.memory,
            &self.pids,
            &self.cpu,
            &self.cpuacct,
        ] {
            if !roots.contains(&p.as_path()) {
                roots.push(p);
            }
        }
        roots
    }
}

/// A capsule's v1 cgroup.
#[derive(Debug, Clone)]
pub struct CgroupV1 {
    cpu: PathBuf,
    cpuacct: PathBuf,
    memory: PathBuf,
    pids: PathBuf,
    freezer: PathBuf,
    /// The distinct directories above, freezer first.
    dirs: Vec<PathBuf>,
}

impl CgroupV1 {
    fn at(mounts: &V1Mounts, parent: &Path, name: &str) -> Self {
        let rel = parent.join(name);
        Self {
            cpu: mounts.cpu.join(&rel),
            cpuacct: mounts.cpuacct.join(&rel),
            memory: mounts.memory.join(&rel),
            pids: mounts.pids.join(&rel),
            freezer: mounts.freezer.join(&rel),
            dirs: mounts.roots().iter().map(|r| r.join(&rel)).collect(),
        }
    }

    pub(super) fn create(
        mounts: &V1Mounts,
        parent: &Path,
        name: &str,
    ) -> Result<Self, CgroupError> {
        let cg = Self::at(mounts, parent, name);
        for (root, dir) in mounts.roots().iter().zip(&cg.dirs) {
            fs::mkdir_all(&root.join(parent))?;
            if let Err(e) = fs::mkdir(dir) {
                // Leave nothing half-made behind.
                let _ = cg.remove_created();
                return Err(e);
            }
        }
        Ok(cg)
    }

    fn remove_created(&self) -> std::io::Result<()> {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    pub(super) fn open(mounts: &V1Mounts, parent: &Path, name: &str) -> Option<Self> {
        let cg = Self::at(mounts, parent, name);
        cg.dirs.iter().any(|d| d.is_dir()).then_some(cg)
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn freezer_dir(&self) -> &Path {
        &self.freezer
    }

    pub(super) fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        fs::write(
            &self.cpu.join("cpu.cfs_period_us"),
            &CPU_PERIOD_US.to_string(),
        )?;
        fs::write(
            &self.cpu.join("cpu.cfs_quota_us"),
            &(u64::from(limits.cpus) * CPU_PERIOD_US).to_string(),
        )?;
        let memory = limits.memory_bytes.to_string();
        fs::write(&self.memory.join("memory.limit_in_bytes"), &memory)?;
        // Memory+swap only exists with swap accounting; the limit must not be
        // below memory.limit_in_bytes, so it is written second.
        let memsw = self.memory.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            fs::write(&memsw, &memory)?;
        }
        fs::write(&self.pids.join("pids.max"), &limits.pids_max.to_string())
    }

    pub(super) fn stats(&self) -> Result<Stats, CgroupError> {
        Ok(Stats {
            cpu_usage_ns: fs::read_u64(&self.cpuacct.join("cpuacct.usage"))?,
            memory_bytes: fs::read_u64(&self.memory.join("memory.usage_in_bytes"))?,
            memory_limit_bytes: fs::read_u64(&self.memory.join("memory.limit_in_bytes"))?,
            pids: fs::read_u64(&self.pids.join("pids.current"))?,
            oom_kills: fs::read_keyed(&self.memory.join("memory.oom_control"), "oom_kill")?,
        })
    }

    pub(super) fn freeze_state(&self) -> Result<FreezeState, CgroupError> {
        let path = self.freezer.join("freezer.state");
        let text = fs::read("read", &path)?;
        match text.trim() {
            "THAWED" => Ok(FreezeState::Thawed),
            "FREEZING" => Ok(FreezeState::Freezing),
            "FROZEN" => Ok(FreezeState::Frozen),
            _ => Err(CgroupError::Parse {
                path,
                contents: text,
            }),
        }
    }

    pub(super) fn request_freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        fs::write(
            &self.freezer.join("freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
        )
    }
}
