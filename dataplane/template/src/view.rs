//! Private mount namespaces for the host tools that read and write
//! templates (`debootstrap`, `mkfs.ext4 -d`, `cp`).
//!
//! Template files are owned through the store's [`IdMap`] (capsule uid `n`
//! is host uid `host_base + n`). Tools that must see capsule ids (a
//! debootstrap writing `root`-owned files, an ext4 image for a microVM whose
//! guest has no id mapping) work on an *idmapped mount* of the template: a
//! view in which on-disk `host_base + n` appears, and is written, as `n`.
//! [`IdShift`] is the user namespace that describes that shift.
//!
//! [`PrivateMounts`] prepares such views (and read-only overlays, and the
//! root of a running capsule) inside the spawned tool's own mount namespace,
//! so nothing is ever mounted on the host and everything vanishes with the
//! tool, even when the agent is killed.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::IdMap;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A user namespace mapping ids `host_base + n` to `n` (for `n` below the
/// map's count): the shift from stored template files to capsule ids.
#[derive(Debug)]
pub struct IdShift {
    userns: OwnedFd,
}

impl IdShift {
    /// Makes the namespace (a short-lived child holds it while the agent
    /// writes its maps; the descriptor keeps it alive afterwards).
    pub fn new(map: &IdMap) -> io::Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "making templates needs root (idmapped mounts, debootstrap)",
            ));
        }
        let (ready_r, ready_w) = nix::unistd::pipe()?;
        let (done_r, done_w) = nix::unistd::pipe()?;
        // SAFETY: the child only makes system calls (unshare, write, read,
        // _exit) on descriptors made before the fork; it allocates nothing.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                // Our copies of the parent's ends: holding `done_w` would
                // keep the read below from ever seeing end of file.
                drop(done_w);
                drop(ready_r);
                let code = if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok()
                    && nix::unistd::write(&ready_w, b"r").is_ok()
                {
                    let mut byte = [0u8; 1];
                    // Blocks until the parent closes its end.
                    let _ = nix::unistd::read(&done_r, &mut byte);
                    0
                } else {
                    1
                };
                // SAFETY: leaving the forked child without running destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(ready_w);
                drop(done_r);
                let result = (|| {
                    let mut byte = [0u8; 1];
                    File::from(ready_r).read_exact(&mut byte)?;
                    let line = format!("{} 0 {}\n", map.host_base, map.count);
                    for file in ["uid_map", "gid_map"] {
                        std::fs::write(format!("/proc/{child}/{file}"), &line)?;
                    }
                    let userns = File::open(format!("/proc/{child}/ns/user"))?;
                    Ok(Self {
                        userns: userns.into(),
                    })
                })();
                drop(done_w);
                let _ = nix::sys::wait::waitpid(child, None);
                result
            }
        }
    }
}

/// One preparation step, run in the child before `exec`.
#[derive(Debug)]
enum Step {
    /// An idmapped bind mount of `source` at `target`.
    Idmapped {
        source: CString,
        target: CString,
        userns: RawFd,
    },
    /// A read-only overlay (`lowerdir=a:b:...`) at `target`.
    Overlay { target: CString, options: CString },
}

/// A tool run with its own mount namespace, prepared by the given steps.
#[derive(Debug, Default)]
pub struct PrivateMounts {
    steps: Vec<Step>,
    /// Descriptors the steps refer to, kept open until the spawn.
    fds: Vec<OwnedFd>,
    /// The root mount of another mount namespace, made the tool's working
    /// directory (see [`PrivateMounts::cwd_in_root_of`]).
    foreign_root: Option<OwnedFd>,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", path.display()),
        )
    })
}

