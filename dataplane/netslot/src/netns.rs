//! Named network namespaces, kept the way `ip netns` keeps them: a bind mount
//! of the namespace at `/run/netns/<name>`, so operators can inspect a slot
//! with `ip netns exec <name> ...`.
//!
//! Entering a namespace changes the calling *thread*, so work inside one runs
//! on a short-lived thread of its own ([`run_in`]); never on a pooled runtime
//! thread, which would keep the namespace afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use tokio::sync::oneshot;

use crate::error::{NetError, Result};

/// Where named network namespaces live (iproute2's convention).
pub const NETNS_DIR: &str = "/run/netns";

/// The bind-mount path of namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Names of every namespace under [`NETNS_DIR`].
pub fn list() -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(NetError::io(format!("listing {NETNS_DIR}"), err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| NetError::io(format!("listing {NETNS_DIR}"), err))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Creates namespace `name` with loopback only and IPv6 disabled (slots are
/// IPv4-only; no link-local IPv6 path around the firewall).
pub async fn create(name: &str) -> Result<()> {
    let path = path(name);
    let context = format!("creating network namespace {}", path.display());
    prepare_dir().map_err(|err| NetError::io(format!("preparing {NETNS_DIR}"), err))?;
    // The mount point; `create_new` makes a second creator fail instead of
    // silently sharing.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|err| NetError::io(context.clone(), err))?;
    let target = path.clone();
    let made = on_thread(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        for knob in ["all", "default"] {
            write_sysctl(&format!("net/ipv6/conf/{knob}/disable_ipv6"), "1")?;
        }
        Ok(())
    })
    .await;
    if let Err(err) = made {
        let _ = delete(name);
        return Err(NetError::io(context, err));
    }
    Ok(())
}

/// Removes namespace `name`; absent is fine. The namespace itself lives on
/// until the last process or file inside it is gone.
pub fn delete(name: &str) -> Result<()> {
    let path = path(name);
    let context = || format!("deleting network namespace {}", path.display());
    match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => {}
        Err(err) => return Err(NetError::io(context(), err.into())),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(NetError::io(context(), err)),
    }
}

/// Runs `f` on a fresh thread that has entered the namespace at `path`.
/// Sockets `f` creates stay in that namespace wherever they are used later.
pub async fn run_in<T, F>(path: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let ns = File::open(path)?;
    on_thread(move || {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)?;
        f()
    })
    .await
}

/// A command that starts inside the namespace at `path`.
pub fn command(path: &Path, program: &str) -> io::Result<tokio::process::Command> {
    let ns = File::open(path)?;
    let mut command = std::process::Command::new(program);
    // SAFETY: the closure runs between fork and exec, where only
    // async-signal-safe calls are allowed: setns(2) is a plain system call and
    // `ns` was opened before the fork (it is closed on exec).
    unsafe {
        command.pre_exec(move || {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
        });
    }
    Ok(command.into())
}

/// Writes `value` to `/proc/sys/<key>` of the calling thread's network
/// namespace; a knob that does not exist (IPv6 compiled out) is skipped.
pub fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    match fs::write(Path::new("/proc/sys").join(key), value) {
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Runs `f` on its own thread (whose namespaces `f` may change) and awaits it.
async fn on_thread<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("warren-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await
        .map_err(|_| io::Error::other("namespace worker thread panicked"))?
}

/// Makes [`NETNS_DIR`] a shared mount point, as `ip netns add` does, so
/// namespace mounts propagate into mount namespaces created later. Done once
/// per process (a second bind would stack mounts).
fn prepare_dir() -> io::Result<()> {
    static PREPARED: Mutex<bool> = Mutex::new(false);
    let mut prepared = PREPARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*prepared {
        share_dir()?;
        *prepared = true;
    }
    Ok(())
}

fn share_dir() -> io::Result<()> {
    fs::create_dir_all(NETNS_DIR)?;
    let shared = || {
        nix::mount::mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then share it.
        Err(nix::errno::Errno::EINVAL) => {
            nix::mount::mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(shared()?)
        }
        Err(err) => Err(err.into()),
    }
}
