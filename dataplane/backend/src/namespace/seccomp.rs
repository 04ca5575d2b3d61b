//! The seccomp filter every capsule process runs under.
//!
//! It is installed by capsule init, root of its own user namespace, which
//! the kernel lets load a filter without no-new-privileges ([`install`]):
//! setuid programs such as `sudo` then work inside the capsule, and can
//! only ever reach the capsule's own root (which envd's API grants anyway),
//! still under the filter, which no process can shed.
//!
//! Capsules run as root of their own user namespace; the namespaces and
//! mounts they live in are owned by the host, so most host-affecting calls
//! already fail with EPERM. The filter is a second wall that also shuts
//! kernel attack surface a capsule has no need for. Denied (EPERM):
//!
//! - kernel and module loading: `kexec_load`, `kexec_file_load`,
//!   `init_module`, `finit_module`, `delete_module`
//! - new namespaces and joining others: `unshare`, `setns`, and `clone` with
//!   any `CLONE_NEW*` flag (`clone3`, whose flags seccomp cannot read, fails
//!   with ENOSYS so C libraries fall back to `clone`)
//! - mounting: `mount`, `umount2`, `pivot_root`, `chroot`, and the new mount
//!   API (`open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`,
//!   `fspick`, `mount_setattr`)
//! - attack surface: `bpf`, `perf_event_open`, `userfaultfd`, `keyctl`,
//!   `add_key`, `request_key`, `io_uring_setup`, `io_uring_enter`,
//!   `io_uring_register`, `open_by_handle_at`, `name_to_handle_at`,
//!   `lookup_dcookie`, `kcmp`, `process_madvise`
//! - host state: `reboot`, `swapon`, `swapoff`, `acct`, `quotactl`,
//!   `syslog`, `settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex`,
//!   `iopl`, `ioperm`, `vhangup`, `personality` (the kernel's personality
//!   flags can weaken ASLR)
//!
//! `ptrace` stays allowed (debuggers and strace inside a capsule work; the
//! user namespace keeps them off host processes).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Installs `filter` on the calling thread without setting
/// no-new-privileges. The caller must hold `CAP_SYS_ADMIN` in its user
/// namespace (capsule init does). Async-signal-safe: one raw syscall, so
/// it may run in a freshly forked child.
pub fn install(filter: &BpfProgram) -> Result<(), nix::errno::Errno> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| nix::errno::Errno::E2BIG)?,
        // seccompiler's `sock_filter` is the kernel's layout (repr(C):
        // code, jt, jf, k), as libc's is.
        filter: filter.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, alive for the call; the kernel
    // copies the program and never writes through the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last())
    }
}

/// Syscalls denied outright (see the module docs for why).
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("kcmp", libc::SYS_kcmp),
    ("process_madvise", libc::SYS_process_madvise),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    ("vhangup", libc::SYS_vhangup),
    ("personality", libc::SYS_personality),
];

/// `clone` flags that make new namespaces.
const CLONE_NEW_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// Errors building the filter (only on an unsupported architecture or a
/// bug in the rule set).
#[derive(Debug, thiserror::Error)]
#[error("building the capsule seccomp filter: {0}")]
pub struct FilterError(String);

/// The filters to install, in order: the EPERM deny list, then `clone3` →
/// ENOSYS. Seccomp evaluates every installed filter and the strictest
/// answer wins, so two filters give two different errnos.
pub fn capsule_filters() -> Result<Vec<BpfProgram>, FilterError> {
    let arch =
        TargetArch::try_from(std::env::consts::ARCH).map_err(|e| FilterError(e.to_string()))?;
    let err = |e: seccompiler::BackendError| FilterError(e.to_string());

    let mut deny: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    let clone_rules = CLONE_NEW_FLAGS
        .iter()
        .map(|flag| {
            let flag = *flag as u64;
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .map_err(err)?,
            ])
            .map_err(err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    deny.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        deny,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(err)?;

    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(err)?;

    [deny, clone3]
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(|e| FilterError(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        let filters = capsule_filters().expect("filters");
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty()));
    }

    /// Installs the filters in a forked child and checks a denied call
    /// fails with EPERM while an allowed one still works.
    #[test]
    fn denied_calls_fail_in_a_child() {
        let filters = capsule_filters().expect("filters");
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let mut code = 0;
                for f in &filters {
                    if seccompiler::apply_filter(f).is_err() {
                        code |= 1;
                    }
                }
                // SAFETY: plain syscalls with valid (null) arguments.
                unsafe {
                    if libc::unshare(libc::CLONE_NEWUSER) != -1
                        || *libc::__errno_location() != libc::EPERM
                    {
                        code |= 2;
                    }
                    if libc::syscall(libc::SYS_bpf, 0, 0, 0) != -1
                        || *libc::__errno_location() != libc::EPERM
                    {
                        code |= 4;
                    }
                    if libc::syscall(libc::SYS_clone3, 0, 0) != -1
                        || *libc::__errno_location() != libc::ENOSYS
                    {
                        code |= 8;
                    }
                    if libc::getpid() <= 0 {
                        code |= 16;
                    }
                    libc::_exit(code);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("wait");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
