//! Starts and stops Firecracker processes for capsules.
//!
//! Each instance gets a directory `<runtime_dir>/<id>/` holding its API socket
//! (or, under the jailer, its chroot). The process is started in the
//! capsule's network namespace and a private mount namespace, in its own
//! session (so it outlives an agent restart), with its serial console
//! (stdout and stderr) appended to a per-capsule log file. Instances are
//! recognised after an agent restart from `/proc` alone (see [`stale`]), so
//! no state file can go out of date.
//!
//! Launching, adopting and stopping need a tokio runtime (process exits are
//! awaited through a pidfd registered with it).

mod pidfd;
mod process;
mod spawn;
pub mod stale;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use process::{Firecracker, StopOutcome};
pub use stale::{CleanupReport, FoundInstance};

use crate::error::LaunchError;

/// Where the API socket lives inside a jailer chroot.
const JAILED_API_SOCKET: &str = "/run/firecracker.socket";
/// Name of the API socket in an instance directory (without jailer).
const API_SOCKET: &str = "api.sock";

/// Host-wide launcher settings.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    /// The `firecracker` binary.
    pub firecracker_bin: PathBuf,
    /// Run Firecracker under the jailer (chroot, unprivileged user).
    pub jailer: Option<JailerConfig>,
    /// Instance directories and API sockets; a tmpfs such as `/run/warren/vmm`.
    pub runtime_dir: PathBuf,
    /// How long a new process has to accept connections on its API socket.
    pub socket_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
}

impl LauncherConfig {
    /// Defaults: no jailer, 5 s to serve the API, 5 s grace on stop.
    pub fn new(firecracker_bin: impl Into<PathBuf>, runtime_dir: impl Into<PathBuf>) -> Self {
        Self {
            firecracker_bin: firecracker_bin.into(),
            jailer: None,
            runtime_dir: runtime_dir.into(),
            socket_timeout: Duration::from_secs(5),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// Settings of Firecracker's `jailer` (needs a statically linked Firecracker).
#[derive(Debug, Clone)]
pub struct JailerConfig {
    pub jailer_bin: PathBuf,
    /// The unprivileged user and group Firecracker runs as.
    pub uid: u32,
    pub gid: u32,
    /// `--cgroup-version` (1 or 2); the jailer's default when `None`.
    pub cgroup_version: Option<u8>,
    /// `--parent-cgroup`, e.g. `warren`.
    pub parent_cgroup: Option<String>,
}

/// One instance to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The capsule id: 1 to 64 ASCII letters, digits or `-` (Firecracker's rule).
    pub id: String,
    /// Network namespace to run in, e.g. `/run/netns/warren-ns-3`;
    /// the agent's own namespace when `None`.
    pub netns: Option<PathBuf>,
    /// File the serial console (stdout and stderr) is appended to.
    pub console_log: PathBuf,
    /// More Firecracker arguments (`--level`, `--seccomp-filter`, ...).
    pub extra_args: Vec<OsString>,
}

impl LaunchSpec {
    pub fn new(id: impl Into<String>, console_log: impl Into<PathBuf>) -> Self {
        Self {
            id: id.into(),
            netns: None,
            console_log: console_log.into(),
            extra_args: Vec::new(),
        }
    }
}

/// Starts, finds and cleans up Firecracker processes under one runtime
/// directory.
#[derive(Debug, Clone)]
pub struct Launcher {
    config: LauncherConfig,
}

impl Launcher {
    /// Creates the runtime directory (mode 0700) if needed.
    pub fn new(mut config: LauncherConfig) -> Result<Self, LaunchError> {
        std::fs::create_dir_all(&config.runtime_dir).map_err(|e| {
            LaunchError::io(format!("creating {}", config.runtime_dir.display()), e)
        })?;
        set_mode(&config.runtime_dir, 0o700)?;
        // Compared against paths read from /proc, which are canonical.
        config.runtime_dir = config.runtime_dir.canonicalize().map_err(|e| {
            LaunchError::io(format!("resolving {}", config.runtime_dir.display()), e)
        })?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &LauncherConfig {
        &self.config
    }

    /// `<runtime_dir>/<id>`.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.config.runtime_dir.join(id)
    }

    /// The jailer's chroot of `id` (files Firecracker opens must be in it).
    pub fn chroot_dir(&self, id: &str) -> Option<PathBuf> {
        self.config.jailer.as_ref()?;
        let exec_name = self.config.firecracker_bin.file_name()?;
        Some(
            self.instance_dir(id)
                .join("jail")
                .join(exec_name)
                .join(id)
                .join("root"),
        )
    }

    /// The host path of `id`'s API socket.
    pub fn api_socket(&self, id: &str) -> PathBuf {
        match self.chroot_dir(id) {
            Some(root) => root.join(JAILED_API_SOCKET.trim_start_matches('/')),
            None => self.instance_dir(id).join(API_SOCKET),
        }
    }

    /// Starts Firecracker for `spec` and returns once its API socket accepts
    /// connections. On failure nothing is left running.
    pub async fn launch(&self, spec: &LaunchSpec) -> Result<Firecracker, LaunchError> {
        spawn::launch(self, spec).await
    }

    /// Firecracker processes of this runtime directory that are running now.
    pub fn find_running(&self) -> Result<Vec<FoundInstance>, LaunchError> {
        stale::find_running(&self.config.runtime_dir)
    }

    /// Takes over a running instance (e.g. after an agent restart).
    pub fn adopt(&self, found: &FoundInstance) -> Result<Firecracker, LaunchError> {
        Firecracker::adopt(found, self.instance_dir(&found.id))
    }

    /// Stops every instance for which `keep(id)` is false and removes every
    /// instance directory that no kept, running instance uses.
    pub async fn clean_stale(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<CleanupReport, LaunchError> {
        stale::clean(&self.config.runtime_dir, self.config.stop_grace, keep).await
    }
}

/// Firecracker's instance id rule: 1 to 64 ASCII alphanumerics or `-`.
/// It is also a directory name here, so nothing else may pass.
pub(crate) fn validate_instance_id(id: &str) -> Result<(), LaunchError> {
    let reason = if id.is_empty() || id.len() > 64 {
        "must be 1 to 64 characters"
    } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        "only ASCII letters, digits and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(LaunchError::InvalidId {
        id: id.to_string(),
        reason,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), LaunchError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| LaunchError::io(format!("chmod {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_follow_firecracker_rules() {
        assert!(validate_instance_id("cap-0123abc").is_ok());
        for bad in ["", "../etc", "a/b", "a b", "x_y", &"a".repeat(65)] {
            assert!(validate_instance_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn jailed_socket_lives_in_the_chroot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = LauncherConfig::new("/usr/bin/firecracker", dir.path());
        config.jailer = Some(JailerConfig {
            jailer_bin: "/usr/bin/jailer".into(),
            uid: 1000,
            gid: 1000,
            cgroup_version: Some(2),
            parent_cgroup: None,
        });
        let launcher = Launcher::new(config).expect("launcher");
        let root = launcher.chroot_dir("c1").expect("chroot");
        assert!(
            root.ends_with("c1/jail/firecracker/c1/root"),
            "{}",
            root.display()
        );
        assert_eq!(
            launcher.api_socket("c1"),
            root.join("run/firecracker.socket")
        );
    }
}
