//! The capsule's file system view, as a list of steps the capsule's init
//! runs (as host root, inside its fresh mount namespace) before it pivots
//! into the new root: the private ext4 disk, the overlay over the template,
//! `/proc`, a read-only `/sys`, a minimal `/dev` with its own devpts and
//! `/dev/shm`, and the host's envd bound read-only. `/tmp` is the disk's, as
//! on a microVM: what users leave there is part of pauses and snapshots.
//!
//! Everything is prepared as C strings before the fork, so the child runs the
//! list without allocating.

use std::ffi::{CString, NulError};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::MsFlags;

use warren_template::IdMap;

/// One step of the root file system setup.
#[derive(Debug)]
pub enum Op {
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
    },
    /// `mkdir`; an existing directory is fine. A created one gets `owner`.
    Mkdir {
        path: CString,
        mode: u32,
        owner: u32,
    },
    /// An empty file (a bind mount point) unless one exists.
    Touch {
        path: CString,
        owner: u32,
    },
    Mknod {
        path: CString,
        major: u64,
        minor: u64,
        owner: u32,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// Attaches a detached mount (an `fsmount` descriptor) at `target`.
    MoveMount {
        fd: i32,
        target: CString,
    },
    /// Writes a value into an existing file (a sysctl).
    Write {
        path: CString,
        data: CString,
    },
}

impl Op {
    /// What the step does, for error messages.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Op::Mount { target, fstype, .. } => format!(
                "mount {} on {}",
                fstype.as_ref().map(s).unwrap_or_else(|| "bind".into()),
                s(target)
            ),
            Op::MoveMount { target, .. } => format!("attach the disk at {}", s(target)),
            Op::Mkdir { path, .. } => format!("mkdir {}", s(path)),
            Op::Touch { path, .. } => format!("create {}", s(path)),
            Op::Mknod { path, .. } => format!("mknod {}", s(path)),
            Op::Symlink { link, .. } => format!("symlink {}", s(link)),
            Op::Write { path, .. } => format!("write {}", s(path)),
        }
    }
}

/// Inputs of the plan.
#[derive(Debug)]
pub struct Params<'a> {
    /// The template's root filesystem (read-only lower layer).
    pub lower: &'a Path,
    /// The capsule's disk (a detached mount descriptor) and where to attach it.
    pub disk: i32,
    pub disk_mount: &'a Path,
    /// Where the overlay is assembled (becomes `/`).
    pub new_root: &'a Path,
    pub id_map: IdMap,
    pub memory_mb: u32,
    pub envd: Option<EnvdMounts<'a>>,
}

/// envd's read-only bind mounts; paths inside are relative to `/`.
#[derive(Debug)]
pub struct EnvdMounts<'a> {
    pub binary: &'a Path,
    pub binary_inside: &'a str,
    /// Host directory of envd's libraries, when it is dynamically linked.
    pub libs: Option<(&'a Path, &'a str)>,
}

fn c(p: impl AsRef<Path>) -> Result<CString, NulError> {
    CString::new(p.as_ref().as_os_str().as_bytes())
}

fn cs(s: &str) -> Result<CString, NulError> {
    CString::new(s)
}

