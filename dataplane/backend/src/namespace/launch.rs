//! Starting a capsule's init.
//!
//! The agent forks a short-lived child that starts its own session, joins
//! the capsule's cgroup and network namespace, unshares mount, PID, UTS and
//! IPC namespaces and forks again: the grandchild is pid 1 of the new PID
//! namespace. The child exits at once, so init is no child of the agent and
//! lives on when the agent exits or restarts.
//!
//! Init (still host root, in namespaces the host owns) builds its root file
//! system ([`super::rootfs`]), sets the hostname, pivots into the new root,
//! then unshares a user namespace. The agent writes its uid/gid maps (capsule
//! 0.. → [`IdMap`] range); init becomes root of that namespace, opens its log,
//! installs the seccomp filters (without no-new-privileges: see
//! [`super::seccomp`]) and execs the
//! init command. Because the capsule's user namespace is made last, capsule
//! root has no capability over the mount, PID, UTS, IPC or network namespace
//! it lives in.
//!
//! The children report over a close-on-exec pipe: the init pid, "user
//! namespace ready", or the step that failed with its errno. End of file after
//! the last message means init exec'd. The children never allocate: every
//! string and buffer is made before the fork (the agent is multi-threaded).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::MntFlags;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{ForkResult, Pid};
use seccompiler::BpfProgram;

use super::rootfs::Op;
use warren_template::IdMap;

/// Everything init needs, prepared before the fork.
#[derive(Debug)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub new_root: CString,
    pub hostname: CString,
    pub workdir: CString,
    /// Init's log inside the capsule (its stdout and stderr).
    pub log: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub filters: Vec<BpfProgram>,
    pub id_map: IdMap,
}

/// A failed launch: the step and the OS error.
#[derive(Debug)]
pub struct LaunchError {
    pub step: String,
    pub source: io::Error,
}

impl LaunchError {
    fn new(step: impl Into<String>, source: io::Error) -> Self {
        Self {
            step: step.into(),
            source,
        }
    }
}

/// Steps reported by the children (ops of the plan are `OPS_BASE + index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Setsid = 1,
    JoinCgroup,
    JoinNetns,
    Unshare,
    Fork,
    Umask,
    Hostname,
    PivotRoot,
    UnshareUser,
    WaitMaps,
    SetIds,
    Log,
    Workdir,
    CloseFds,
    Seccomp,
    Exec,
}

const OPS_BASE: u32 = 1000;
const STEPS: [Step; 16] = [
    Step::Setsid,
    Step::JoinCgroup,
    Step::JoinNetns,
    Step::Unshare,
    Step::Fork,
    Step::Umask,
    Step::Hostname,
    Step::PivotRoot,
    Step::UnshareUser,
    Step::WaitMaps,
    Step::SetIds,
    Step::Log,
    Step::Workdir,
    Step::CloseFds,
    Step::Seccomp,
    Step::Exec,
];

fn describe(step: u32, plan: &Plan) -> String {
    if step >= OPS_BASE {
        return plan
            .ops
            .get((step - OPS_BASE) as usize)
            .map(Op::describe)
            .unwrap_or_else(|| format!("step {step}"));
    }
    STEPS
        .iter()
        .find(|s| **s as u32 == step)
        .map(|s| format!("{s:?}").to_lowercase())
        .unwrap_or_else(|| format!("step {step}"))
}

/// Messages on the report pipe: 12 bytes, kind + two values.
const MSG_PID: u32 = 1;
const MSG_USERNS: u32 = 2;
const MSG_ERROR: u32 = 3;

fn send(fd: &OwnedFd, kind: u32, a: u32, b: u32) {
    let mut buf = [0u8; 12];
    buf[..4].copy_from_slice(&kind.to_ne_bytes());
    buf[4..8].copy_from_slice(&a.to_ne_bytes());
    buf[8..].copy_from_slice(&b.to_ne_bytes());
    // A 12-byte pipe write is atomic; if the agent is gone there is no one
    // to tell.
    let _ = nix::unistd::write(fd, &buf);
}

/// In a child: report `step` failed with `errno` and exit.
fn fail(report: &OwnedFd, step: u32, errno: Errno) -> ! {
    send(report, MSG_ERROR, step, errno as u32);
    // SAFETY: _exit is always safe; it skips atexit handlers that belong to
    // the parent's copy of the process.
    unsafe { libc::_exit(1) }
}

