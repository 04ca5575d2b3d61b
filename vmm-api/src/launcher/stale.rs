//! Finding Firecracker processes and instance directories left by a
//! previous agent run, and cleaning them up.
//!
//! A process belongs to a runtime directory when the API socket on its
//! command line (`--api-sock`, resolved through its root directory for
//! jailed processes) lies under that directory; the first path component
//! below it is the instance id. This needs no pid file, and a reused pid is
//! never mistaken for an instance: the command line is checked again after
//! a pidfd is opened.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::StopOutcome;
use super::process::{Firecracker, remove_instance_dir};
use crate::error::LaunchError;

/// A running Firecracker process found under a runtime directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundInstance {
    pub id: String,
    pub pid: u32,
    /// Host path of its API socket.
    pub api_socket: PathBuf,
    /// Its root directory when jailed.
    pub chroot: Option<PathBuf>,
}

impl FoundInstance {
    /// Whether `pid` is still this instance (not exited, not reused).
    pub(super) fn still_matches(&self) -> bool {
        inspect(self.pid).is_some_and(|(socket, _)| socket == self.api_socket)
    }
}

/// What [`clean`] did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Instances stopped: id, pid, how.
    pub stopped: Vec<(String, u32, StopOutcome)>,
    /// Instance directories removed (sockets, jails) that no process used.
    pub removed: Vec<PathBuf>,
    /// Instances left running because the caller keeps them.
    pub kept: Vec<FoundInstance>,
}

/// Firecracker processes whose API socket lies under `runtime_dir`
/// (which must be canonical).
pub fn find_running(runtime_dir: &Path) -> Result<Vec<FoundInstance>, LaunchError> {
    let proc = std::fs::read_dir("/proc").map_err(|e| LaunchError::io("listing /proc", e))?;
    let mut found = Vec::new();
    for entry in proc.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((api_socket, root)) = inspect(pid) else {
            continue;
        };
        let Ok(rest) = api_socket.strip_prefix(runtime_dir) else {
            continue;
        };
        let Some(Component::Normal(id)) = rest.components().next() else {
            continue;
        };
        found.push(FoundInstance {
            id: id.to_string_lossy().into_owned(),
            pid,
            api_socket,
            chroot: (root != Path::new("/")).then_some(root),
        });
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// Stops every instance under `runtime_dir` that `keep` rejects, then
/// removes every instance directory not used by a kept, running instance.
pub async fn clean(
    runtime_dir: &Path,
    grace: Duration,
    keep: impl Fn(&str) -> bool,
) -> Result<CleanupReport, LaunchError> {
    let mut report = CleanupReport::default();
    let mut in_use = HashSet::new();
    for instance in find_running(runtime_dir)? {
        if keep(&instance.id) {
            in_use.insert(instance.id.clone());
            report.kept.push(instance);
            continue;
        }
        let dir = runtime_dir.join(&instance.id);
        match Firecracker::adopt(&instance, dir) {
            Ok(fc) => {
                tracing::info!(id = %instance.id, pid = instance.pid, "stopping a stale firecracker");
                let outcome = fc.stop(grace).await?;
                report.stopped.push((instance.id, instance.pid, outcome));
            }
            // Exited between the scan and now: nothing to stop.
            Err(e) => tracing::debug!(id = %instance.id, "stale firecracker already gone: {e}"),
        }
    }
    let entries = std::fs::read_dir(runtime_dir)
        .map_err(|e| LaunchError::io(format!("listing {}", runtime_dir.display()), e))?;
    for entry in entries.flatten() {
        if in_use.contains(entry.file_name().to_string_lossy().as_ref()) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_instance_dir(&path)?;
        } else {
            std::fs::remove_file(&path)
                .map_err(|e| LaunchError::io(format!("removing {}", path.display()), e))?;
        }
        tracing::info!(path = %path.display(), "removed a stale instance directory");
        report.removed.push(path);
    }
    Ok(report)
}

/// The host path of `pid`'s `--api-sock` and its root directory, if it has one.
fn inspect(pid: u32) -> Option<(PathBuf, PathBuf)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let socket = api_sock_arg(&cmdline)?;
    if !socket.is_absolute() {
        return None;
    }
    let root = std::fs::read_link(format!("/proc/{pid}/root")).ok()?;
    let host = root.join(socket.strip_prefix("/").ok()?);
    Some((host, root))
}

/// The value of `--api-sock PATH` or `--api-sock=PATH` in a NUL-separated
/// command line.
fn api_sock_arg(cmdline: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
    while let Some(arg) = args.next() {
        if arg == b"--api-sock" {
            return args
                .next()
                .map(|v| Path::new(std::ffi::OsStr::from_bytes(v)).to_path_buf());
        }
        if let Some(v) = arg.strip_prefix(b"--api-sock=") {
            return Some(Path::new(std::ffi::OsStr::from_bytes(v)).to_path_buf());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_sock_is_read_from_the_command_line() {
        let cmd = b"firecracker\0--id\0a\0--api-sock\0/run/w/a/api.sock\0--level\0Info\0";
        assert_eq!(api_sock_arg(cmd), Some(PathBuf::from("/run/w/a/api.sock")));
        assert_eq!(
            api_sock_arg(b"fc\0--api-sock=/x/y\0"),
            Some(PathBuf::from("/x/y"))
        );
        assert_eq!(api_sock_arg(b"fc\0--id\0a\0"), None);
        assert_eq!(api_sock_arg(b"fc\0--api-sock\0"), None);
    }
}
