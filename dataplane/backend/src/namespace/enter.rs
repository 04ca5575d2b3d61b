//! Running a command inside a running capsule, the way envd's children run:
//! in the capsule's cgroup and namespaces, as capsule root, under the same
//! seccomp filter. For operators (debugging a capsule without envd) and for
//! tests; users run commands through envd.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sched::CloneFlags;
use seccompiler::BpfProgram;

/// Namespaces joined, in order; the user namespace last, since joining it
/// gives up the host capabilities the other joins need.
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("user", CloneFlags::CLONE_NEWUSER),
];

/// A `Command` for `program` (an absolute path inside the capsule) that
/// runs inside the capsule whose init is `init_pid`.
///
/// The spawned process joins the cgroup and namespaces, then forks: the
/// grandchild (inside the PID namespace) execs `program`; the child closes
/// every descriptor, waits for it and exits with its status.
pub fn command(
    init_pid: i32,
    cgroup_procs: &[std::path::PathBuf],
    filters: &[BpfProgram],
    program: &str,
) -> io::Result<Command> {
    let procs = cgroup_procs
        .iter()
        .map(|p| std::fs::OpenOptions::new().write(true).open(p))
        .collect::<io::Result<Vec<File>>>()?;
    let namespaces = NAMESPACES
        .iter()
        .map(|(name, flag)| Ok((File::open(format!("/proc/{init_pid}/ns/{name}"))?, *flag)))
        .collect::<io::Result<Vec<_>>>()?;
    let filters = filters.to_vec();
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .current_dir("/");
    // SAFETY: the closure runs in the forked child before exec and only makes
    // system calls on descriptors and buffers made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for file in &procs {
                nix::unistd::write(file, b"0")?;
            }
            for (ns, flag) in &namespaces {
                nix::sched::setns(ns, *flag)?;
            }
            let root_g = nix::unistd::Gid::from_raw(0);
            let root_u = nix::unistd::Uid::from_raw(0);
            nix::unistd::setresgid(root_g, root_g, root_g)?;
            nix::unistd::setgroups(&[])?;
            nix::unistd::setresuid(root_u, root_u, root_u)?;
            nix::unistd::chdir(c"/")?;
            match nix::unistd::fork()? {
                nix::unistd::ForkResult::Child => {
                    for filter in &filters {
                        seccompiler::apply_filter(filter).map_err(io::Error::other)?;
                    }
                    Ok(())
                }
                nix::unistd::ForkResult::Parent { child } => {
                    // Closing everything (including std's exec-status pipe)
                    // lets the spawning side see a successful spawn now.
                    libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                    let code = match nix::sys::wait::waitpid(child, None) {
                        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                        Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                        _ => 255,
                    };
                    libc::_exit(code)
                }
            }
        });
    }
    Ok(cmd)
}