impl PrivateMounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `source` at `target` (an existing directory) with ids shifted
    /// by `shift`: on-disk `host_base + n` reads and writes as `n`.
    pub fn idmapped(mut self, source: &Path, target: &Path, shift: &IdShift) -> io::Result<Self> {
        let userns = shift.userns.try_clone()?;
        self.steps.push(Step::Idmapped {
            source: c_path(source)?,
            target: c_path(target)?,
            userns: userns.as_raw_fd(),
        });
        self.fds.push(userns);
        Ok(self)
    }

    /// A read-only overlay of `lowers` (first on top) at `target`.
    pub fn overlay(mut self, lowers: &[&Path], target: &Path) -> io::Result<Self> {
        let mut options = String::from("lowerdir=");
        for (i, lower) in lowers.iter().enumerate() {
            let text = lower.to_str().filter(|s| !s.contains([':', ',', '\\']));
            let Some(text) = text else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} cannot be an overlay layer (':', ',' and '\\' are not allowed)",
                        lower.display()
                    ),
                ));
            };
            if i > 0 {
                options.push(':');
            }
            options.push_str(text);
        }
        self.steps.push(Step::Overlay {
            target: c_path(target)?,
            options: CString::new(options).map_err(io::Error::other)?,
        });
        Ok(self)
    }

    /// Runs the tool with its working directory at the root of the mount
    /// namespace `ns` (a `/proc/<pid>/ns/mnt`): a non-recursive clone of
    /// that mount, so none of the file systems mounted over it (`/proc`,
    /// `/dev`, bind mounts) are part of what the tool sees under `.`.
    pub fn cwd_in_root_of(mut self, ns: File) -> Self {
        self.foreign_root = Some(ns.into());
        self
    }

    /// The command, with the mounts prepared between fork and exec.
    pub fn command(self, program: impl AsRef<OsStr>) -> io::Result<Command> {
        let own_ns: OwnedFd = File::open("/proc/self/ns/mnt")?.into();
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs in the forked child before exec and makes
        // only system calls on descriptors and strings made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let _ = &self.fds;
                let tree = match &self.foreign_root {
                    Some(ns) => {
                        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)?;
                        let tree = open_tree(libc::AT_FDCWD, c"/", OPEN_TREE_CLONE)?;
                        nix::sched::setns(&own_ns, nix::sched::CloneFlags::CLONE_NEWNS)?;
                        Some(tree)
                    }
                    None => None,
                };
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                    None::<&str>,
                )?;
                for step in &self.steps {
                    match step {
                        Step::Idmapped {
                            source,
                            target,
                            userns,
                        } => {
                            let tree = open_tree(libc::AT_FDCWD, source, OPEN_TREE_CLONE)?;
                            let attr = MountAttr {
                                attr_set: MOUNT_ATTR_IDMAP,
                                attr_clr: 0,
                                propagation: 0,
                                userns_fd: *userns as u64,
                            };
                            // SAFETY: mount_setattr on our detached tree with
                            // a correctly sized attribute struct.
                            check(libc::syscall(
                                libc::SYS_mount_setattr,
                                tree.as_raw_fd(),
                                c"".as_ptr(),
                                libc::AT_EMPTY_PATH,
                                &attr as *const MountAttr,
                                std::mem::size_of::<MountAttr>(),
                            ))?;
                            // SAFETY: attaches our detached tree at `target`.
                            check(libc::syscall(
                                libc::SYS_move_mount,
                                tree.as_raw_fd(),
                                c"".as_ptr(),
                                libc::AT_FDCWD,
                                target.as_ptr(),
                                MOVE_MOUNT_F_EMPTY_PATH,
                            ))?;
                        }
                        Step::Overlay { target, options } => {
                            // SAFETY: plain mount(2) with NUL-terminated strings.
                            check(libc::mount(
                                c"overlay".as_ptr(),
                                target.as_ptr(),
                                c"overlay".as_ptr(),
                                libc::MS_RDONLY,
                                options.as_ptr().cast(),
                            ) as libc::c_long)?;
                        }
                    }
                }
                if let Some(tree) = tree {
                    nix::unistd::fchdir(&tree)?;
                }
                Ok(())
            });
        }
        Ok(cmd)
    }
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `open_tree(2)`: a detached clone of the mount at `path`.
fn open_tree(dirfd: RawFd, path: &std::ffi::CStr, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: open_tree with a NUL-terminated path; returns a new descriptor.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dirfd,
            path.as_ptr(),
            flags | OPEN_TREE_CLOEXEC,
        )
    })?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Runs `cmd`, appending its output to `log` (when given), and fails with
/// the tail of the output when it does not succeed.
pub fn run_logged(cmd: &mut Command, what: &str, log: Option<&File>) -> io::Result<()> {
    let output = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("run {what}: {e}")))?;
    if let Some(mut log) = log {
        log.write_all(&output.stdout)?;
        log.write_all(&output.stderr)?;
    }
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    let tail: Vec<&str> = text.trim().lines().rev().take(8).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(io::Error::other(format!(
        "{what} failed ({}): {}",
        output.status,
        tail.join(" | ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_idmapped_view_shifts_reads_and_writes() {
        if !warren_testkit::need_root("idmapped mounts") {
            return;
        }
        let map = IdMap::default();
        let dir = tempfile::tempdir().unwrap();
        let (src, view) = (dir.path().join("src"), dir.path().join("view"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&view).unwrap();
        // Like a template's root: owned by capsule root (unmapped ids are
        // read-only even to host root through the view).
        std::os::unix::fs::chown(&src, Some(map.host(0)), Some(map.host(0))).unwrap();
        std::fs::write(src.join("owned"), b"x").unwrap();
        std::os::unix::fs::lchown(
            src.join("owned"),
            Some(map.host(1000)),
            Some(map.host(1000)),
        )
        .unwrap();
        let shift = IdShift::new(&map).unwrap();
        let script = format!(
            "stat -c %u:%g {v}/owned && touch {v}/made && mknod {v}/null c 1 3",
            v = view.display()
        );
        let out = PrivateMounts::new()
            .idmapped(&src, &view, &shift)
            .unwrap()
            .command("sh")
            .unwrap()
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000:1000");
        for made in ["made", "null"] {
            let meta = std::fs::symlink_metadata(src.join(made)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (map.host(0), map.host(0)));
        }
        // Nothing stayed mounted on the host.
        assert_eq!(std::fs::read_dir(&view).unwrap().count(), 0);
    }
}