/// The steps, in order.
pub fn plan(p: &Params<'_>) -> Result<Vec<Op>, NulError> {
    let root = p.id_map.host(0);
    let tty_gid = p.id_map.host(5);
    let r = |rel: &str| c(p.new_root.join(rel));
    let mount = |source: Option<CString>,
                 target: CString,
                 fstype: Option<&str>,
                 flags,
                 data: Option<String>| {
        Ok::<_, NulError>(Op::Mount {
            source,
            target,
            fstype: fstype.map(cs).transpose()?,
            flags,
            data: data.map(CString::new).transpose()?,
        })
    };
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let upper = p.disk_mount.join("upper");
    let work = p.disk_mount.join("work");

    let mut ops = vec![
        // Nothing mounted from here on propagates back to the host.
        mount(
            None,
            cs("/")?,
            None,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None,
        )?,
        Op::MoveMount {
            fd: p.disk,
            target: c(p.disk_mount)?,
        },
        Op::Mkdir {
            path: c(&upper)?,
            mode: 0o755,
            owner: root,
        },
        Op::Mkdir {
            path: c(&work)?,
            mode: 0o700,
            owner: 0,
        },
        // Setuid programs (sudo) work: they reach only the capsule's root.
        mount(
            Some(cs("overlay")?),
            c(p.new_root)?,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(format!(
                "lowerdir={},upperdir={},workdir={}",
                p.lower.display(),
                upper.display(),
                work.display()
            )),
        )?,
    ];
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("run", 0o755),
    ] {
        ops.push(Op::Mkdir {
            path: r(dir)?,
            mode,
            owner: root,
        });
    }
    let noexec = nosuid_nodev | MsFlags::MS_NOEXEC;
    ops.push(mount(
        Some(cs("proc")?),
        r("proc")?,
        Some("proc"),
        noexec,
        None,
    )?);
    ops.push(mount(
        Some(cs("sysfs")?),
        r("sys")?,
        Some("sysfs"),
        noexec | MsFlags::MS_RDONLY,
        None,
    )?);
    ops.push(mount(
        Some(cs("tmpfs")?),
        r("dev")?,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(format!(
            "mode=755,size=64k,nr_inodes=64,uid={root},gid={root}"
        )),
    )?);
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        ops.push(Op::Mknod {
            path: r(&format!("dev/{name}"))?,
            major,
            minor,
            owner: root,
        });
    }
    for (target, link) in [
        ("pts/ptmx", "dev/ptmx"),
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ] {
        ops.push(Op::Symlink {
            target: cs(target)?,
            link: r(link)?,
        });
    }
    ops.push(Op::Mkdir {
        path: r("dev/pts")?,
        mode: 0o755,
        owner: root,
    });
    ops.push(Op::Mkdir {
        path: r("dev/shm")?,
        mode: 0o1777,
        owner: root,
    });
    ops.push(mount(
        Some(cs("devpts")?),
        r("dev/pts")?,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(format!("newinstance,ptmxmode=0666,mode=0620,gid={tty_gid}")),
    )?);
    // tmpfs pages are charged to the capsule's memory cgroup, which bounds
    // them; the size caps a single mount at the capsule's memory.
    let tmpfs_opts = |mode: &str| {
        Some(format!(
            "mode={mode},size={}m,uid={root},gid={root}",
            p.memory_mb
        ))
    };
    ops.push(mount(
        Some(cs("shm")?),
        r("dev/shm")?,
        Some("tmpfs"),
        noexec,
        tmpfs_opts("1777"),
    )?);

    if let Some(envd) = &p.envd {
        let mkdirs = |inside: &str, ops: &mut Vec<Op>| -> Result<(), NulError> {
            let mut dir = p.new_root.to_owned();
            for part in Path::new(inside).components() {
                dir.push(part);
                ops.push(Op::Mkdir {
                    path: c(&dir)?,
                    mode: 0o755,
                    owner: root,
                });
            }
            Ok(())
        };
        let bind_read_only = |source: &Path, target: CString, ops: &mut Vec<Op>| {
            ops.push(mount(
                Some(c(source)?),
                target.clone(),
                None,
                MsFlags::MS_BIND,
                None,
            )?);
            let read_only =
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_nodev;
            ops.push(mount(None, target, None, read_only, None)?);
            Ok::<_, NulError>(())
        };
        if let Some(parent) = Path::new(envd.binary_inside).parent() {
            mkdirs(&parent.to_string_lossy(), &mut ops)?;
        }
        let target = r(envd.binary_inside)?;
        ops.push(Op::Touch {
            path: target.clone(),
            owner: root,
        });
        bind_read_only(envd.binary, target, &mut ops)?;
        if let Some((dir, inside)) = envd.libs {
            mkdirs(inside, &mut ops)?;
            bind_read_only(dir, r(inside)?, &mut ops)?;
        }
    }

    // Per network namespace sysctls: let capsule root bind low ports and
    // ping, which it otherwise could not (its network namespace belongs to
    // the host's user namespace).
    ops.push(Op::Write {
        path: r("proc/sys/net/ipv4/ip_unprivileged_port_start")?,
        data: cs("0")?,
    });
    ops.push(Op::Write {
        path: r("proc/sys/net/ipv4/ping_group_range")?,
        data: cs("0 2147483647")?,
    });
    Ok(ops)
}