trait OrFail<T> {
    fn or_fail(self, report: &OwnedFd, step: Step) -> T;
}

impl<T> OrFail<T> for nix::Result<T> {
    fn or_fail(self, report: &OwnedFd, step: Step) -> T {
        match self {
            Ok(v) => v,
            Err(e) => fail(report, step as u32, e),
        }
    }
}

/// Starts init; returns its host pid once it has exec'd the init command.
/// `cgroup_procs` are open `cgroup.procs` files of the capsule's cgroup.
pub fn launch(
    plan: &Plan,
    netns: &File,
    cgroup_procs: &[File],
    timeout: Duration,
) -> Result<Pid, LaunchError> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LaunchError::new("pipe", e.into()))?;
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LaunchError::new("pipe", e.into()))?;
    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = plan
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();

    // SAFETY: the child runs only `first_child`, which makes raw system
    // calls on data prepared above and never returns.
    match unsafe { nix::unistd::fork() }.map_err(|e| LaunchError::new("fork", e.into()))? {
        ForkResult::Child => {
            drop(report_r);
            drop(go_w);
            first_child(plan, netns, cgroup_procs, &report_w, &go_r, &argv, &envp)
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            drop(go_r);
            let deadline = Instant::now() + timeout;
            let mut report = File::from(report_r);
            let result = supervise(plan, child, &mut report, File::from(go_w), deadline);
            // The first child exits right after forking init (or failing).
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

/// Kills init (when its pid is known) and passes the error on.
fn kill_pid(init: Option<Pid>, e: LaunchError) -> LaunchError {
    if let Some(init) = init {
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
    }
    e
}

/// Reads reports until init's pid and "user namespace ready" have both come.
/// The first child reports the pid after forking init, while init reports
/// on its own: on a loaded host either can come first.
fn await_init(
    mut read: impl FnMut() -> Result<Option<(u32, u32, u32)>, LaunchError>,
    plan: &Plan,
    first: Pid,
) -> Result<Pid, LaunchError> {
    let mut init = None;
    let mut userns_ready = false;
    loop {
        if let (Some(pid), true) = (init, userns_ready) {
            return Ok(pid);
        }
        let msg = read().map_err(|e| kill_pid(init, e))?;
        match msg {
            Some((MSG_PID, pid, _)) if init.is_none() => init = Some(Pid::from_raw(pid as i32)),
            Some((MSG_USERNS, _, _)) if !userns_ready => userns_ready = true,
            other => {
                return Err(kill_pid(
                    init,
                    unexpected(plan, other, init.unwrap_or(first)),
                ));
            }
        }
    }
}

/// The agent's half: reads the children's reports and writes init's id maps.
fn supervise(
    plan: &Plan,
    first: Pid,
    report: &mut File,
    mut go: File,
    deadline: Instant,
) -> Result<Pid, LaunchError> {
    let read = |report: &mut File| read_msg(report, deadline);
    let init = await_init(|| read(report), plan, first)?;
    let kill_init = |e: LaunchError| kill_pid(Some(init), e);
    let map = format!("0 {} {}\n", plan.id_map.host_base, plan.id_map.count);
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{init}/{file}");
        std::fs::write(&path, &map)
            .map_err(|e| kill_init(LaunchError::new(format!("write {path}"), e)))?;
    }
    go.write_all(b"g")
        .map_err(|e| kill_init(LaunchError::new("signal init", e)))?;
    match read(report).map_err(kill_init)? {
        None => Ok(init),
        other => Err(kill_init(unexpected(plan, other, init))),
    }
}

fn unexpected(plan: &Plan, msg: Option<(u32, u32, u32)>, pid: Pid) -> LaunchError {
    match msg {
        Some((MSG_ERROR, step, errno)) => LaunchError::new(
            describe(step, plan),
            io::Error::from_raw_os_error(errno as i32),
        ),
        Some((kind, _, _)) => LaunchError::new(
            "read init's report",
            io::Error::other(format!("unexpected message {kind} from {pid}")),
        ),
        None => LaunchError::new(
            "read init's report",
            io::Error::other(format!("{pid} exited without reporting")),
        ),
    }
}

/// One 12-byte message, or `None` at end of file.
fn read_msg(report: &mut File, deadline: Instant) -> Result<Option<(u32, u32, u32)>, LaunchError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms =
        PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
    let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, ms) {
            Ok(0) => {
                return Err(LaunchError::new(
                    "wait for init",
                    io::Error::new(io::ErrorKind::TimedOut, "init did not report in time"),
                ));
            }
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(LaunchError::new("wait for init", e.into())),
        }
    }
    let mut buf = [0u8; 12];
    let mut got = 0;
    while got < buf.len() {
        match report.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(LaunchError::new(
                    "read init's report",
                    io::Error::new(io::ErrorKind::UnexpectedEof, "short message"),
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LaunchError::new("read init's report", e)),
        }
    }
    let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    Ok(Some((word(0), word(4), word(8))))
}

