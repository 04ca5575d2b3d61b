//! Building the command line and starting the process: network namespace,
//! private mount namespace, new session, console log; then waiting until the
//! API socket accepts connections.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::pidfd::PidFd;
use super::process::{Firecracker, reap};
use super::{JAILED_API_SOCKET, LaunchSpec, Launcher, set_mode, validate_instance_id};
use crate::error::LaunchError;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

pub(super) async fn launch(
    launcher: &Launcher,
    spec: &LaunchSpec,
) -> Result<Firecracker, LaunchError> {
    validate_instance_id(&spec.id)?;
    let config = launcher.config();
    let dir = launcher.instance_dir(&spec.id);
    let socket = launcher.api_socket(&spec.id);
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(LaunchError::SocketPathTooLong(socket));
    }
    if UnixStream::connect(&socket).await.is_ok() {
        return Err(LaunchError::AlreadyRunning {
            id: spec.id.clone(),
            socket,
        });
    }
    // A socket nobody answers on is left over; Firecracker refuses to bind it.
    match std::fs::remove_file(&socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed a stale API socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LaunchError::io(format!("removing {}", socket.display()), e)),
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| LaunchError::io(format!("creating {}", dir.display()), e))?;
    set_mode(&dir, 0o700)?;

    let console = open_console_log(&spec.console_log)?;
    let netns = spec
        .netns
        .as_deref()
        .map(|p| {
            File::open(p).map_err(|e| LaunchError::io(format!("opening netns {}", p.display()), e))
        })
        .transpose()?;

    let (program, args) = command_line(launcher, spec, &socket);
    let mut command = Command::new(&program);
    command
        .args(&args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(clone_file(&console)?)
        .stderr(clone_file(&console)?);
    let netns_fd: Option<RawFd> = netns.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls on values prepared before the fork (a raw fd
    // kept open by `netns` until after spawn, static C strings).
    unsafe {
        command.pre_exec(move || enter_namespaces(netns_fd));
    }
    let child = command.spawn().map_err(|source| LaunchError::Spawn {
        bin: program.clone().into(),
        source,
    })?;
    drop(netns);
    let pid = child.id();
    // Reaped through `reap` (waitpid) once it exits; dropping `Child` neither
    // kills nor waits.
    drop(child);
    let pidfd = PidFd::open(pid).map_err(|e| LaunchError::io(format!("pidfd_open({pid})"), e))?;
    tracing::info!(id = %spec.id, pid, socket = %socket.display(), "firecracker started");

    if let Err(e) = wait_for_socket(&pidfd, &socket, config.socket_timeout).await {
        let status = if pidfd.has_exited() {
            reap(pid)
        } else {
            let _ = pidfd.signal(Signal::SIGKILL);
            pidfd.wait_exit(Duration::from_secs(5)).await;
            reap(pid);
            String::new()
        };
        let console_tail = tail(&spec.console_log);
        let _ = std::fs::remove_file(&socket);
        return Err(match e {
            SocketWait::Exited => LaunchError::Exited {
                id: spec.id.clone(),
                status,
                console_tail,
            },
            SocketWait::Timeout => LaunchError::SocketTimeout {
                id: spec.id.clone(),
                after: config.socket_timeout,
                console_tail,
            },
        });
    }
    Ok(Firecracker::spawned(
        spec.id.clone(),
        pidfd,
        socket,
        dir,
        launcher.chroot_dir(&spec.id),
    ))
}

/// The program and its arguments, with or without the jailer.
fn command_line(
    launcher: &Launcher,
    spec: &LaunchSpec,
    socket: &Path,
) -> (OsString, Vec<OsString>) {
    let config = launcher.config();
    let mut fc_args: Vec<OsString> = Vec::new();
    match &config.jailer {
        None => {
            fc_args.extend(["--id".into(), spec.id.clone().into(), "--api-sock".into()]);
            fc_args.push(socket.as_os_str().to_owned());
            fc_args.extend(spec.extra_args.iter().cloned());
            (config.firecracker_bin.clone().into(), fc_args)
        }
        Some(jailer) => {
            let mut args: Vec<OsString> = vec![
                "--id".into(),
                spec.id.clone().into(),
                "--exec-file".into(),
                config.firecracker_bin.clone().into(),
                "--uid".into(),
                jailer.uid.to_string().into(),
                "--gid".into(),
                jailer.gid.to_string().into(),
                "--chroot-base-dir".into(),
                launcher.instance_dir(&spec.id).join("jail").into(),
            ];
            if let Some(v) = jailer.cgroup_version {
                args.extend(["--cgroup-version".into(), v.to_string().into()]);
            }
            if let Some(parent) = &jailer.parent_cgroup {
                args.extend(["--parent-cgroup".into(), parent.into()]);
            }
            // The network namespace is entered before exec (see
            // `enter_namespaces`), so `--netns` is not needed.
            args.extend(["--".into(), "--api-sock".into(), JAILED_API_SOCKET.into()]);
            args.extend(spec.extra_args.iter().cloned());
            (jailer.jailer_bin.clone().into(), args)
        }
    }
}

/// In the child, before exec: own session (signals to the agent's process
/// group or terminal do not reach it), the capsule's network namespace, and
/// a private mount namespace with no propagation back to the host.
fn enter_namespaces(netns_fd: Option<RawFd>) -> std::io::Result<()> {
    // SAFETY (whole function): plain syscalls with integer arguments and
    // static NUL-terminated strings; no allocation, async-signal-safe.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(fd) = netns_fd
            && libc::setns(fd, libc::CLONE_NEWNET) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::unshare(libc::CLONE_NEWNS) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

enum SocketWait {
    Exited,
    Timeout,
}

async fn wait_for_socket(
    pidfd: &PidFd,
    socket: &Path,
    timeout: Duration,
) -> Result<(), SocketWait> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if pidfd.has_exited() {
            return Err(SocketWait::Exited);
        }
        if Instant::now() >= deadline {
            return Err(SocketWait::Timeout);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn open_console_log(path: &Path) -> Result<File, LaunchError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| LaunchError::io(format!("creating {}", parent.display()), e))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| LaunchError::io(format!("opening console log {}", path.display()), e))
}