/// The short-lived first child: session, cgroup, namespaces, fork init.
fn first_child(
    plan: &Plan,
    netns: &File,
    cgroup_procs: &[File],
    report: &OwnedFd,
    go: &OwnedFd,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    nix::unistd::setsid().or_fail(report, Step::Setsid);
    for file in cgroup_procs {
        // "0" is the writing process; init and everything it starts inherit it.
        nix::unistd::write(file, b"0").or_fail(report, Step::JoinCgroup);
    }
    nix::sched::setns(netns, CloneFlags::CLONE_NEWNET).or_fail(report, Step::JoinNetns);
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .or_fail(report, Step::Unshare);
    // SAFETY: as in `launch`: the child only makes raw system calls.
    match unsafe { nix::unistd::fork() }.or_fail(report, Step::Fork) {
        ForkResult::Child => init(plan, report, go, argv, envp),
        ForkResult::Parent { child } => {
            send(report, MSG_PID, child.as_raw() as u32, 0);
            // SAFETY: see `fail`.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Pid 1 of the capsule: root file system, user namespace, exec.
fn init(
    plan: &Plan,
    report: &OwnedFd,
    go: &OwnedFd,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    nix::sys::stat::umask(Mode::empty());
    for (i, op) in plan.ops.iter().enumerate() {
        if let Err(e) = run_op(op) {
            fail(report, OPS_BASE + i as u32, e);
        }
    }
    nix::unistd::sethostname(plan.hostname.to_str().unwrap_or("capsule"))
        .or_fail(report, Step::Hostname);
    pivot(plan).or_fail(report, Step::PivotRoot);

    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).or_fail(report, Step::UnshareUser);
    send(report, MSG_USERNS, 0, 0);
    let mut byte = [0u8; 1];
    match nix::unistd::read(go, &mut byte) {
        Ok(1) => {}
        // The agent went away before writing the maps.
        Ok(_) => fail(report, Step::WaitMaps as u32, Errno::EPIPE),
        Err(e) => fail(report, Step::WaitMaps as u32, e),
    }
    set_ids().or_fail(report, Step::SetIds);
    redirect_stdio(plan).or_fail(report, Step::Log);
    nix::unistd::chdir(plan.workdir.as_c_str())
        .or_else(|_| nix::unistd::chdir(c"/"))
        .or_fail(report, Step::Workdir);
    // Everything but stdio and the report pipe (close-on-exec already)
    // closes at exec.
    // SAFETY: close_range takes plain integers.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } != 0
    {
        fail(report, Step::CloseFds as u32, Errno::last());
    }
    for filter in &plan.filters {
        if let Err(e) = super::seccomp::install(filter) {
            fail(report, Step::Seccomp as u32, e);
        }
    }
    // SAFETY: argv and envp are null-terminated arrays of pointers to
    // NUL-terminated strings that `plan` keeps alive.
    unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
    fail(report, Step::Exec as u32, Errno::last())
}

fn run_op(op: &Op) -> nix::Result<()> {
    match op {
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => nix::mount::mount(
            source.as_deref(),
            target.as_c_str(),
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        Op::MoveMount { fd, target } => {
            const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
            // SAFETY: move_mount with a descriptor the plan keeps open and
            // NUL-terminated paths.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    *fd,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                )
            };
            Errno::result(rc).map(drop)
        }
        Op::Mkdir { path, mode, owner } => {
            match nix::unistd::mkdir(path.as_c_str(), Mode::from_bits_truncate(*mode)) {
                Ok(()) => chown(path, *owner),
                Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Op::Touch { path, owner } => {
            match nix::fcntl::open(
                path.as_c_str(),
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_EXCL
                    | nix::fcntl::OFlag::O_WRONLY,
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(fd) => {
                    drop(fd);
                    chown(path, *owner)
                }
                Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Op::Mknod {
            path,
            major,
            minor,
            owner,
        } => {
            nix::sys::stat::mknod(
                path.as_c_str(),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(*major, *minor),
            )?;
            chown(path, *owner)
        }
        Op::Symlink { target, link } => {
            nix::unistd::symlinkat(target.as_c_str(), nix::fcntl::AT_FDCWD, link.as_c_str())
        }
        Op::Write { path, data } => {
            let fd = nix::fcntl::open(path.as_c_str(), nix::fcntl::OFlag::O_WRONLY, Mode::empty())?;
            nix::unistd::write(&fd, data.as_bytes()).map(drop)
        }
    }
}

fn chown(path: &CString, id: u32) -> nix::Result<()> {
    let id = Some(nix::unistd::Uid::from_raw(id));
    nix::unistd::chown(
        path.as_c_str(),
        id,
        id.map(|u| nix::unistd::Gid::from_raw(u.as_raw())),
    )
}

/// `pivot_root(new, new)` stacks the old root under the new one; detaching
/// it leaves only the capsule's tree.
fn pivot(plan: &Plan) -> nix::Result<()> {
    nix::unistd::chdir(plan.new_root.as_c_str())?;
    nix::unistd::pivot_root(c".", c".")?;
    nix::mount::umount2(c".", MntFlags::MNT_DETACH)?;
    nix::unistd::chdir(c"/")
}

/// Becomes root of the (now mapped) user namespace, with no supplementary
/// groups.
fn set_ids() -> nix::Result<()> {
    let root_g = nix::unistd::Gid::from_raw(0);
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g)?;
    nix::unistd::setgroups(&[])?;
    nix::unistd::setresuid(root_u, root_u, root_u)
}

/// stdin from /dev/null; stdout and stderr to the log inside the capsule
/// (its disk quota bounds it).
fn redirect_stdio(plan: &Plan) -> nix::Result<()> {
    use nix::fcntl::OFlag;
    let null = nix::fcntl::open(c"/dev/null", OFlag::O_RDONLY, Mode::empty())?;
    let log = nix::fcntl::open(
        plan.log.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND,
        Mode::from_bits_truncate(0o600),
    )?;
    // SAFETY: dup2 onto the standard descriptors of this single-threaded child.
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) < 0
            || libc::dup2(log.as_raw_fd(), 1) < 0
            || libc::dup2(log.as_raw_fd(), 2) < 0
        {
            return Err(Errno::last());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;

    fn plan() -> Plan {
        let c = |s: &str| CString::new(s).unwrap();
        Plan {
            ops: Vec::new(),
            new_root: c("/"),
            hostname: c("h"),
            workdir: c("/"),
            log: c("/log"),
            argv: vec![c("/init")],
            envp: Vec::new(),
            filters: Vec::new(),
            id_map: Default::default(),
        }
    }

    /// A pid above any pid_max: killing it on an error path hits no one.
    const NO_SUCH_PID: u32 = 0x7fff_fff0;

    fn run(messages: Vec<Option<(u32, u32, u32)>>) -> Result<Pid, LaunchError> {
        let mut messages = messages.into_iter();
        await_init(|| Ok(messages.next().flatten()), &plan(), Pid::from_raw(1))
    }

    #[test]
    fn pid_and_user_namespace_reports_come_in_either_order() {
        let pid = Pid::from_raw(NO_SUCH_PID as i32);
        let first = run(vec![
            Some((MSG_PID, NO_SUCH_PID, 0)),
            Some((MSG_USERNS, 0, 0)),
        ]);
        assert_eq!(first.unwrap(), pid);
        let second = run(vec![
            Some((MSG_USERNS, 0, 0)),
            Some((MSG_PID, NO_SUCH_PID, 0)),
        ]);
        assert_eq!(second.unwrap(), pid);
    }

    #[test]
    fn duplicates_errors_and_silence_are_failures() {
        let pid = Some((MSG_PID, NO_SUCH_PID, 0));
        assert!(run(vec![pid, pid]).is_err());
        assert!(run(vec![Some((MSG_USERNS, 0, 0)), Some((MSG_USERNS, 0, 0))]).is_err());
        assert!(run(vec![pid, None]).is_err());
        let err = run(vec![Some((
            MSG_ERROR,
            Step::PivotRoot as u32,
            libc::EPERM as u32,
        ))])
        .unwrap_err();
        assert_eq!(err.step, "pivotroot");
        assert_eq!(err.source.raw_os_error(), Some(libc::EPERM));
    }
}