fn clone_file(f: &File) -> Result<File, LaunchError> {
    f.try_clone()
        .map_err(|e| LaunchError::io("duplicating the console log fd", e))
}

/// The last 2 KiB of the console log, for error messages.
fn tail(path: &Path) -> String {
    const TAIL: u64 = 2048;
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::{JailerConfig, LauncherConfig};

    #[test]
    fn jailer_command_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = LauncherConfig::new("/opt/fc/firecracker", dir.path());
        config.jailer = Some(JailerConfig {
            jailer_bin: "/opt/fc/jailer".into(),
            uid: 123,
            gid: 456,
            cgroup_version: Some(2),
            parent_cgroup: Some("warren".into()),
        });
        let launcher = Launcher::new(config).expect("launcher");
        let mut spec = LaunchSpec::new("cap1", "/tmp/x.log");
        spec.extra_args = vec!["--level".into(), "Info".into()];
        let socket = launcher.api_socket("cap1");
        let (program, args) = command_line(&launcher, &spec, &socket);
        assert_eq!(program, "/opt/fc/jailer");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let base = launcher.instance_dir("cap1").join("jail");
        let expected = [
            "--id",
            "cap1",
            "--exec-file",
            "/opt/fc/firecracker",
            "--uid",
            "123",
            "--gid",
            "456",
            "--chroot-base-dir",
            &base.to_string_lossy(),
            "--cgroup-version",
            "2",
            "--parent-cgroup",
            "warren",
            "--",
            "--api-sock",
            "/run/firecracker.socket",
            "--level",
            "Info",
        ];
        assert_eq!(args, expected);
    }
}
